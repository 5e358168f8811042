/** Kernel VXLAN devices and their forwarding database, through iproute2's `ip` and `bridge`. */
import { run } from './exec';
import { fdbBatch, fdbEntries, type FdbEntry } from './fdb';
import { getLink, type LinkInfo } from './link';
import { dropShared, LINKS } from './shared-reads';

export type { FdbEntry };

export interface VxlanSpec {
  name: string;
  vni: number;
  port: number;
  /** Source address of the encapsulated packets. */
  local: string;
  /** Underlay device, when known. */
  dev?: string;
}

/** The operations the fast data path needs; a fake stands in for it in unit tests. */
export interface VxlanSys {
  getLink(name: string): Promise<LinkInfo | undefined>;
  create(spec: VxlanSpec): Promise<void>;
  remove(name: string): Promise<void>;
  /** MTU, master bridge, up. */
  attach(name: string, mtu: number, bridge: string): Promise<void>;
  /** The device's own entries with a remote (see fdb.ts). */
  listFdb(name: string): Promise<FdbEntry[]>;
  /** Runs `bridge -batch` lines (fdb append|replace|del ...). */
  applyFdb(lines: readonly string[]): Promise<void>;
}

export const vxlanSys: VxlanSys = {
  getLink: (name) => getLink(name),
  async create(s) {
    const args = ['link', 'add', s.name, 'type', 'vxlan', 'id', String(s.vni), 'dstport', String(s.port), 'local', s.local];
    if (s.dev) args.push('dev', s.dev);
    await run('ip', args);
    dropShared(LINKS);
  },
  async remove(name) {
    await run('ip', ['link', 'del', name]);
    dropShared(LINKS);
  },
  async attach(name, mtu, bridge) {
    await run('ip', ['link', 'set', name, 'mtu', String(mtu), 'master', bridge, 'up']);
    // an isolated port forwards to the bridge's other ports but not to another isolated one:
    // frames from one overlay never go out another, so no host is a transit between them
    await run('ip', ['link', 'set', name, 'type', 'bridge_slave', 'isolated', 'on']);
    dropShared(LINKS);
  },
  listFdb: (name) => fdbEntries(name),
  applyFdb: (lines) => fdbBatch(lines),
};
