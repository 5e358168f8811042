/**
 * An in-memory network for the mesh: every simulated router gets a MeshTransport whose
 * connections are stream pairs inside this process. Bytes are counted per router and
 * direction. Connecting takes one timer turn, so a virtual clock drives it like everything else.
 */
import { duplexPair } from 'node:stream';
import type { MeshTransport, TransportSocket } from '../../src/mesh/transport';

export interface Counters {
  bytesOut: number;
  bytesIn: number;
  framesOut: number;
}

export class MemNet {
  private readonly listeners = new Map<string, (s: TransportSocket) => void>();
  /** Addresses whose routers are down (dials fail with ECONNREFUSED). */
  readonly down = new Set<string>();

  transport(host: string): MeshTransport {
    return {
      listen: async (port, _addr, accept) => {
        const key = `${host}:${port}`;
        this.listeners.set(key, accept);
        return async () => void this.listeners.delete(key);
      },
      dial: (toHost, port) => {
        const [mine, theirs] = duplexPair() as unknown as [TransportSocket, TransportSocket];
        const key = `${toHost}:${port}`;
        const localPort = 30000 + Math.floor(Math.random() * 30000);
        Object.assign(mine, { localAddress: host, remoteAddress: toHost, remotePort: port });
        Object.assign(theirs, { localAddress: toHost, remoteAddress: host, remotePort: localPort });
        setTimeout(() => {
          const accept = this.listeners.get(key);
          if (!accept || this.down.has(toHost)) {
            const err = Object.assign(new Error(`connect ECONNREFUSED ${key}`), { code: 'ECONNREFUSED' });
            mine.destroy(err);
            return;
          }
          // as over TCP: the dialler is connected before anything the acceptor sends arrives
          mine.emit('connect');
          accept(theirs);
        }, 1);
        return mine;
      },
    };
  }
}
