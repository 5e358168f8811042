/**
 * Prometheus metrics and health endpoints on --metrics-addr (default 127.0.0.1:6782), with
 * prom-client. /healthz: the process answers. /readyz: bridge up, data path and rules in
 * place, IPAM able to allocate; 503 with the reasons otherwise.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../common/log';
import { processesStarted } from '../sys/spawn';
import type { PeerTraffic, SleeveCounters } from '../datapath/sleeve/relay';
import type { StreamCounters } from '../datapath/sleeve/stream';

/** Answers whether the router is ready; a list of what is missing when not. */
export type ReadinessCheck = () => Promise<string[]>;

/** Maps API operations to the plugin verbs they serve: the CNI API's (the router does the netlink work) and the IPAM API's (a plugin doing it itself). */
const VERB_OF: Record<string, string> = { allocate: 'ADD', release: 'DEL', lookup: 'CHECK', gc: 'GC', status: 'STATUS', add: 'ADD', del: 'DEL', check: 'CHECK' };

export interface MetricSources {
  connections(): { state: string; encrypted: boolean }[];
  peers(): number;
  ips(): { used: number; available: number };
  unreachableShare(): number;
  pendingAllocations(): number;
}

export class Metrics {
  readonly registry = new Registry();
  private server: Server | undefined;
  private readonly requests: Counter<'verb' | 'result'>;
  private readonly allocLatency: Histogram;
  private readonly gossipMessages: Counter<'direction' | 'kind'>;
  private readonly gossipBytes: Counter<'direction'>;
  private policyEnforcement: Histogram | undefined;

  constructor() {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'weft_process_' });
    this.requests = new Counter({ name: 'weft_plugin_requests_total', help: 'Plugin requests by CNI verb and result', labelNames: ['verb', 'result'], registers: [r] });
    this.allocLatency = new Histogram({
      name: 'weft_allocation_duration_seconds',
      help: 'Time to answer an address allocation (an ADD: the address, and its links when the router makes them)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    this.gossipMessages = new Counter({ name: 'weft_gossip_messages_total', help: 'Mesh messages by direction and kind (gossip:CHANNEL, gossip:CHANNEL:answer, digest, msg, hb, ...)', labelNames: ['direction', 'kind'], registers: [r] });
    this.gossipBytes = new Counter({ name: 'weft_gossip_bytes_total', help: 'Mesh bytes by direction', labelNames: ['direction'], registers: [r] });
    new Counter({
      name: 'weft_processes_started_total',
      help: 'Processes the router started, by command',
      labelNames: ['command'],
      registers: [r],
      collect() {
        this.reset();
        for (const [command, n] of Object.entries(processesStarted())) this.inc({ command }, n);
      },
    });
  }

  /** The gauges, read from the parts at each scrape. */
  gauges(src: MetricSources): void {
    const r = this.registry;
    new Gauge({
      name: 'weft_connections',
      help: 'Mesh connections by state and encryption',
      labelNames: ['state', 'encryption'],
      registers: [r],
      collect() {
        this.reset();
        for (const c of src.connections()) this.inc({ state: c.state, encryption: c.encrypted ? 'yes' : 'no' });
      },
    });
    new Gauge({ name: 'weft_peers', help: 'Peers known, this router included', registers: [r], collect() { this.set(src.peers()); } });
    new Gauge({ name: 'weft_ips', help: 'Addresses allocated on this host', registers: [r], collect() { this.set(src.ips().used); } });
    new Gauge({ name: 'weft_max_ips', help: 'Addresses this host can still hand out from the space it owns', registers: [r], collect() { this.set(src.ips().available); } });
    new Gauge({ name: 'weft_ipam_unreachable_share', help: 'Share of the allocation range owned by unreachable peers (0..1)', registers: [r], collect() { this.set(src.unreachableShare()); } });
    new Gauge({ name: 'weft_ipam_pending_allocates', help: 'Allocations waiting for address space', registers: [r], collect() { this.set(src.pendingAllocations()); } });
  }

  /**
   * NetworkPolicy (Kubernetes mode): `weft_policy_drops_total{direction}` from the kernel's
   * counters, as deltas (`drops` gives the increase since its last call), and
   * `weft_policy_enforcement_seconds`, fed by `policyEnforced`.
   */
  policy(drops: () => Promise<{ ingress: number; egress: number }>): void {
    const r = this.registry;
    new Counter({
      name: 'weft_policy_drops_total',
      help: 'Packets NetworkPolicy dropped, by direction (ingress at the destination pod, egress at the source)',
      labelNames: ['direction'],
      registers: [r],
      async collect() {
        const d = await drops().catch(() => ({ ingress: 0, egress: 0 }));
        this.inc({ direction: 'ingress' }, d.ingress);
        this.inc({ direction: 'egress' }, d.egress);
      },
    });
    this.policyEnforcement = new Histogram({
      name: 'weft_policy_enforcement_seconds',
      help: 'Time from a change seen on the Kubernetes API (Pod, Namespace, NetworkPolicy) to its enforcement in the kernel',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [r],
    });
  }

  /**
   * The sleeve (issue 8), read at each scrape: `weft_datapath_bytes_total` and
   * `weft_datapath_datagrams_total` by path, peer (the neighbour on the wire) and direction;
   * `weft_sleeve_drops_total` by reason (`auth`: decryption failures, `replay`: replays dropped);
   * `weft_sleeve_stream_datagrams_total` and `weft_sleeve_stream_closed_total` for the TCP carrier.
   */
  sleeve(counters: () => SleeveCounters | undefined): void {
    const r = this.registry;
    const last = new Map<string, number>();
    const delta = (key: string, now: number) => {
      const d = now - (last.get(key) ?? 0);
      last.set(key, now);
      return Math.max(0, d);
    };
    const perPeer = (name: string, help: string, pick: (t: PeerTraffic, dir: 'in' | 'out') => number) =>
      new Counter({
        name,
        help,
        labelNames: ['path', 'peer', 'direction'],
        registers: [r],
        collect() {
          for (const [peer, t] of counters()?.peers ?? []) {
            for (const dir of ['in', 'out'] as const) this.inc({ path: 'sleeve', peer, direction: dir }, delta(`${name}/${peer}/${dir}`, pick(t, dir)));
          }
        },
      });
    perPeer('weft_datapath_bytes_total', 'Bytes on the wire by data path, neighbour peer and direction', (t, d) => (d === 'in' ? t.rxBytes : t.txBytes));
    perPeer('weft_datapath_datagrams_total', 'Datagrams on the wire by data path, neighbour peer and direction', (t, d) => (d === 'in' ? t.rxDatagrams : t.txDatagrams));
    new Counter({
      name: 'weft_sleeve_drops_total',
      help: 'Sleeve datagrams dropped by reason (auth: decryption failures; replay: replays dropped)',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        for (const [reason, n] of Object.entries(counters()?.dropped ?? {})) this.inc({ reason }, delta(`drop/${reason}`, n));
      },
    });
    const fromStream = (name: string, help: string, label: string, pick: Record<string, (s: StreamCounters) => number>) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers: [r],
        collect() {
          const s = counters()?.stream;
          if (!s) return;
          for (const [value, n] of Object.entries(pick)) this.inc({ [label]: value }, delta(`${name}/${value}`, n(s)));
        },
      });
    fromStream('weft_sleeve_stream_datagrams_total', 'Sleeve datagrams carried on TCP streams (the rest of weft_datapath_datagrams_total went over UDP), by direction', 'direction', {
      out: (s) => s.txFrames,
      in: (s) => s.rxFrames,
    });
    fromStream(
      'weft_sleeve_stream_closed_total',
      'Sleeve TCP streams closed by this router (stalled: a datagram unacknowledged for a second, its successors went over UDP; malformed: bytes that were not sleeve datagrams)',
      'reason',
      { stalled: (s) => s.stalled, malformed: (s) => s.malformed },
    );
  }

  policyEnforced(seconds: number): void {
    this.policyEnforcement?.observe(seconds);
  }

  /** Records one plugin request served by the API. */
  request(op: string, result: 'ok' | 'error', seconds: number): void {
    const verb = VERB_OF[op];
    if (!verb) return;
    this.requests.inc({ verb, result });
    if (op === 'allocate' || op === 'add') this.allocLatency.observe(seconds);
  }

  traffic(dir: 'in' | 'out', kind: string, bytes: number): void {
    if (bytes) this.gossipBytes.inc({ direction: dir }, bytes);
    if (kind !== 'bytes') this.gossipMessages.inc({ direction: dir, kind });
  }

  /** Listens on HOST:PORT for /metrics, /healthz and /readyz. */
  async listen(addr: string, ready: ReadinessCheck, log: Logger): Promise<void> {
    const m = /^(.*):(\d+)$/.exec(addr);
    if (!m) throw new Error(`--metrics-addr ${addr} is not HOST:PORT`);
    const server = createServer((req, res) => {
      res.sendDate = false; // see src/router/http.ts
      void (async () => {
        try {
          if (req.url === '/metrics') {
            const body = await this.registry.metrics();
            res.writeHead(200, { 'content-type': this.registry.contentType });
            res.end(body);
          } else if (req.url === '/healthz') {
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok\n');
          } else if (req.url === '/readyz') {
            const missing = await ready();
            res.writeHead(missing.length ? 503 : 200, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ ready: missing.length === 0, missing }) + '\n');
          } else {
            res.writeHead(404);
            res.end();
          }
        } catch (e) {
          log.error({ err: (e as Error).message, url: req.url }, 'metrics endpoint failed');
          res.writeHead(500);
          res.end();
        }
      })();
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(m[2]), m[1]!.replace(/^\[|\]$/g, ''), () => resolve());
    });
  }

  async close(): Promise<void> {
    const s = this.server;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
