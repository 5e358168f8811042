/** CNI spec versions weft-net speaks, and conversion of its result between them. */
import { VersionError } from '../common/errors';

export const PLUGIN_VERSION = '1.1.0';
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** -1, 0 or 1 as a is older, equal or newer than b (dotted numeric versions). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** Throws VersionError unless `v` is supported and, for the verb, at least `min`. */
export function requireVersion(v: string, verb: string, min?: string): void {
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new VersionError(`cniVersion ${v} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  if (min && compareVersions(v, min) < 0) throw new VersionError(`${verb} needs cniVersion ${min} or later, config has ${v}`);
}

export interface CniInterface {
  name: string;
  mac: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}
export interface CniIp {
  address: string;
  gateway?: string;
  interface?: number;
  version?: '4' | '6';
}
export interface CniRoute {
  dst: string;
  gw?: string;
}
/** A result in the 1.x shape, which is what ADD builds. */
export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIp[];
  routes: CniRoute[];
  dns: Record<string, unknown>;
}

/**
 * Converts a 1.x result to `version`: 1.0.0/1.1.0 as is; 0.3.x/0.4.0 get `version` on each IP
 * and lose interface fields those versions do not know.
 */
export function convertResult(r: CniResult, version: string): CniResult {
  if (compareVersions(version, '1.0.0') >= 0) return { ...r, cniVersion: version };
  return {
    ...r,
    cniVersion: version,
    interfaces: r.interfaces.map(({ name, mac, sandbox }) => (sandbox === undefined ? { name, mac } : { name, mac, sandbox })),
    ips: r.ips.map((ip) => ({ version: ip.address.includes(':') ? '6' : '4', ...ip })),
  };
}
