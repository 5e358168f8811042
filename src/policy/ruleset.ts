/**
 * The kernel side of NetworkPolicy: one nftables table of the `bridge` family, with a fixed set
 * of chains and rules; everything policies decide lives in set elements.
 *
 * Why it is this way:
 * - A `bridge` table sees frames as the bridge forwards them, between pod veths and the VXLAN
 *   port alike, so pod-to-pod traffic on one host and across hosts is filtered in one place,
 *   with neither br_netfilter nor ipset.
 * - The rules never change with the policies: a packet meets the same dozen rules and a handful
 *   of hash lookups (`daddr . saddr . proto . dport` and its cousins) whether one policy exists
 *   or a thousand, so per-packet cost does not grow with policies or pods. Only the
 *   element lists change; an update is one `nft -f` transaction (all or nothing), so there is
 *   no moment with a half-applied policy.
 * - Replies: the bridge family has no conntrack on kernels built without nf_conntrack_bridge
 *   (this one among them), so the table keeps its own flow set. A packet that passes the checks
 *   adds its 5-tuple (with a timeout, refreshed by traffic in either direction, shortened by a
 *   TCP FIN or RST); a packet whose reversed tuple is there is a reply and passes. Flows
 *   survive updates, so established connections keep flowing as policies change (as conntrack
 *   would let them).
 * - The node reaches its own pods: frames the host itself sends onto the bridge (the `output`
 *   hook) from one of its own addresses pass, and so do their replies (the `input` hook).
 *   Pods' traffic to other destinations through the host (outside the pod network) is checked
 *   against egress in the `input` hook, except for `exempt` ranges (Services: checked after
 *   DNAT, when they come back onto the bridge).
 * - Non-IPv4 frames (ARP, IPv6) pass untouched. Non-first IPv4 fragments pass (the first one,
 *   with the ports, was checked).
 * - Drops are counted per direction and protocol (sets with a counter per element) and their
 *   5-tuples put in small sets with a timeout, which the engine lists to log blocked
 *   connections (the kernel log is not available from inside a network namespace).
 */

export const FAMILY = 'bridge';
export const TABLE = 'weft_policy';

const ADDR = 'ipv4_addr';
const PAIR = 'ipv4_addr . ipv4_addr';
const PORTKEY = 'ipv4_addr . ipv4_addr . inet_proto . inet_service';
const ANYPORT = 'ipv4_addr . inet_proto . inet_service';
const FIVE = 'ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service';

/** Sets whose elements come from the compiled policies, replaced on every update. */
export const STATIC_SETS = {
  /** Local pods isolated in either direction (the fast path skips everything else). */
  isolated: { type: ADDR },
  ingress_isolated: { type: ADDR },
  egress_isolated: { type: ADDR },
  /** This host's own addresses. */
  node_addrs: { type: ADDR },
  /** Destinations checked only after DNAT (Service ranges). */
  exempt: { type: ADDR, interval: true },
  /** dst pod . src pod: every protocol and port. */
  in_pod_any: { type: PAIR },
  /** dst pod . src pod . protocol . port */
  in_pod_port: { type: PORTKEY },
  /** dst pod . protocol . port, from any source. */
  in_any_port: { type: ANYPORT },
  /** dst pod . src range . protocol range . port range (ipBlocks, endPort ranges, whole protocols). */
  in_range: { type: PORTKEY, interval: true },
  out_pod_any: { type: PAIR },
  out_pod_port: { type: PORTKEY },
  out_any_port: { type: ANYPORT },
  out_range: { type: PORTKEY, interval: true },
} as const;

export type SetName = keyof typeof STATIC_SETS;
export const SET_NAMES = Object.keys(STATIC_SETS) as SetName[];

/** Sets the packet path fills: flows (replies), and recent drops (the log). Never flushed by updates. */
const DYNAMIC_SETS = {
  flows: `type ${FIVE}; flags dynamic,timeout; timeout 5m; size 262144;`,
  flows_np: `type ${PAIR} . inet_proto; flags dynamic,timeout; timeout 2m; size 65536;`,
  blocked_in: `type ${FIVE}; flags dynamic,timeout; timeout 1m; size 1024;`,
  blocked_out: `type ${FIVE}; flags dynamic,timeout; timeout 1m; size 1024;`,
  drop_count_in: 'type inet_proto; size 256; flags dynamic; counter;',
  drop_count_out: 'type inet_proto; size 256; flags dynamic; counter;',
};

/**
 * Drops are counted per direction and protocol in sets with a counter per element, not in named
 * counters: nft 1.0.6 reads every set element of the table to list a counter (seconds with tens
 * of thousands of elements), while listing one small set costs milliseconds.
 */
export const DROP_COUNT_SETS = { ingress: 'drop_count_in', egress: 'drop_count_out' } as const;
export const BLOCKED_SETS = { ingress: 'blocked_in', egress: 'blocked_out' } as const;

const FWD = 'ip saddr . ip daddr . meta l4proto . th sport . th dport';
const REV = 'ip daddr . ip saddr . meta l4proto . th dport . th sport';
const FWD_NP = 'ip saddr . ip daddr . meta l4proto';
const REV_NP = 'ip daddr . ip saddr . meta l4proto';

/** Remembers a flow (key given in its original direction) with a timeout by protocol and TCP flags. */
const track = (key: string) => [
  `tcp flags & (fin | rst) != 0 update @flows { ${key} timeout 1m } accept`,
  `meta l4proto tcp update @flows { ${key} timeout 1d } accept`,
  `update @flows { ${key} timeout 5m } accept`,
  'accept',
];

const BASE_CHAINS: Record<string, string> = {
  forward: 'type filter hook forward priority -200; policy accept;',
  output: 'type filter hook output priority -200; policy accept;',
  input: 'type filter hook input priority -200; policy accept;',
};

/** The chains and their rules, in order (base chains first). */
export const CHAINS: Record<string, readonly string[]> = {
  forward: ['meta protocol ip jump check'],
  output: ['meta protocol ip ip saddr != @node_addrs jump check'],
  input: ['meta protocol ip ip saddr @egress_isolated ip daddr != @node_addrs ip daddr != @exempt jump check'],
  check: [
    'ip frag-off & 0x1fff != 0 accept',
    'ip saddr != @isolated ip daddr != @isolated accept',
    'meta l4proto { tcp, udp, sctp } goto ports',
    'goto other',
  ],
  ports: [
    `${REV} @flows goto reply`,
    `${FWD} @flows goto orig`,
    'ip saddr @egress_isolated jump egress',
    'ip daddr @ingress_isolated jump ingress',
    'goto orig',
  ],
  orig: track(FWD),
  reply: track(REV),
  other: [
    'icmp type { destination-unreachable, time-exceeded, parameter-problem } accept',
    `${REV_NP} @flows_np update @flows_np { ${REV_NP} } accept`,
    `${FWD_NP} @flows_np update @flows_np { ${FWD_NP} } accept`,
    'ip saddr @egress_isolated jump egress',
    'ip daddr @ingress_isolated jump ingress',
    `update @flows_np { ${FWD_NP} }`,
    'accept',
  ],
  egress: [
    'ip saddr . ip daddr @out_pod_any return',
    'ip saddr . ip daddr . meta l4proto . th dport @out_pod_port return',
    'ip saddr . meta l4proto . th dport @out_any_port return',
    'ip saddr . ip daddr . meta l4proto . th dport @out_range return',
    `add @${BLOCKED_SETS.egress} { ${FWD} }`,
    `update @${DROP_COUNT_SETS.egress} { meta l4proto counter }`,
    'drop',
  ],
  ingress: [
    'ip daddr . ip saddr @in_pod_any return',
    'ip daddr . ip saddr . meta l4proto . th dport @in_pod_port return',
    'ip daddr . meta l4proto . th dport @in_any_port return',
    'ip daddr . ip saddr . meta l4proto . th dport @in_range return',
    `add @${BLOCKED_SETS.ingress} { ${FWD} }`,
    `update @${DROP_COUNT_SETS.ingress} { meta l4proto counter }`,
    'drop',
  ],
};

export const RULE_COUNT = Object.values(CHAINS).reduce((n, r) => n + r.length, 0);

/** Element strings per static set (nft syntax: `10.32.0.2 . 10.32.0.3 . 6 . 80`). */
export type Elements = Record<SetName, readonly string[]>;

const T = `${FAMILY} ${TABLE}`;
const CHUNK = 2000;

function addElements(out: string[], set: string, elems: readonly string[], verb: 'add' | 'delete'): void {
  for (let i = 0; i < elems.length; i += CHUNK) out.push(`${verb} element ${T} ${set} { ${elems.slice(i, i + CHUNK).join(', ')} }`);
}

/**
 * The whole table as one transaction: declares what is missing (sets, chains; an existing
 * table keeps its flows and drop counts), replaces every chain's rules and every static
 * set's elements.
 */
export function renderFull(elements: Elements): string {
  const out = [`add table ${T}`];
  for (const [name, s] of Object.entries(STATIC_SETS)) {
    out.push(`add set ${T} ${name} { type ${s.type};${'interval' in s ? ' flags interval;' : ''} }`);
  }
  for (const [name, spec] of Object.entries(DYNAMIC_SETS)) out.push(`add set ${T} ${name} { ${spec} }`);
  for (const name of Object.keys(CHAINS)) out.push(BASE_CHAINS[name] ? `add chain ${T} ${name} { ${BASE_CHAINS[name]} }` : `add chain ${T} ${name}`);
  for (const [name, rules] of Object.entries(CHAINS)) {
    out.push(`flush chain ${T} ${name}`);
    for (const r of rules) out.push(`add rule ${T} ${name} ${r}`);
  }
  for (const name of SET_NAMES) {
    out.push(`flush set ${T} ${name}`);
    addElements(out, name, elements[name], 'add');
  }
  return out.join('\n') + '\n';
}

/** What changed between two element states, as one transaction; '' when nothing did. */
export function renderDiff(prev: Elements, next: Elements): { script: string; changes: number } {
  const out: string[] = [];
  let changes = 0;
  for (const name of SET_NAMES) {
    const before = new Set(prev[name]);
    const after = new Set(next[name]);
    const gone = prev[name].filter((e) => !after.has(e));
    const added = next[name].filter((e) => !before.has(e));
    changes += gone.length + added.length;
    // deletions first: an interval element may be replaced by one overlapping it
    addElements(out, name, gone, 'delete');
    addElements(out, name, added, 'add');
  }
  return { script: out.length ? out.join('\n') + '\n' : '', changes };
}

/** Removes the table and with it every rule, set and counter of weft's policy. */
export function renderRemove(): string {
  return `add table ${T}\ndelete table ${T}\n`;
}
