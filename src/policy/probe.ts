/**
 * Reachability probes between pods: a small TCP/UDP echo server to run in a pod's network
 * namespace, and a prober that tries many targets at once, each with its own deadline. Used by
 * the policy tests and, through `weft probe-agent`, by the sandbox's reachability matrix.
 *
 * A probe counts as connected only when its token comes back: for TCP the handshake and data
 * in both directions, for UDP a datagram there and back. A refused TCP connection is reported
 * as an error (the target is reachable but serves nothing: a broken test set-up, not a policy).
 */
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';

export type ProbeProtocol = 'tcp' | 'udp';

export interface ServeSpec {
  protocol: ProbeProtocol;
  port: number;
}

export interface ProbeTarget {
  protocol: ProbeProtocol;
  host: string;
  port: number;
  /** Give up after this long (default 1000 ms). */
  timeoutMs?: number;
}

export interface ProbeResult extends ProbeTarget {
  connected: boolean;
  ms: number;
  /** 'timeout', 'refused', or another failure. */
  error?: string;
}

/** Parses `tcp:80` / `udp:81`. */
export function parseServeSpec(s: string): ServeSpec {
  const m = /^(tcp|udp):(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`"${s}": expected tcp:PORT or udp:PORT`);
  return { protocol: m[1] as ProbeProtocol, port: Number(m[2]) };
}

/** Echo servers on every spec; resolves once all listen, with a function that closes them. */
export async function serve(specs: readonly ServeSpec[], host = '0.0.0.0'): Promise<() => Promise<void>> {
  const closers: (() => Promise<void>)[] = [];
  try {
    for (const s of specs) {
      if (s.protocol === 'tcp') {
        const srv = net.createServer((sock) => {
          sock.on('error', () => sock.destroy());
          sock.setTimeout(60_000, () => sock.destroy());
          sock.pipe(sock);
        });
        await new Promise<void>((res, rej) => srv.once('error', rej).listen(s.port, host, () => res()));
        closers.push(() => new Promise((res) => srv.close(() => res())));
      } else {
        const sock = dgram.createSocket('udp4');
        sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
        sock.on('error', () => undefined);
        await new Promise<void>((res, rej) => {
          sock.once('error', rej);
          sock.bind(s.port, host, () => res());
        });
        closers.push(() => new Promise((res) => sock.close(() => res())));
      }
    }
  } catch (e) {
    await Promise.all(closers.map((c) => c()));
    throw e;
  }
  return async () => {
    await Promise.all(closers.map((c) => c()));
  };
}

function tcpProbe(t: ProbeTarget, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const token = `weft-probe-${Math.random().toString(16).slice(2)}\n`;
    let got = '';
    const sock = net.connect({ host: t.host, port: t.port });
    const finish = (err?: string) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(token));
    sock.on('data', (d) => {
      got += d.toString();
      if (got.includes(token)) finish();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNREFUSED' ? 'refused' : (e.code ?? e.message)));
    sock.on('close', () => finish(got.includes(token) ? undefined : 'closed'));
  });
}

function udpProbe(t: ProbeTarget, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const token = Buffer.from(`weft-probe-${Math.random().toString(16).slice(2)}`);
    const sock = dgram.createSocket('udp4');
    let resend: NodeJS.Timeout | undefined;
    const finish = (err?: string) => {
      clearTimeout(timer);
      clearInterval(resend);
      sock.close();
      resolve(err);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    sock.on('message', (msg) => {
      if (msg.equals(token)) finish();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    const send = () => sock.send(token, t.port, t.host, (e) => e && finish((e as NodeJS.ErrnoException).code ?? e.message));
    // a few copies, from the same port: one datagram lost to an unresolved neighbour is not a verdict
    sock.bind(0, () => {
      send();
      resend = setInterval(send, Math.max(50, Math.floor(timeoutMs / 4)));
    });
  });
}

/** Probes every target at once; each ends at its own deadline. */
export async function probeAll(targets: readonly ProbeTarget[], defaultTimeoutMs = 1000): Promise<ProbeResult[]> {
  return Promise.all(
    targets.map(async (t) => {
      const timeoutMs = t.timeoutMs ?? defaultTimeoutMs;
      const t0 = performance.now();
      const error = t.protocol === 'tcp' ? await tcpProbe(t, timeoutMs) : await udpProbe(t, timeoutMs);
      return { ...t, timeoutMs, connected: error === undefined, ms: Math.round((performance.now() - t0) * 10) / 10, ...(error ? { error } : {}) };
    }),
  );
}
