/**
 * The weft-net network configuration (what a runtime passes on stdin), validated with zod.
 * Unknown fields are tolerated, as the CNI spec asks.
 */
import * as z from 'zod/mini';
import { ConfigError, DecodeError } from './errors';
import { LEVELS, type Level } from './log';

/** Container IDs and network names: the CNI spec's character rule. */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** Linux interface names: 1-15 chars, no '/', ':' or white space, not '.' or '..'. */
export const IFNAME_RE = /^(?!\.{1,2}$)[^/:\s]{1,15}$/;

export const DEFAULT_SOCKET = '/run/weft/weft.sock';
export const DEFAULT_BRIDGE = 'weave';

const ipamSchema = z.looseObject({
  type: z.optional(z.string()),
  subnet: z.optional(z.string()),
});

export const netConfSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string().check(z.regex(NAME_RE, 'must start with a letter or digit and hold only letters, digits, _ . -')),
  type: z.string(),
  bridge: z.optional(z.string().check(z.regex(IFNAME_RE, 'must be a valid interface name (1-15 characters, no / : or spaces)'))),
  mtu: z.optional(z.int().check(z.minimum(68, 'must be at least 68'), z.maximum(65535, 'must be at most 65535'))),
  hairpinMode: z.optional(z.boolean()),
  socket: z.optional(z.string().check(z.minLength(1, 'must not be empty'))),
  logLevel: z.optional(z.enum(LEVELS as unknown as [Level, ...Level[]])),
  logFile: z.optional(z.string()),
  ipMasq: z.optional(z.boolean()),
  ipam: z.optional(ipamSchema),
  dns: z.optional(z.looseObject({})),
  args: z.optional(z.looseObject({ cni: z.optional(z.looseObject({ ips: z.optional(z.array(z.string())) })) })),
  runtimeConfig: z.optional(z.record(z.string(), z.unknown())),
  prevResult: z.optional(z.unknown()),
});

export type NetConf = z.infer<typeof netConfSchema>;

/** Formats the first zod issue as `field: message`, the field as a dotted path. */
export function zodToConfigError(error: z.core.$ZodError, prefix = ''): ConfigError {
  const issue = error.issues[0]!;
  const field = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
  const msg = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
  return new ConfigError(field || '(root)', msg);
}

/** Parses stdin bytes into a config: DecodeError when not a JSON object, ConfigError when invalid. */
export function parseNetConf(stdin: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new DecodeError(`stdin is not valid JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new DecodeError('stdin must be a JSON object');
  // reportInput: a field of the wrong type is named as such, not as missing
  const r = netConfSchema.safeParse(raw, { reportInput: true });
  if (!r.success) throw zodToConfigError(r.error);
  return r.data;
}

/** Looks up a runtimeConfig capability key case-insensitively (runtimes differ in casing). */
export function capability(conf: NetConf, key: string): unknown {
  const rc = conf.runtimeConfig;
  if (!rc) return undefined;
  const want = key.toLowerCase();
  for (const [k, v] of Object.entries(rc)) if (k.toLowerCase() === want) return v;
  return undefined;
}
