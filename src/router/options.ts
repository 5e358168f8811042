/** `weft router` options, validated with zod; flag names are part of the contract (DESIGN.md). */
import * as z from 'zod/mini';
import { DEFAULT_BRIDGE, DEFAULT_SOCKET, IFNAME_RE } from '../common/netconf';
import { DEFAULT_STATE_DIR } from '../common/spool';
import { LEVELS, type Level } from '../common/log';

export const routerOptionsSchema = z.object({
  peers: z.array(z.string()),
  name: z.optional(z.string()),
  nickname: z.optional(z.string()),
  stateDir: z.string(),
  socket: z.string(),
  ipallocRange: z.string(),
  ipallocDefaultSubnet: z.optional(z.string()),
  ipallocInit: z.optional(z.string()),
  port: z.int().check(z.minimum(1), z.maximum(65535)),
  bridge: z.string().check(z.regex(IFNAME_RE, 'must be a valid interface name')),
  mtu: z.optional(z.int().check(z.minimum(576, 'must be at least 576'), z.maximum(65485, 'must be at most 65485'))),
  passwordFile: z.optional(z.string()),
  metricsAddr: z.string(),
  advertiseAddr: z.optional(z.string()),
  masquerade: z.boolean(),
  logLevel: z.enum(LEVELS as unknown as [Level, ...Level[]]),
  logFile: z.optional(z.string()),
});

export type RouterOptions = z.infer<typeof routerOptionsSchema>;

export const ROUTER_DEFAULTS = {
  stateDir: DEFAULT_STATE_DIR,
  socket: DEFAULT_SOCKET,
  ipallocRange: '10.32.0.0/12',
  port: 6783,
  bridge: DEFAULT_BRIDGE,
  metricsAddr: '127.0.0.1:6782',
  masquerade: true,
  logLevel: 'info' as Level,
};
