/**
 * The Kubernetes objects NetworkPolicy enforcement reads (Pod, Namespace and
 * `networking.k8s.io/v1` NetworkPolicy), parsed from their API JSON into normalised forms.
 *
 * Structure is checked with zod; the rules the API server also enforces (one kind of peer,
 * endPort only with a numeric port, selector operators and their values, `except` inside
 * `cidr`) are checked here as well, so an object that reaches the compiler means one thing.
 * Errors name the object and the field (`NetworkPolicy x/p: spec.ingress.0.ports.1.endPort: ...`).
 *
 * Defaults applied here, as the API documents them: `policyTypes` absent or empty means Ingress,
 * plus Egress when `spec.egress` has rules; a port's protocol is TCP; a container port's protocol
 * is TCP; an absent `podSelector` selects every pod of the namespace; every Namespace carries
 * the label `kubernetes.io/metadata.name` (the API server sets it; added when missing).
 */
import * as z from 'zod/mini';
import { ObjectError } from '../common/errors';
import { parseAddrWithPrefix, parseIPv4, networkOf, containsCidr, type Cidr } from '../common/ip';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];
/** IP protocol numbers, as the kernel matches them. */
export const PROTO_NUMBER: Record<Protocol, number> = { TCP: 6, UDP: 17, SCTP: 132 };

export type Operator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One `matchExpressions` entry. */
export interface Requirement {
  key: string;
  operator: Operator;
  values: readonly string[];
}

/** A label selector: `matchLabels` and `matchExpressions`, all of which must hold. Empty selects everything. */
export interface LabelSelector {
  matchLabels: Readonly<Record<string, string>>;
  matchExpressions: readonly Requirement[];
}

/** A port a container declares; `name` is what named policy ports refer to. */
export interface ContainerPort {
  name?: string;
  port: number;
  protocol: Protocol;
}

export interface Pod {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  /** IPv4 addresses from `status.podIPs` / `status.podIP` (IPv6 ones are left out: weft is IPv4). */
  ips: readonly string[];
  nodeName?: string;
  hostNetwork: boolean;
  /** `status.phase`; Succeeded and Failed pods hold no address any more. */
  phase?: string;
  /** Every container's ports (`spec.containers[].ports[]`). */
  ports: readonly ContainerPort[];
}

export interface Namespace {
  name: string;
  labels: Readonly<Record<string, string>>;
}

/** A NetworkPolicyPeer: selected pods, or an IPv4 block with holes. */
export type Peer =
  | {
      kind: 'pods';
      /** Absent: all pods (of the selected namespaces, or of the policy's namespace). */
      podSelector?: LabelSelector;
      /** Absent: the policy's own namespace. */
      namespaceSelector?: LabelSelector;
    }
  | { kind: 'ipBlock'; cidr: Cidr; except: readonly Cidr[] }
  /** An IPv6 ipBlock: valid, and matches nothing here (weft's pods are IPv4). */
  | { kind: 'ipv6' };

/** A NetworkPolicyPort, with its protocol defaulted. `port` undefined: every port of `protocol`. */
export interface PolicyPort {
  protocol: Protocol;
  port?: number | string;
  /** Only with a numeric `port`; the range is port..endPort inclusive. */
  endPort?: number;
}

/** An ingress or egress rule. `peers` or `ports` undefined: the field was empty or absent (all). */
export interface PolicyRule {
  peers?: readonly Peer[];
  ports?: readonly PolicyPort[];
}

export interface NetworkPolicy {
  namespace: string;
  name: string;
  podSelector: LabelSelector;
  /** The effective policyTypes, defaults applied. */
  ingress: boolean;
  egress: boolean;
  ingressRules: readonly PolicyRule[];
  egressRules: readonly PolicyRule[];
}

/** A pod attached on this host, as the router knows it from the CNI call (CNI_ARGS). */
export interface LocalPod {
  ip: string;
  namespace?: string;
  name?: string;
}

/**
 * Everything the compiler needs: the cluster's objects (from the API watch), which pods live on
 * this host, and this host's own addresses.
 */
export interface PolicyInput {
  pods: readonly Pod[];
  namespaces: readonly Namespace[];
  policies: readonly NetworkPolicy[];
  /** Pods attached on this host. Their policies are enforced here, in both directions. */
  local: readonly LocalPod[];
  /** This host's own addresses (its bridge gateways): traffic between the node and its pods always passes. */
  nodeAddresses: readonly string[];
  /**
   * Destinations whose egress check waits until after DNAT (Service ranges): packets from pods to
   * them pass the host's input hook and are checked when they come back to the bridge.
   */
  exempt?: readonly string[];
}

export const METADATA_NAME_LABEL = 'kubernetes.io/metadata.name';

// ---------------------------------------------------------------- structure (zod)

const labelsSchema = z.nullish(z.record(z.string(), z.string()));
const metaSchema = z.looseObject({
  name: z.string().check(z.minLength(1, 'must not be empty')),
  namespace: z.nullish(z.string()),
  labels: labelsSchema,
});
const selectorSchema = z.looseObject({
  matchLabels: labelsSchema,
  matchExpressions: z.nullish(
    z.array(z.looseObject({ key: z.string(), operator: z.string(), values: z.nullish(z.array(z.string())) })),
  ),
});
const intOrString = z.union([z.int(), z.string()]);

const podSchema = z.looseObject({
  metadata: metaSchema,
  spec: z.nullish(
    z.looseObject({
      nodeName: z.nullish(z.string()),
      hostNetwork: z.nullish(z.boolean()),
      containers: z.nullish(
        z.array(
          z.looseObject({
            ports: z.nullish(
              z.array(z.looseObject({ name: z.nullish(z.string()), containerPort: z.int(), protocol: z.nullish(z.string()) })),
            ),
          }),
        ),
      ),
    }),
  ),
  status: z.nullish(
    z.looseObject({
      phase: z.nullish(z.string()),
      podIP: z.nullish(z.string()),
      podIPs: z.nullish(z.array(z.looseObject({ ip: z.string() }))),
    }),
  ),
});

const namespaceSchema = z.looseObject({ metadata: metaSchema });

const peerSchema = z.looseObject({
  podSelector: z.nullish(selectorSchema),
  namespaceSelector: z.nullish(selectorSchema),
  ipBlock: z.nullish(z.looseObject({ cidr: z.string(), except: z.nullish(z.array(z.string())) })),
});
const portSchema = z.looseObject({
  protocol: z.nullish(z.string()),
  port: z.nullish(intOrString),
  endPort: z.nullish(z.int()),
});
const ingressRuleSchema = z.looseObject({ from: z.nullish(z.array(peerSchema)), ports: z.nullish(z.array(portSchema)) });
const egressRuleSchema = z.looseObject({ to: z.nullish(z.array(peerSchema)), ports: z.nullish(z.array(portSchema)) });
const policySchema = z.looseObject({
  metadata: metaSchema,
  spec: z.looseObject({
    podSelector: z.nullish(selectorSchema),
    policyTypes: z.nullish(z.array(z.string())),
    ingress: z.nullish(z.array(ingressRuleSchema)),
    egress: z.nullish(z.array(egressRuleSchema)),
  }),
});

type RawSelector = z.infer<typeof selectorSchema>;
type RawPeer = z.infer<typeof peerSchema>;
type RawPort = z.infer<typeof portSchema>;

function structure<T>(schema: z.ZodMiniType<T>, raw: unknown, what: string): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.');
  const msg = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
  throw new ObjectError(what, field, msg);
}

function nameOf(raw: unknown, kind: string): string {
  const m = (raw as { metadata?: { namespace?: unknown; name?: unknown } } | null)?.metadata;
  const ns = typeof m?.namespace === 'string' ? `${m.namespace}/` : '';
  return `${kind} ${ns}${typeof m?.name === 'string' ? m.name : '?'}`;
}

// ---------------------------------------------------------------- semantics

/** A label value: empty, or up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit. */
const LABEL_VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
/** IANA service names, what a named port may be: 1-15 lower-case letters, digits, '-', at least one letter. */
const PORT_NAME_RE = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

function protocolOf(v: string | null | undefined, what: string, field: string): Protocol {
  if (v === undefined || v === null) return 'TCP';
  if ((PROTOCOLS as readonly string[]).includes(v)) return v as Protocol;
  throw new ObjectError(what, field, `"${v}" is not a protocol (TCP, UDP or SCTP)`);
}

function selectorOf(raw: RawSelector, what: string, field: string): LabelSelector {
  const matchLabels = { ...(raw.matchLabels ?? {}) };
  for (const [k, v] of Object.entries(matchLabels)) {
    if (!LABEL_VALUE_RE.test(v) || v.length > 63) throw new ObjectError(what, `${field}.matchLabels.${k}`, `"${v}" is not a valid label value`);
  }
  const matchExpressions = (raw.matchExpressions ?? []).map((e, i): Requirement => {
    const f = `${field}.matchExpressions.${i}`;
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
      case 'NotIn':
        if (values.length === 0) throw new ObjectError(what, `${f}.values`, `must be non-empty when operator is ${e.operator}`);
        return { key: e.key, operator: e.operator, values };
      case 'Exists':
      case 'DoesNotExist':
        if (values.length > 0) throw new ObjectError(what, `${f}.values`, `must be empty when operator is ${e.operator}`);
        return { key: e.key, operator: e.operator, values: [] };
      default:
        throw new ObjectError(what, `${f}.operator`, `"${e.operator}" is not a valid operator (In, NotIn, Exists, DoesNotExist)`);
    }
  });
  return { matchLabels, matchExpressions };
}

const isV6 = (s: string) => s.includes(':');

/** Parses an IPv4 CIDR; host bits are allowed (the API accepts `192.168.1.1/24`) and cleared. */
function cidrOf(s: string, what: string, field: string): Cidr {
  const a = parseAddrWithPrefix(s);
  if (!a) throw new ObjectError(what, field, `"${s}" is not a CIDR`);
  return { base: networkOf(a.addr, a.prefix), prefix: a.prefix };
}

function peerOf(raw: RawPeer, what: string, field: string): Peer {
  const hasSel = raw.podSelector != null || raw.namespaceSelector != null;
  if (raw.ipBlock != null) {
    if (hasSel) throw new ObjectError(what, field, 'ipBlock may not be combined with podSelector or namespaceSelector');
    const b = raw.ipBlock;
    if (isV6(b.cidr)) {
      if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(b.cidr)) throw new ObjectError(what, `${field}.ipBlock.cidr`, `"${b.cidr}" is not a CIDR`);
      return { kind: 'ipv6' };
    }
    const cidr = cidrOf(b.cidr, what, `${field}.ipBlock.cidr`);
    const except = (b.except ?? []).map((e, i) => {
      const f = `${field}.ipBlock.except.${i}`;
      if (isV6(e)) throw new ObjectError(what, f, `"${e}" is not in the same family as ${b.cidr}`);
      const c = cidrOf(e, what, f);
      if (!containsCidr(cidr, c) || c.prefix <= cidr.prefix) throw new ObjectError(what, f, `must be a strict subset of ${b.cidr}`);
      return c;
    });
    return { kind: 'ipBlock', cidr, except };
  }
  if (!hasSel) throw new ObjectError(what, field, 'must specify a peer (podSelector, namespaceSelector or ipBlock)');
  return {
    kind: 'pods',
    podSelector: raw.podSelector != null ? selectorOf(raw.podSelector, what, `${field}.podSelector`) : undefined,
    namespaceSelector: raw.namespaceSelector != null ? selectorOf(raw.namespaceSelector, what, `${field}.namespaceSelector`) : undefined,
  };
}

function portOf(raw: RawPort, what: string, field: string): PolicyPort {
  const protocol = protocolOf(raw.protocol, what, `${field}.protocol`);
  const port = raw.port ?? undefined;
  const endPort = raw.endPort ?? undefined;
  if (typeof port === 'number' && (port < 1 || port > 65535)) throw new ObjectError(what, `${field}.port`, `${port} is not a port (1-65535)`);
  if (typeof port === 'string' && !PORT_NAME_RE.test(port)) {
    throw new ObjectError(what, `${field}.port`, `"${port}" is not a port name (1-15 lower-case letters, digits and '-')`);
  }
  if (endPort !== undefined) {
    if (port === undefined) throw new ObjectError(what, `${field}.endPort`, 'may not be set without port');
    if (typeof port === 'string') throw new ObjectError(what, `${field}.endPort`, 'may not be set with a named port');
    if (endPort < port || endPort > 65535) throw new ObjectError(what, `${field}.endPort`, `must be between port (${port}) and 65535`);
  }
  return { protocol, port, endPort };
}

function ruleOf(peers: RawPeer[] | null | undefined, ports: RawPort[] | null | undefined, what: string, field: string, peerField: string): PolicyRule {
  return {
    peers: peers && peers.length > 0 ? peers.map((p, i) => peerOf(p, what, `${field}.${peerField}.${i}`)) : undefined,
    ports: ports && ports.length > 0 ? ports.map((p, i) => portOf(p, what, `${field}.ports.${i}`)) : undefined,
  };
}

export function parseNetworkPolicy(raw: unknown): NetworkPolicy {
  const what = nameOf(raw, 'NetworkPolicy');
  const p = structure(policySchema, raw, what);
  const namespace = p.metadata.namespace;
  if (!namespace) throw new ObjectError(what, 'metadata.namespace', 'is required');
  const spec = p.spec;
  const types = spec.policyTypes ?? [];
  types.forEach((t, i) => {
    if (t !== 'Ingress' && t !== 'Egress') throw new ObjectError(what, `spec.policyTypes.${i}`, `"${t}" is not a policy type (Ingress, Egress)`);
  });
  const egressRules = (spec.egress ?? []).map((r, i) => ruleOf(r.to, r.ports, what, `spec.egress.${i}`, 'to'));
  const ingressRules = (spec.ingress ?? []).map((r, i) => ruleOf(r.from, r.ports, what, `spec.ingress.${i}`, 'from'));
  const defaulted = types.length === 0;
  return {
    namespace,
    name: p.metadata.name,
    podSelector: spec.podSelector != null ? selectorOf(spec.podSelector, what, 'spec.podSelector') : { matchLabels: {}, matchExpressions: [] },
    ingress: defaulted || types.includes('Ingress'),
    egress: defaulted ? egressRules.length > 0 : types.includes('Egress'),
    ingressRules,
    egressRules,
  };
}

export function parsePod(raw: unknown): Pod {
  const what = nameOf(raw, 'Pod');
  const p = structure(podSchema, raw, what);
  const namespace = p.metadata.namespace;
  if (!namespace) throw new ObjectError(what, 'metadata.namespace', 'is required');
  const ips = new Set<string>();
  const listed = p.status?.podIPs?.map((x) => x.ip) ?? [];
  for (const ip of [...listed, ...(p.status?.podIP ? [p.status.podIP] : [])]) {
    if (isV6(ip)) continue;
    if (parseIPv4(ip) === undefined) throw new ObjectError(what, 'status.podIPs', `"${ip}" is not an IP address`);
    ips.add(ip);
  }
  const ports: ContainerPort[] = [];
  (p.spec?.containers ?? []).forEach((c, i) =>
    (c.ports ?? []).forEach((cp, j) => {
      const f = `spec.containers.${i}.ports.${j}`;
      if (cp.containerPort < 1 || cp.containerPort > 65535) throw new ObjectError(what, `${f}.containerPort`, `${cp.containerPort} is not a port (1-65535)`);
      ports.push({ name: cp.name ?? undefined, port: cp.containerPort, protocol: protocolOf(cp.protocol, what, `${f}.protocol`) });
    }),
  );
  return {
    namespace,
    name: p.metadata.name,
    labels: { ...(p.metadata.labels ?? {}) },
    ips: [...ips],
    nodeName: p.spec?.nodeName ?? undefined,
    hostNetwork: p.spec?.hostNetwork ?? false,
    phase: p.status?.phase ?? undefined,
    ports,
  };
}

export function parseNamespace(raw: unknown): Namespace {
  const what = nameOf(raw, 'Namespace');
  const n = structure(namespaceSchema, raw, what);
  return { name: n.metadata.name, labels: { [METADATA_NAME_LABEL]: n.metadata.name, ...(n.metadata.labels ?? {}) } };
}
