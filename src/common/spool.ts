/**
 * Durable release records: when DEL cannot reach the router, the plugin leaves a record here
 * and succeeds; the router applies every record when it (re)starts and while it runs.
 *
 * Where: `<state-dir>/pending-release/`. The router publishes its state dir as a symlink
 * `<socket>.state`, so the plugin finds it from the socket path it already knows; with no link
 * (the router never ran since boot) the default state dir is used.
 */
import { promises as fs } from 'node:fs';
import { nodeCrypto } from './lazy';
import { join } from 'node:path';
import { writeFileAtomic } from './fsutil';
import { attachmentId, type AttachmentKey } from './api';
import { isoTime } from './time';

export const DEFAULT_STATE_DIR = '/var/lib/weft';
export const SPOOL_SUBDIR = 'pending-release';

export function stateLinkFor(socket: string): string {
  return `${socket}.state`;
}

/** The spool directory the router serving `socket` reads. */
export async function spoolDirFor(socket: string): Promise<string> {
  let stateDir = DEFAULT_STATE_DIR;
  try {
    stateDir = await fs.readlink(stateLinkFor(socket));
  } catch {
    /* no link: default */
  }
  return join(stateDir, SPOOL_SUBDIR);
}

export interface PendingRelease extends AttachmentKey {
  recordedAt: string;
}

/** Records a release durably (fsynced before this resolves). */
export async function spoolRelease(dir: string, key: AttachmentKey): Promise<string> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const name = nodeCrypto().createHash('sha1').update(attachmentId(key)).digest('hex').slice(0, 20) + '.json';
  const rec: PendingRelease = { network: key.network, containerId: key.containerId, ifname: key.ifname, recordedAt: isoTime() };
  const path = join(dir, name);
  await writeFileAtomic(path, JSON.stringify(rec));
  return path;
}

/** Lists pending records with their file paths; unreadable files are skipped (and reported). */
export async function readSpool(dir: string): Promise<{ path: string; rec?: PendingRelease; error?: string }[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: { path: string; rec?: PendingRelease; error?: string }[] = [];
  for (const n of names) {
    if (!n.endsWith('.json') || n.startsWith('.')) continue;
    const path = join(dir, n);
    try {
      out.push({ path, rec: JSON.parse(await fs.readFile(path, 'utf8')) as PendingRelease });
    } catch (e) {
      out.push({ path, error: (e as Error).message });
    }
  }
  return out;
}
