/**
 * What the routers' own data path (the sleeve) needs of the mesh, per datagram: the next hop
 * towards a peer, a neighbour's underlay address, and the data keys of the connection to a
 * neighbour. Cached here and refreshed on the mesh's events, so the hot path does map lookups
 * only and the data path never reaches into the mesh.
 */
import type { DataKeys } from '../crypto/aead';
import type { Mesh } from './mesh';

/** Next hops and underlay addresses of peers (the sleeve's `SleeveRoutes`). */
export interface PeerRoutes {
  nextHop(peer: string): string | undefined;
  endpoint(peer: string): { ip: string } | undefined;
}

/** Per-neighbour data keys for one label (the sleeve's `SleeveKeys`). */
export interface PeerKeys {
  dataKeys(peer: string): DataKeys | undefined;
}

export function peerLinks(mesh: Pick<Mesh, 'nextHop' | 'peers' | 'dataKeys' | 'events'>, label: string): { routes: PeerRoutes; keys: PeerKeys } {
  let underlay = new Map<string, string>();
  const keys = new Map<string, DataKeys | undefined>();
  const refresh = () => {
    const m = new Map<string, string>();
    for (const p of mesh.peers()) if (p.meta.underlay) m.set(p.name, p.meta.underlay);
    underlay = m;
  };
  refresh();
  mesh.events.on('topology', refresh);
  mesh.events.on('connection', (peer) => keys.delete(peer));
  mesh.events.on('disconnection', (peer) => (peer ? keys.delete(peer) : keys.clear()));
  return {
    routes: {
      nextHop: (p) => mesh.nextHop(p),
      endpoint: (p) => {
        const ip = underlay.get(p);
        return ip === undefined ? undefined : { ip };
      },
    },
    keys: {
      dataKeys: (p) => {
        if (keys.has(p)) return keys.get(p);
        const k = mesh.dataKeys(p, label);
        // only a connected peer's keys are kept; none is asked again next time
        if (k) keys.set(p, k);
        return k;
      },
    },
  };
}
