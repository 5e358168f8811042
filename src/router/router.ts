/**
 * The router daemon's composition root: state dir, IPAM, host network, API, and the release
 * spool. Stopping it leaves the bridge, veths and rules in place, so pods keep working.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../common/errors';
import { formatCidr, parseCidr, containsCidr, type Cidr } from '../common/ip';
import { createLogger, type Logger } from '../common/log';
import { readSpool, SPOOL_SUBDIR, stateLinkFor } from '../common/spool';
import { derivePodMtu, HostNetwork } from '../datapath/host';
import { Allocator, type AllocatorState } from '../ipam/allocator';
import { JsonStore } from '../ipam/store';
import { derivedMac, loadPeerName } from '../mesh/peername';
import { detectBackend, Iptables } from '../sys/iptables';
import { ApiServer } from './http';
import { IpamApi } from './ipam-api';
import type { RouterOptions } from './options';
import type { Report } from './report';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import { hostname } from 'node:os';
import { parseAddrWithPrefix } from '../common/ip';

export const VERSION = '0.1.0';

const addrNum = (a: string) => parseAddrWithPrefix(a)?.addr ?? 0;

/** What ipam.json holds. */
interface IpamFile extends AllocatorState {
  version: 1;
  range: string;
}

const SPOOL_INTERVAL_MS = 5000;

function cidrOption(field: string, v: string): Cidr {
  const c = parseCidr(v);
  if (!c) throw new ConfigError(field, `"${v}" is not a network in CIDR notation (e.g. 10.32.0.0/12)`);
  return c;
}

export class Router {
  readonly log: Logger;
  peerName = '';
  allocator!: Allocator;
  host!: HostNetwork;
  mtu = 0;
  private api!: ApiServer;
  private store!: JsonStore<IpamFile>;
  private spoolTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;

  constructor(readonly opts: RouterOptions) {
    this.log = createLogger({ name: 'weft-router', level: opts.logLevel, file: opts.logFile });
  }

  async start(): Promise<void> {
    const o = this.opts;
    const range = cidrOption('--ipalloc-range', o.ipallocRange);
    const defaultSubnet = o.ipallocDefaultSubnet ? cidrOption('--ipalloc-default-subnet', o.ipallocDefaultSubnet) : range;
    if (!containsCidr(range, defaultSubnet)) throw new ConfigError('--ipalloc-default-subnet', `must lie inside --ipalloc-range ${o.ipallocRange}`);
    await fs.mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    this.peerName = await loadPeerName(o.stateDir, o.name);

    this.allocator = new Allocator(range, defaultSubnet, { owned: () => [range] });
    const opened = await JsonStore.open<IpamFile>(o.stateDir, 'ipam.json', () => ({
      version: 1,
      range: formatCidr(range),
      ...this.allocator.snapshot(),
    }));
    this.store = opened.store;
    if (opened.data) {
      if (opened.data.range !== formatCidr(range)) {
        throw new ConfigError(
          '--ipalloc-range',
          `${o.ipallocRange} differs from ${opened.data.range} recorded in ${this.store.path}; pods still hold addresses from it. Start with --ipalloc-range ${opened.data.range}, or remove the file once no pod uses it`,
        );
      }
      this.allocator.load(opened.data);
    }

    const derived = await derivePodMtu(o.advertiseAddr);
    this.mtu = o.mtu ?? derived.mtu;
    this.host = new HostNetwork({
      bridge: o.bridge,
      bridgeMac: derivedMac(`${this.peerName}/${o.bridge}`),
      mtu: this.mtu,
      range,
      masquerade: o.masquerade,
      iptables: new Iptables(await detectBackend()),
      log: this.log,
    });
    await this.host.setup();

    await this.drainSpool();
    this.api = new ApiServer(this.log);
    new IpamApi({ allocator: this.allocator, store: this.store as JsonStore<unknown>, host: this.host, mtu: () => this.mtu, log: this.log }).register(this.api);
    this.api.on('GET', '/v1/report', () => this.report());
    await this.api.listen(o.socket);
    await this.publishStateDir();
    this.spoolTimer = setInterval(() => void this.drainSpool(), SPOOL_INTERVAL_MS);
    this.spoolTimer.unref();
    this.log.info(
      { peer: this.peerName, socket: o.socket, range: formatCidr(range), mtu: this.mtu, underlay: derived.underlay, allocations: this.allocator.list().length },
      'router started',
    );
  }

  /** Tells the plugin where to spool releases while this router is down: `<socket>.state` -> state dir. */
  private async publishStateDir(): Promise<void> {
    const link = stateLinkFor(this.opts.socket);
    const tmp = `${link}.${process.pid}`;
    await fs.rm(tmp, { force: true });
    await fs.symlink(await fs.realpath(this.opts.stateDir), tmp);
    await fs.rename(tmp, link);
  }

  /** Applies releases the plugin recorded while this router was unreachable. */
  drainSpool(): Promise<void> {
    this.draining ??= (async () => {
      try {
        const dir = join(this.opts.stateDir, SPOOL_SUBDIR);
        const items = await readSpool(dir);
        if (items.length === 0) return;
        const done: string[] = [];
        for (const it of items) {
          if (!it.rec) {
            this.log.warn({ path: it.path, err: it.error }, 'unreadable release record removed');
            done.push(it.path);
            continue;
          }
          const cur = this.allocator.get(it.rec);
          // a record only releases what existed when it was written, never a newer ADD of the same key
          if (cur && cur.createdAt <= it.rec.recordedAt) {
            this.allocator.release(it.rec);
            this.log.info({ containerId: it.rec.containerId, ifname: it.rec.ifname, address: cur.address }, 'released from spool');
          }
          done.push(it.path);
        }
        await this.store.commit();
        for (const p of done) await fs.rm(p, { force: true });
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'applying the release spool failed');
      } finally {
        this.draining = undefined;
      }
    })();
    return this.draining;
  }

  report(): Report {
    const all = this.allocator.list();
    const gws = all.filter((a) => a.network === GATEWAY_NETWORK);
    const pods = all.filter((a) => a.network !== GATEWAY_NETWORK).sort((a, b) => addrNum(a.address) - addrNum(b.address));
    const free = this.allocator.freeCount();
    return {
      version: VERSION,
      router: {
        name: this.peerName,
        nickname: this.opts.nickname ?? hostname(),
        bridge: this.opts.bridge,
        bridgeMac: this.host.o.bridgeMac,
        mtu: this.mtu,
        socket: this.opts.socket,
        encryption: false,
        port: this.opts.port,
      },
      mesh: { targets: [], connections: [], peers: [{ name: this.peerName, nickname: this.opts.nickname ?? hostname(), uid: '', connections: [], reachable: true }] },
      ipam: {
        status: free > 0 ? 'ready' : 'no space',
        range: formatCidr(this.allocator.range),
        defaultSubnet: formatCidr(this.allocator.defaultSubnet),
        free,
        owners: [],
        gateways: gws.length,
        attachments: [...gws, ...pods],
      },
    };
  }

  async stop(): Promise<void> {
    if (this.spoolTimer) clearInterval(this.spoolTimer);
    await this.api?.close();
    await fs.rm(this.opts.socket, { force: true });
    this.log.info({ peer: this.peerName }, 'router stopped');
    this.log.flush();
  }
}
