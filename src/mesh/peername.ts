/**
 * Peer names: 48 bits written like a MAC address, chosen once and kept in the state dir so a
 * router keeps its identity (and the IPAM space it owns) across restarts.
 */
import { randomBytes, createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { isMac, randomMac } from '../common/ip';
import { readIfExists, writeFileAtomic } from '../common/fsutil';
import { ConfigError } from '../common/errors';

export async function loadPeerName(stateDir: string, wanted?: string): Promise<string> {
  if (wanted !== undefined && !isMac(wanted)) throw new ConfigError('--name', `"${wanted}" is not a peer name (six hex pairs, like 42:8e:e8:c4:52:1b)`);
  const path = join(stateDir, 'peer-name');
  const stored = (await readIfExists(path))?.trim();
  const name = (wanted ?? stored ?? randomMac(randomBytes(6))).toLowerCase();
  if (name !== stored) {
    await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, name + '\n');
  }
  return name;
}

/** A stable, locally administered MAC derived from a seed (peer name and device). */
export function derivedMac(seed: string): string {
  return randomMac(createHash('sha256').update(seed).digest());
}
