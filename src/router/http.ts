/** A small JSON-over-HTTP server on a unix socket (mode 0600), for the plugin and the CLI. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { promises as fs } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { BadRequestError, errorBody, WeftError } from '../common/errors';
import type { Logger } from '../common/log';

export type Handler = (body: unknown, query: URLSearchParams) => Promise<unknown> | unknown;

const STATUS_OF: Record<string, number> = {
  'bad-request': 400,
  config: 400,
  'address-in-use': 409,
  'no-space': 503,
  'router-unavailable': 503,
};

const MAX_BODY = 1 << 20;

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new BadRequestError('request body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      if (!text) return resolve(undefined);
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new BadRequestError('request body is not JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** Is something answering on this unix socket? */
export function socketAlive(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.on('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.on('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

export class ApiServer {
  private readonly routes = new Map<string, Handler>();
  private server: Server | undefined;

  constructor(private readonly log: Logger) {}

  on(method: 'GET' | 'POST', path: string, h: Handler): this {
    this.routes.set(`${method} ${path}`, h);
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://weft');
    const h = this.routes.get(`${req.method} ${url.pathname}`);
    let status = 200;
    let out: unknown;
    try {
      if (!h) {
        status = 404;
        out = { error: { kind: 'not-found', message: `no such endpoint: ${req.method} ${url.pathname}` } };
      } else {
        out = await h(await readBody(req), url.searchParams);
      }
    } catch (e) {
      status = e instanceof WeftError ? (STATUS_OF[e.kind] ?? 500) : 500;
      if (status === 500) this.log.error({ path: url.pathname, err: (e as Error).message }, 'API handler failed');
      out = errorBody(e);
    }
    const text = JSON.stringify(out);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** Listens on `path`, refusing to take over a socket another process still answers on. */
  async listen(path: string): Promise<void> {
    await fs.mkdir(dirname(path), { recursive: true, mode: 0o755 });
    if (await socketAlive(path)) throw new Error(`another router already answers on ${path}`);
    await fs.rm(path, { force: true });
    const server = createServer((req, res) => {
      // no Date header: formatting it pages in the executable's ICU data (src/common/time.ts)
      res.sendDate = false;
      void this.handle(req, res);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // create the socket with 0600 from the start, not chmod after
      const old = process.umask(0o177);
      server.listen(path, () => {
        process.umask(old);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
