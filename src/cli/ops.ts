/**
 * The operator's commands: status, ps, report, connect, forget, rmpeer, expose, hide. Each
 * asks the router over its socket; a router that is not running is a clear error, exit 1.
 */
import type { RouterClient } from '../common/client';
import { ConfigError } from '../common/errors';
import type { Report } from '../router/report';
import type { PolicyReport } from '../router/policy';
import { PROTOCOL, PROTOCOL_MAX, PROTOCOL_MIN } from '../mesh/protocol';
import { parse, type CliIo } from '../common/command';

export interface Op {
  usage: string;
  run(args: string[], client: RouterClient, io: CliIo): Promise<number>;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function row(k: string, v: string | number): string {
  return `${k.padStart(15)}: ${v}\n`;
}

/** `weft status` in the layout of Weave's status. */
export function formatStatus(r: Report): string {
  const conns = r.mesh.connections;
  const byState = new Map<string, number>();
  for (const c of conns) byState.set(c.state, (byState.get(c.state) ?? 0) + 1);
  const breakdown = [...byState.entries()].map(([s, n]) => `${n} ${s}`).join(', ');
  const edges = r.mesh.peers.reduce((n, p) => n + p.connections.length, 0);
  let out = '\n' + row('Version', r.version) + '\n';
  out += row('Service', 'router');
  out += row('Protocol', `${PROTOCOL} ${PROTOCOL_MIN}..${PROTOCOL_MAX}`);
  out += row('Name', `${r.router.name}(${r.router.nickname})`);
  out += row('Encryption', r.router.encryption ? 'enabled' : 'disabled');
  out += row('PeerDiscovery', `enabled (${r.router.peerSources.join('; ')})`);
  const u = r.router.underlay;
  out += row('DataPath', u ? `${u.iface} ${u.ip} (${u.how}), pod MTU ${r.router.mtu}` : `none: ${r.router.dataPath}`);
  out += row('Targets', r.mesh.targets.length);
  out += row('Connections', `${conns.length}${conns.length ? ` (${breakdown})` : ''}`);
  out += row('Peers', `${r.mesh.peers.length} (with ${plural(edges, 'established connection')})`);
  out += row('TrustedSubnets', r.router.trustedSubnets?.length ? r.router.trustedSubnets.join(',') : 'none');
  const k = r.kubernetes;
  if (k) {
    out += '\n' + row('Service', 'kubernetes');
    out += row('Node', k.nodeName);
    out += row('Peers', k.source);
    const l = k.lastReclaim;
    out += row('LastReclaim', l ? `${l.peer} (node ${l.node}, ${l.addresses} addresses) by ${l.by}${l.byNode ? ` (node ${l.byNode})` : ''} at ${l.at}` : 'none');
    if (k.claims) out += row('Reclaiming', `${k.claims} in progress`);
  }
  out += '\n' + row('Service', 'ipam');
  out += row('Status', r.ipam.status + (r.ipam.reason ? ` (${r.ipam.reason})` : ''));
  out += row('Range', r.ipam.range);
  out += row('DefaultSubnet', r.ipam.defaultSubnet);
  return out + '\n';
}

export function formatConnections(r: Report): string {
  return r.mesh.connections
    .map((c) => {
      const arrow = c.direction === 'outbound' ? '->' : '<-';
      const who = c.peer ? `${c.peer}(${c.nickname ?? '?'})` : '';
      const path = c.datapath && c.via ? `${c.datapath} via ${c.via}` : c.datapath;
      const dp = path ? ` ${path}${c.healthy === false ? ' (probe failed)' : c.healthy ? ' (probe ok)' : ''}` : '';
      const enc = c.encrypted ? ' encrypted' : ' unencrypted';
      const info = c.info ? ` ${c.info}` : '';
      return `${arrow} ${c.address.padEnd(21)} ${c.state.padEnd(11)}${c.state === 'established' || c.datapath ? enc + dp : ''} ${who} mtu=${c.mtu}${info}\n`;
    })
    .join('');
}

export function formatPeers(r: Report): string {
  const nick = new Map(r.mesh.peers.map((p) => [p.name, p.nickname]));
  return r.mesh.peers
    .map((p) => `${p.name}(${p.nickname}) ${p.reachable ? 'reachable' : 'unreachable'} connections: ${p.connections.map((c) => `${c}(${nick.get(c) ?? '?'})`).join(' ') || 'none'}\n`)
    .join('');
}

export function formatIpam(r: Report): string {
  return r.ipam.owners
    .sort((a, b) => b.size - a.size)
    .map((o) => {
      const flag = o.reachable ? '' : ' - unreachable!';
      const free = o.free !== undefined ? `, ${o.free} free` : '';
      return `${o.peer}(${o.nickname ?? '?'}) ${o.size} IPs (${(o.share * 100).toFixed(1)}% of total${free})${flag}\n`;
    })
    .join('');
}

/** `weft status policy`: the NetworkPolicy part, its API side and its kernel side. */
export function formatPolicy(p: PolicyReport): string {
  if (!p.enabled || !p.engine || !p.source) return `\n${row('Service', 'policy')}${row('Status', `disabled: ${p.reason ?? 'not running'}`)}\n`;
  const e = p.engine;
  const s = p.source;
  const elements = Object.values(e.sets).reduce((a, b) => a + b, 0);
  let out = '\n' + row('Service', 'policy');
  const waiting = s.waitingFor.map((w) => `${w.resource}${w.error ? ` (${w.error})` : ''}`).join(', ');
  out += row('Source', s.synced ? `kubernetes: ${s.objects.networkpolicies} policies, ${s.objects.pods} pods, ${s.objects.namespaces} namespaces` : `waiting for the list of ${waiting}`);
  out += row('Enforced', `${e.applied ? `up to resourceVersion ${s.enforcedVersion ?? '-'}` : e.keptFromBefore ? "no update yet: the previous run's rules are in force" : 'nothing yet'}${s.pending ? ' (a change is being applied)' : ''}`);
  out += row('Table', `${e.table}: ${e.rules} rules, ${elements} set elements`);
  out += row('Policies', `${e.policies.length} (${e.policies.filter((x) => x.selected > 0).length} selecting pods on this host)`);
  out += row('SelectedPods', `${e.pods.length} of ${s.local} on this host`);
  const l = e.lastApply;
  if (l) out += row('LastApply', `${l.at} ${l.kind}, ${l.changes} changes, ${l.seconds.toFixed(3)} s (compile ${l.compileSeconds.toFixed(3)} s, nft ${l.writeSeconds.toFixed(3)} s)`);
  out += row('Drops', `ingress ${e.drops.ingress}, egress ${e.drops.egress}`);
  if (e.lastError || s.lastError) out += row('LastError', (e.lastError ?? s.lastError)!);
  for (const k of s.skipped) out += row('Skipped', k.error);
  for (const w of e.warnings.slice(0, 10)) out += row('Warning', w);
  if (e.policies.length) out += '\npolicies:\n' + e.policies.map((x) => `  ${x.namespace}/${x.name} ${[x.ingress && 'ingress', x.egress && 'egress'].filter(Boolean).join('+')} selects ${x.selected}\n`).join('');
  if (e.pods.length) out += '\npods:\n' + e.pods.map((x) => `  ${x.namespace}/${x.name} ${x.ip} ingress: ${x.ingress.join(',') || '-'} egress: ${x.egress.join(',') || '-'}\n`).join('');
  if (e.blocked.length) {
    out += '\nblocked (latest first):\n';
    out += e.blocked.map((b) => `  ${b.seen} ${b.direction} ${b.protocol} ${b.src}:${b.sport} -> ${b.dst}:${b.dport} (${b.srcPod ?? '?'} -> ${b.dstPod ?? '?'})\n`).join('');
  }
  return out + '\n';
}

function simple(usage: string, run: (args: string[], client: RouterClient, io: CliIo) => Promise<number>): Op {
  return {
    usage,
    async run(args, client, io) {
      const { values, positionals } = parse(args, {});
      if (values.help) {
        io.out(usage);
        return 0;
      }
      return run(positionals, client, io);
    },
  };
}

export const OPS: Record<string, Op> = {
  status: simple(
    `Usage: weft status [peers|connections|ipam|targets|policy]

Prints the router and IPAM status, or one line per item of a part; policy: the NetworkPolicy
part (Kubernetes mode), its policies, selected pods, set sizes, drops and blocked connections.

Examples:
  weft status
  weft status connections
  weft status policy
  weft --socket /run/weft/weft.sock status ipam
`,
    async (args, client, io) => {
      const what = args[0];
      if (args.length > 1 || (what && !['peers', 'connections', 'ipam', 'targets', 'policy'].includes(what))) {
        throw new ConfigError('status', `unknown part "${args.join(' ')}" (peers, connections, ipam, targets or policy)`);
      }
      if (what === 'policy') {
        io.out(formatPolicy(await client.get<PolicyReport>('/v1/policy')));
        return 0;
      }
      const r = await client.get<Report>('/v1/report');
      if (!what) io.out(formatStatus(r));
      else if (what === 'connections') io.out(formatConnections(r));
      else if (what === 'peers') io.out(formatPeers(r));
      else if (what === 'ipam') io.out(formatIpam(r));
      else io.out(r.mesh.targets.map((t) => t + '\n').join(''));
      return 0;
    },
  ),
  ps: simple(
    `Usage: weft ps

Lists the attachments on this host, the bridge's own address first: container ID, MAC,
address. The bridge shows as "weave:expose" as in Weave.

Example:
  weft ps
`,
    async (_a, client, io) => {
      const r = await client.get<Report>('/v1/report');
      for (const a of r.ipam.attachments) {
        const id = a.network === '_gateway' ? `${r.router.bridge}:expose` : a.containerId;
        const mac = a.network === '_gateway' ? r.router.bridgeMac : (a.mac ?? '-');
        io.out(`${id} ${mac} ${a.address}\n`);
      }
      return 0;
    },
  ),
  report: simple(
    `Usage: weft report

Prints the router's complete state as JSON (field names are stable; see README).

Example:
  weft report | jq .ipam.owners
`,
    async (_a, client, io) => {
      io.out(JSON.stringify(await client.get<Report>('/v1/report'), null, 2) + '\n');
      return 0;
    },
  ),
  connect: simple(
    `Usage: weft connect ADDR[:PORT]...

Adds peers to connect to; the mesh then finds the rest of the network through them.

Example:
  weft connect 192.168.1.12
`,
    async (args, client, io) => {
      if (args.length === 0) throw new ConfigError('connect', 'name at least one address (HOST or HOST:PORT)');
      const r = await client.post<{ connecting: string[] }>('/v1/connect', { addresses: args });
      io.out(`connecting to ${r.connecting.join(', ')}\n`);
      return 0;
    },
  ),
  forget: simple(
    `Usage: weft forget ADDR[:PORT]...

Stops connecting to addresses given to 'weft router' or 'weft connect'.

Example:
  weft forget 192.168.1.12
`,
    async (args, client, io) => {
      if (args.length === 0) throw new ConfigError('forget', 'name at least one address');
      const r = await client.post<{ forgotten: string[] }>('/v1/forget', { addresses: args });
      if (r.forgotten.length === 0) {
        io.err(`weft forget: ${args.join(', ')}: not a target (see weft status targets)\n`);
        return 1;
      }
      io.out(`forgot ${r.forgotten.join(', ')}\n`);
      return 0;
    },
  ),
  rmpeer: simple(
    `Usage: weft rmpeer PEER

Takes over the address space of a peer that is gone for good (name or nickname). Run it on
one remaining host only.

Example:
  weft rmpeer 42:8e:e8:c4:52:1b
`,
    async (args, client, io) => {
      if (args.length !== 1) throw new ConfigError('rmpeer', 'name exactly one peer');
      const r = await client.post<{ peer: string; addresses: number }>('/v1/rmpeer', { peers: args });
      io.out(`${r.addresses} IPs taken over from ${r.peer}\n`);
      return 0;
    },
  ),
  expose: simple(
    `Usage: weft expose [ADDRESS/PREFIX...]

Gives this host an address on the pod network: without arguments it prints the bridge's
address in the default subnet; with addresses (e.g. 10.0.1.100/24) it adds them to the bridge.

Examples:
  weft expose
  weft expose 10.0.1.100/24
`,
    async (args, client, io) => {
      const r = await client.post<{ exposed: string[] }>('/v1/expose', { addresses: args });
      io.out(r.exposed.join('\n') + '\n');
      return 0;
    },
  ),
  hide: simple(
    `Usage: weft hide [ADDRESS/PREFIX...]

Takes addresses given with 'weft expose ADDRESS' off the bridge (all of them without arguments).

Example:
  weft hide 10.0.1.100/24
`,
    async (args, client, io) => {
      const r = await client.post<{ hidden: string[] }>('/v1/hide', { addresses: args });
      io.out(r.hidden.length ? r.hidden.join('\n') + '\n' : 'nothing was exposed\n');
      return 0;
    },
  ),
};
