/** The plugin's HTTP/1.1 client: answers split correctly, whatever the framing; broken ones refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseResponse, RouterClient } from '../../src/common/client';
import { NoSpaceError, RouterUnavailableError } from '../../src/common/errors';

test('parseResponse: content-length, chunked, and incomplete answers', () => {
  const cl = parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'));
  assert.deepEqual(cl, { status: 200, body: '{"a":1}' });
  const ch = parseResponse(Buffer.from('HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:2}\r\n0\r\n\r\n'));
  assert.deepEqual(ch, { status: 503, body: '{"a":2}' });
  assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"a":1}')), undefined, 'short body');
  assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3')), undefined, 'no end of headers');
  assert.equal(parseResponse(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n')), undefined, 'not HTTP');
});

test('RouterClient against node:http on a unix socket: JSON back, typed errors, deadline, no socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-client-'));
  const socket = join(dir, 's.sock');
  let server: Server | undefined;
  try {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.url === '/echo') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ method: req.method, got: body ? JSON.parse(body) : null })); // chunked: no length given
        } else if (req.url === '/full') {
          const text = JSON.stringify({ error: { kind: 'no-space', message: 'pool empty' } });
          res.writeHead(503, { 'content-length': Buffer.byteLength(text) });
          res.end(text);
        } else if (req.url === '/slow') {
          /* never answers */
        } else {
          res.writeHead(200, { 'content-length': 5 });
          res.end('nope!');
        }
      });
    });
    await new Promise<void>((r) => server!.listen(socket, r));
    const c = new RouterClient({ socket, timeoutMs: 500 });
    assert.deepEqual(await c.post('/echo', { x: 'é' }), { method: 'POST', got: { x: 'é' } });
    assert.deepEqual(await c.get('/echo'), { method: 'GET', got: null });
    await assert.rejects(c.get('/full'), (e: Error) => e instanceof NoSpaceError && e.message === 'pool empty');
    await assert.rejects(c.get('/text'), (e: Error) => e instanceof RouterUnavailableError && /non-JSON/.test(e.message));
    await assert.rejects(c.get('/slow'), (e: Error) => e instanceof RouterUnavailableError && /within 500 ms/.test(e.message));
    const gone = new RouterClient({ socket: join(dir, 'none.sock') });
    await assert.rejects(gone.get('/echo'), (e: Error) => e instanceof RouterUnavailableError && /no socket/.test(e.message));
  } finally {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});
