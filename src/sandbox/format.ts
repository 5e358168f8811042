/** Text output of `weft sandbox`: the connectivity grid, status and down summaries. */
import { arpTableLimit } from './ping';
import type { DownResult, PingMatrix, SandboxPod, SandboxStatus } from './types';
import { fmtMs } from './util';
import { formatNeigh } from './neigh';

/** Beyond this many pods the grid is too wide to read; only failures are listed. */
const MAX_GRID = 40;

function shortName(p: SandboxPod, prefix: string): string {
  return p.name.startsWith(`${prefix}-`) ? p.name.slice(prefix.length + 1) : p.name;
}

/** A grid of ok/FAIL, one row per source pod, then a summary line. */
export function formatMatrix(m: PingMatrix, prefix: string): string {
  const out: string[] = [];
  const names = m.pods.map((p) => shortName(p, prefix));
  const missing = m.pods.filter((p) => !p.address);
  if (m.pods.length < 2) {
    out.push('connectivity: fewer than two pods, nothing to ping');
    return out.join('\n') + '\n';
  }
  if (m.pods.length <= MAX_GRID) {
    const rowHead = m.pods.map((p, i) => `${names[i]} ${p.address ?? '-'}`);
    const w0 = Math.max('from \\ to'.length, ...rowHead.map((s) => s.length));
    const cw = Math.max(4, ...names.map((n) => n.length));
    out.push(`${'from \\ to'.padEnd(w0)}  ${names.map((n) => n.padStart(cw)).join(' ')}`);
    const dup = new Set(m.duplicates.map((d) => d.address));
    m.pods.forEach((_, i) => {
      const cell = (v: boolean | null, j: number) =>
        i === j ? '-' : v === null ? (m.pods[i]!.address && m.pods[j]!.address ? '.' : '?') : v ? 'ok' : dup.has(m.pods[j]!.address!) ? 'DUP' : 'FAIL';
      const cells = m.ok[i]!.map((v, j) => cell(v, j).padStart(cw));
      out.push(`${rowHead[i]!.padEnd(w0)}  ${cells.join(' ')}`);
    });
  } else {
    const fails: string[] = [];
    m.ok.forEach((row, i) => row.forEach((v, j) => v === false && fails.push(`${names[i]} -> ${names[j]} (${m.pods[j]!.address})`)));
    out.push(`(${m.pods.length} pods: grid left out)`);
    for (const f of fails.slice(0, 50)) out.push(`  FAIL ${f}`);
    if (fails.length > 50) out.push(`  ... and ${fails.length - 50} more failures`);
  }
  if (missing.length) out.push(`no address for: ${missing.map((p) => p.name).join(', ')}`);
  for (const d of m.duplicates) out.push(`DUP: ${d.address} is held by ${d.pods.map((n) => (n.startsWith(`${prefix}-`) ? n.slice(prefix.length + 1) : n)).join(', ')}; not pinged (a reply could come from the wrong pod)`);
  if (m.pinged < m.totalPairs) {
    out.push(`sampled ${m.pinged} of ${m.totalPairs} pairs ('.' = not pinged): every pair costs ARP table entries, and that table is shared with the machine (limit ${arpTableLimit()})`);
  }
  if (m.noBufferSpace) {
    out.push(
      `${m.noBufferSpace} pings failed with "No buffer space available": the kernel's ARP table is full. It is shared by every namespace on the machine (net.ipv4.neigh.default.gc_thresh3 = ${arpTableLimit()}, settable only in the machine's namespace); these failures are not weft's`,
    );
  }
  out.push(summaryLine(m));
  return out.join('\n') + '\n';
}

export function summaryLine(m: PingMatrix): string {
  const ok = m.sameHost.ok + m.crossHost.ok;
  const total = m.sameHost.total + m.crossHost.total;
  const verdict = ok === total ? 'all ok' : `${total - ok} FAIL${m.duplicates.length ? `, ${m.duplicates.length} duplicate address${m.duplicates.length === 1 ? '' : 'es'}` : ''}`;
  const cross = m.crossHost.total ? `, across hosts ${m.crossHost.ok}/${m.crossHost.total}` : '';
  const sampled = m.pinged < m.totalPairs ? ` (sampled ${m.pinged} of ${m.totalPairs} pairs)` : '';
  return `connectivity: ${ok}/${total} pings ok${sampled}, ${verdict} (same host ${m.sameHost.ok}/${m.sameHost.total}${cross}) in ${fmtMs(m.ms)}`;
}

export function formatStatus(s: SandboxStatus): string {
  const out: string[] = [];
  if (!s.state) {
    out.push(`no sandbox with prefix ${s.prefix} (no state file in ${s.dir})`);
    if (s.strays.length) out.push(`namespaces with the prefix left over: ${s.strays.join(' ')}  (weft sandbox down removes them)`);
    return out.join('\n') + '\n';
  }
  const st = s.state;
  out.push(`sandbox ${s.prefix}: ${st.hosts.length} hosts, ${st.pods.length} pods, underlay ${st.underlay.netns} ${st.underlay.subnet} mtu ${st.mtu}, ${st.readyAt ? `up since ${st.readyAt}` : 'set-up not finished'}`);
  out.push(`state ${s.dir}/state.json, router ${st.weft}, plugin ${st.plugin}`);
  out.push('');
  out.push('HOST    NETNS         ADDRESS        ROUTER          PEERS  CONNS  IPAM');
  for (const h of s.hosts) {
    const r = h.report;
    const router = !h.host.pid ? 'never started' : h.alive ? `pid ${h.host.pid}` : `pid ${h.host.pid} DEAD`;
    const peers = r?.mesh ? String(r.mesh.peers.length) : '-';
    const conns = r?.mesh ? String(r.mesh.connections.filter((c) => c.state === 'established').length) : '-';
    const ipam = r ? r.ipam.status : h.error ? `no answer: ${h.error}` : '-';
    out.push(
      `${h.host.nickname.padEnd(7)} ${(h.host.netns + (h.netnsExists ? '' : ' GONE')).padEnd(13)} ${h.host.address.padEnd(14)} ${router.padEnd(15)} ${peers.padStart(5)}  ${conns.padStart(5)}  ${ipam}`,
    );
  }
  if (s.pods.length) {
    out.push('');
    out.push('POD              HOST    ADDRESS');
    for (const p of s.pods) out.push(`${(p.pod.name + (p.netnsExists ? '' : ' GONE')).padEnd(16)} ${`host${p.pod.host}`.padEnd(7)} ${(p.pod.cidr ?? '-').padEnd(15)}${p.pod.k8s ? ` ${p.pod.k8s.namespace}/${p.pod.k8s.name}${p.pod.k8s.ports.length ? ` serving ${p.pod.k8s.ports.join(' ')}` : ''}` : ''}`.trimEnd());
  }
  if (s.strays.length) out.push('', `namespaces with the prefix not in the state file: ${s.strays.join(' ')}`);
  return out.join('\n') + '\n';
}

export function formatDown(d: DownResult, prefix: string): string {
  const out: string[] = [];
  for (const r of d.routers) {
    const how = r.how === 'gone' ? 'had already exited' : r.how === 'survived' ? 'SURVIVED SIGKILL' : `stopped (${r.how})`;
    out.push(`router ${r.host ?? ''} pid ${r.pid} ${how}`);
  }
  if (d.namespaces.length) out.push(`deleted ${d.namespaces.length} namespaces: ${d.namespaces.join(' ')}`);
  for (const f of d.failed) out.push(`could not delete ${f.netns}: ${f.error}`);
  for (const o of d.others.slice(0, 5)) out.push(`left alone: pid ${o.pid} in ${o.netns} (${o.cmd}); its namespace lives on until it exits`);
  if (d.others.length > 5) out.push(`... and ${d.others.length - 5} more processes left alone`);
  if (d.dirRemoved) out.push(`removed ${d.dirRemoved}`);
  if (d.neigh) out.push(`neighbour table limits (machine-wide) now ${formatNeigh(d.neigh)}`);
  if (!d.routers.length && !d.namespaces.length && !d.dirRemoved && !d.failed.length) out.push(`nothing to remove: no sandbox with prefix ${prefix}`);
  return out.join('\n') + '\n';
}
