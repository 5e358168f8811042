/**
 * CHECK's verdict: what ADD made (as recorded and as the runtime's prevResult says) against
 * what the kernel shows. One function, used by the router and by the plugin when it has to
 * look for itself (a router older than the plugin).
 */
import { CheckFailedError } from './errors';

/** What CHECK reads from the kernel; undefined members are missing. */
export interface LinkFacts {
  bridge?: { up: boolean };
  /** The host end of the pair. */
  host?: { master?: string };
  /** The pod's interface, its IPv4 addresses (A.B.C.D/P) and default routes. */
  pod?: { up: boolean; addresses: string[]; defaultVia: { gateway?: string; dev?: string }[] };
}

export interface CheckSubject {
  containerId: string;
  ifname: string;
  netns: string;
  bridge: string;
  hostName: string;
  /** The router's record, undefined when it holds none. */
  record?: { address: string; gateway?: string };
  /** Addresses prevResult gives the interface. */
  addresses: string[];
  /** The gateway prevResult gives them (the record's own wins when it has one). */
  gateway?: string;
}

/** Throws CheckFailedError naming the first difference; returns when all is as ADD left it. */
export function verifyAttachment(s: CheckSubject, f: LinkFacts): void {
  const fail = (m: string): never => {
    throw new CheckFailedError(m);
  };
  const rec = s.record ?? fail(`the router holds no address for ${s.containerId}/${s.ifname}`);
  if (!f.bridge) fail(`bridge ${s.bridge} is missing`);
  else if (!f.bridge.up) fail(`bridge ${s.bridge} is down`);
  if (!f.host) fail(`host veth ${s.hostName} is missing`);
  else if (f.host.master !== s.bridge) fail(`host veth ${s.hostName} is not attached to ${s.bridge} (master: ${f.host.master ?? 'none'})`);
  const pod = f.pod ?? fail(`interface ${s.ifname} is missing in ${s.netns}`);
  if (!pod.up) fail(`interface ${s.ifname} is down in ${s.netns}`);
  for (const a of s.addresses) if (!pod.addresses.includes(a)) fail(`address ${a} is missing on ${s.ifname}`);
  if (!pod.addresses.includes(rec.address)) fail(`address ${rec.address} held by the router is missing on ${s.ifname}`);
  const gw = rec.gateway ?? s.gateway;
  if (gw && !pod.defaultVia.some((r) => r.gateway === gw && r.dev === s.ifname)) fail(`default route via ${gw} on ${s.ifname} is missing`);
}
