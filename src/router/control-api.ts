/** The operator's endpoints of the router API: report, summary, connect, forget, rmpeer, expose, hide. */
import { BadRequestError } from '../common/errors';
import { isMac } from '../common/ip';
import type { ApiServer } from './http';
import type { Report, Summary } from './report';

export interface ControlComponents {
  report(): Report;
  summary(): Summary;
  /** The addresses given by flags and `weft connect`. */
  staticPeers: { add(addrs: readonly string[]): void; remove(addrs: readonly string[]): string[] };
  mesh: {
    forget(addrs: readonly string[]): string[];
    peers(): { name: string; nickname: string }[];
    removePeer(name: string): void;
  };
  ipam: { rmpeer(peer: string): Promise<{ addresses: number }>; owners(): Iterable<string>; status(): { status: string } };
  bridge: { expose(cidrs: readonly string[], ipamStatus: () => string): Promise<string[]>; hide(cidrs: readonly string[]): Promise<string[]> };
  /** Reprograms the data path (a removed peer's entries go at once). */
  reprogram(): void;
}

function strings(b: unknown, field: string): string[] {
  const v = (b as Record<string, unknown> | undefined)?.[field];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new BadRequestError(`${field} must be a list of strings`);
  return v as string[];
}

export class ControlApi {
  constructor(private readonly c: ControlComponents) {}

  register(api: ApiServer): void {
    const c = this.c;
    api
      .on('GET', '/v1/report', () => c.report())
      .on('GET', '/v1/summary', () => c.summary())
      .on('POST', '/v1/connect', (b) => {
        const addrs = strings(b, 'addresses');
        for (const a of addrs) if (!/^[\w.-]+(:\d{1,5})?$/.test(a)) throw new BadRequestError(`"${a}" is not HOST or HOST:PORT`);
        c.staticPeers.add(addrs);
        return { connecting: addrs };
      })
      .on('POST', '/v1/forget', (b) => {
        const addrs = strings(b, 'addresses');
        const forgotten = c.mesh.forget(addrs);
        c.staticPeers.remove(addrs);
        return { forgotten };
      })
      .on('POST', '/v1/rmpeer', async (b) => {
        const [peer] = strings(b, 'peers');
        const target = this.resolvePeer(peer ?? '');
        const r = await c.ipam.rmpeer(target);
        c.mesh.removePeer(target);
        c.reprogram();
        return { peer: target, addresses: r.addresses };
      })
      .on('POST', '/v1/expose', async (b) => ({ exposed: await c.bridge.expose(strings(b, 'addresses'), () => c.ipam.status().status) }))
      .on('POST', '/v1/hide', async (b) => ({ hidden: await c.bridge.hide(strings(b, 'addresses')) }));
  }

  /** A peer named by its name or nickname (or an owner of space no longer in the topology). */
  private resolvePeer(p: string): string {
    const all = this.c.mesh.peers();
    const hit = all.find((e) => e.name === p.toLowerCase()) ?? all.find((e) => e.nickname === p);
    if (hit) return hit.name;
    if (isMac(p) && [...this.c.ipam.owners()].includes(p.toLowerCase())) return p.toLowerCase();
    throw new BadRequestError(`no peer named "${p}"`);
  }
}
