/**
 * A container image built by hand, with no registry: an OCI image layout holding one layer
 * (busybox-static and applet symlinks), tarred so `ctr image import` and `podman load` take it.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../../helpers/netns';

export const BUSYBOX = '/bin/busybox';

/** Applets the tests use inside containers. */
const APPLETS = ['sh', 'ip', 'ping', 'sleep', 'cat', 'true', 'false', 'echo', 'ls', 'hostname', 'ifconfig', 'route', 'grep', 'awk', 'sed', 'mkdir', 'ps', 'kill', 'wget', 'nc', 'env', 'test', 'timeout', 'seq'];

export interface BuiltImage {
  /** The image reference recorded in the index (`io.containerd.image.name`). */
  ref: string;
  /** The OCI layout tarred. */
  tar: string;
  /** Digest of the manifest, `sha256:...`. */
  manifestDigest: string;
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/**
 * Writes an image whose default command is `cmd` into `dir` and returns it. `ref` must be a
 * full reference such as `localhost/weft-test/busybox:1`.
 */
export function buildBusyboxImage(dir: string, ref: string, cmd: string[] = ['sleep', 'infinity']): BuiltImage {
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} missing: install busybox-static`);
  const rootfs = join(dir, 'rootfs');
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'run', 'root']) mkdirSync(join(rootfs, d), { recursive: true });
  mkdirSync(blobs, { recursive: true });
  copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(rootfs, 'bin', a));
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\n');

  // one uncompressed layer: its digest is also its diff ID
  const layerPath = join(dir, 'layer.tar');
  sh('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-C', rootfs, '-cf', layerPath, '.']);
  const layer = readFileSync(layerPath);
  const layerHex = sha256(layer);
  writeFileSync(join(blobs, layerHex), layer);

  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: cmd, WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerHex}`] },
      history: [{ created_by: 'weft test/runtime/lib/image.ts' }],
    }),
  );
  const configHex = sha256(config);
  writeFileSync(join(blobs, configHex), config);

  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configHex}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerHex}`, size: layer.length }],
    }),
  );
  const manifestHex = sha256(manifest);
  writeFileSync(join(blobs, manifestHex), manifest);

  const tag = ref.slice(ref.lastIndexOf(':') + 1);
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestHex}`,
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const tar = join(dir, 'image.tar');
  sh('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', layout, '-cf', tar, 'oci-layout', 'index.json', 'blobs']);
  if (statSync(tar).size < layer.length) throw new Error('image tar is smaller than its layer');
  return { ref, tar, manifestDigest: `sha256:${manifestHex}` };
}
