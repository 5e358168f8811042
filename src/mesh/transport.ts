/**
 * How mesh connections are made: TCP here; the simulation passes an in-memory network with
 * the same shape, so the whole mesh runs without sockets.
 */
import { createServer, connect } from 'node:net';
import type { Duplex } from 'node:stream';

/** A connected byte stream; `net.Socket` is one. */
export interface TransportSocket extends Duplex {
  localAddress?: string;
  remoteAddress?: string;
  remotePort?: number;
}

export interface MeshTransport {
  /** Accepts connections on host:port until the returned close function is called. */
  listen(port: number, host: string, accept: (s: TransportSocket) => void): Promise<() => Promise<void>>;
  /** Starts a connection; the socket emits 'connect' once connected, 'error' on failure. */
  dial(host: string, port: number): TransportSocket;
}

export const tcpTransport: MeshTransport = {
  async listen(port, host, accept) {
    const server = createServer((s) => {
      s.setNoDelay(true);
      accept(s);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return () => new Promise<void>((r) => server.close(() => r()));
  },
  dial(host, port) {
    const s = connect({ host, port });
    s.setNoDelay(true);
    return s;
  },
};
