/** Traffic helpers shared by the data-path tests. */
import { spawn } from 'node:child_process';
import type { Netns } from './netns';

/**
 * Sends `bytes` over one TCP connection from `client` to a server in `server` listening on
 * `addr`; returns what the server counted when the client closed (a node process each side).
 */
export async function tcpStream(server: Netns, client: Netns, addr: string, bytes: number, port = 5202): Promise<number> {
  const srvScript = `const s=require('net').createServer(c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>{process.stdout.write(String(n));c.end();s.close()})});s.listen(${port},'${addr}',()=>process.stderr.write('listening'))`;
  const srv = spawn('nsenter', [`--net=${server.path}`, '--', process.execPath, '-e', srvScript], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  srv.stdout!.on('data', (d: Buffer) => (out += d));
  srv.stderr!.on('data', (d: Buffer) => (err += d));
  const closed = new Promise<void>((r) => srv.once('close', () => r()));
  try {
    const end = Date.now() + 10_000;
    while (!err.includes('listening')) {
      if (Date.now() > end || srv.exitCode !== null) throw new Error(`TCP server did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const cliScript = `const c=require('net').connect(${port},'${addr}');const b=Buffer.alloc(1<<20,7);let left=${bytes};const w=()=>{while(left>0){const n=Math.min(left,b.length);left-=n;if(!c.write(b.subarray(0,n)))return c.once('drain',w)}c.end()};c.on('connect',w);c.on('close',()=>process.exit(0));c.on('error',e=>{console.error(e.message);process.exit(1)})`;
    const r = client.tryRun(process.execPath, ['-e', cliScript], 120_000);
    if (!r.ok) throw new Error(`TCP client: ${r.err}`);
    await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000))]);
    return Number(out);
  } finally {
    srv.kill('SIGKILL');
  }
}
