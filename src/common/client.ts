/**
 * Client of the router API over its unix socket. Every request has a deadline; a router that
 * is absent, refuses, or does not answer in time is a RouterUnavailableError, at once for the
 * first two.
 */
import { nodeHttp } from './lazy';
import { errorFromBody, RouterUnavailableError, type ErrorBody } from './errors';

export interface ClientOptions {
  socket: string;
  /** Deadline for one request in milliseconds (default 30 000). */
  timeoutMs?: number;
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
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = nodeHttp().request(
        {
          socketPath: socket,
          path,
          method,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : undefined,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString();
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : {};
            } catch {
              reject(new RouterUnavailableError(`router at ${socket} sent a non-JSON answer to ${method} ${path}`));
              return;
            }
            if ((res.statusCode ?? 500) >= 400) reject(errorFromBody(parsed as ErrorBody));
            else resolve(parsed as T);
          });
          res.on('error', (e) => {
            clearTimeout(timer);
            reject(new RouterUnavailableError(`router at ${socket}: ${e.message}`));
          });
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        reject(new RouterUnavailableError(`router at ${socket} did not answer ${method} ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const why = e.code === 'ENOENT' ? 'no socket (is `weft router` running?)' : e.message;
        reject(new RouterUnavailableError(`router at ${socket} unreachable: ${why}`));
      });
      req.end(payload);
    });
  }
}
