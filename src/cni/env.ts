/** The CNI_* environment, checked per verb as the CNI spec and real runtimes need. */
import { EnvError } from '../common/errors';
import { IFNAME_RE, NAME_RE } from '../common/netconf';

export const VERBS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'] as const;
export type Verb = (typeof VERBS)[number];

export interface CniEnv {
  command: Verb;
  containerId: string;
  /** Empty on DEL when the netns is already gone. */
  netns: string;
  ifname: string;
  args: CniArgs;
}

/** CNI_ARGS after parsing; `ips`/`mac` come from IP= and MAC=. */
export interface CniArgs {
  ips: string[];
  mac?: string;
  podNamespace?: string;
  podName?: string;
  podUid?: string;
  infraContainerId?: string;
}

const KNOWN_ARGS = new Set(['IgnoreUnknown', 'IP', 'MAC', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID']);

/** Parses `K=V;K=V` (split on the first '='; empty parts skipped). Unknown keys fail unless IgnoreUnknown is set. */
export function parseCniArgs(s: string | undefined): CniArgs {
  const pairs: [string, string][] = [];
  for (const part of (s ?? '').split(';')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new EnvError('CNI_ARGS', `"${part}" is not KEY=VALUE`);
    pairs.push([part.slice(0, eq), part.slice(eq + 1)]);
  }
  const get = (k: string) => pairs.find(([key]) => key === k)?.[1];
  const ignore = get('IgnoreUnknown');
  const ignoreUnknown = ignore !== undefined && /^(1|true)$/i.test(ignore);
  if (!ignoreUnknown) {
    const unknown = pairs.find(([k]) => !KNOWN_ARGS.has(k));
    if (unknown) throw new EnvError('CNI_ARGS', `unknown key ${unknown[0]} (set IgnoreUnknown=1 to allow it)`);
  }
  const ip = get('IP');
  return {
    ips: ip ? ip.split(',').filter(Boolean) : [],
    mac: get('MAC') || undefined,
    podNamespace: get('K8S_POD_NAMESPACE'),
    podName: get('K8S_POD_NAME'),
    podUid: get('K8S_POD_UID'),
    infraContainerId: get('K8S_POD_INFRA_CONTAINER_ID'),
  };
}

export function parseCommand(env: NodeJS.ProcessEnv): Verb | undefined {
  const c = env.CNI_COMMAND;
  if (c === undefined || c === '') return undefined;
  if (!(VERBS as readonly string[]).includes(c)) throw new EnvError('CNI_COMMAND', `unknown command "${c}" (expected one of ${VERBS.join(', ')})`);
  return c as Verb;
}

/** Validates the variables the verb needs; GC, STATUS and VERSION need none of the container fields. */
export function parseEnv(command: Verb, env: NodeJS.ProcessEnv): CniEnv {
  const perContainer = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  const containerId = env.CNI_CONTAINERID ?? '';
  const netns = env.CNI_NETNS ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (perContainer) {
    if (!containerId) throw new EnvError('CNI_CONTAINERID', 'is required');
    if (!NAME_RE.test(containerId)) throw new EnvError('CNI_CONTAINERID', `"${containerId}" must start with a letter or digit and hold only letters, digits, _ . -`);
    if (!ifname) throw new EnvError('CNI_IFNAME', 'is required');
    if (!IFNAME_RE.test(ifname)) throw new EnvError('CNI_IFNAME', `"${ifname}" is not a valid interface name (1-15 characters, not . or .., no / : or white space)`);
    if (command !== 'DEL' && !netns) throw new EnvError('CNI_NETNS', 'is required');
  }
  return { command, containerId, netns, ifname, args: perContainer ? parseCniArgs(env.CNI_ARGS) : { ips: [] } };
}
