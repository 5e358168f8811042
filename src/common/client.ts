/**
 * Client of the router API over its unix socket. Every request has a deadline; a router that
 * is absent, refuses, or does not answer in time is a RouterUnavailableError, at once for the
 * first two.
 *
 * Why it is this way: this is the plugin's one request per CNI call, and the plugin starts
 * afresh each time. node:http cannot be part of the plugin's V8 startup snapshot (its parser
 * holds native handles) and costs several milliseconds to load on every call, while node:net
 * can be. So the client speaks the little HTTP/1.1 it needs over a net socket: one request
 * with `Connection: close`, the answer read to the end (content-length or chunked).
 */
import * as net from 'node:net';
import { errorFromBody, RouterUnavailableError, type ErrorBody } from './errors';

export interface ClientOptions {
  socket: string;
  /** Deadline for one request in milliseconds (default 30 000). */
  timeoutMs?: number;
}

interface Answer {
  status: number;
  body: string;
}

/** Splits a raw HTTP/1.1 response; undefined when it is not one. */
export function parseResponse(raw: Buffer): Answer | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  if (!m) return undefined;
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  let body = raw.subarray(end + 4);
  if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const nl = body.indexOf('\r\n', at);
      if (nl < 0) return undefined;
      const size = parseInt(body.subarray(at, nl).toString('latin1'), 16);
      if (!Number.isFinite(size)) return undefined;
      if (size === 0) break;
      parts.push(body.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has('content-length')) {
    const n = Number(headers.get('content-length'));
    if (!Number.isInteger(n) || body.length < n) return undefined;
    body = body.subarray(0, n);
  }
  return { status: Number(m[1]), body: body.toString('utf8') };
}

export class RouterClient {
  constructor(private readonly opts: ClientOptions) {}

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { socket } = this.opts;
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    const payload = body === undefined ? '' : JSON.stringify(body);
    const head =
      `${method} ${path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n` +
      (payload ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n` : '') +
      '\r\n';
    return new Promise<T>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let settled = false;
      const finish = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.destroy();
        f();
      };
      const s = net.connect(socket);
      const timer = setTimeout(
        () => finish(() => reject(new RouterUnavailableError(`router at ${socket} did not answer ${method} ${path} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      // no half-close: the server answers, then closes (Connection: close)
      s.on('connect', () => s.write(head + payload));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () =>
        finish(() => {
          const res = parseResponse(Buffer.concat(chunks));
          if (!res) return reject(new RouterUnavailableError(`router at ${socket} sent an incomplete answer to ${method} ${path}`));
          let parsed: unknown;
          try {
            parsed = res.body ? JSON.parse(res.body) : {};
          } catch {
            return reject(new RouterUnavailableError(`router at ${socket} sent a non-JSON answer to ${method} ${path}`));
          }
          if (res.status >= 400) reject(errorFromBody(parsed as ErrorBody));
          else resolve(parsed as T);
        }),
      );
      s.on('error', (e: NodeJS.ErrnoException) =>
        finish(() => {
          const why = e.code === 'ENOENT' ? 'no socket (is `weft router` running?)' : e.message;
          reject(new RouterUnavailableError(`router at ${socket} unreachable: ${why}`));
        }),
      );
    });
  }
}
