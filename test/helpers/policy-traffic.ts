/**
 * Traffic that outlives a policy change, for the policy tests: a stream of new UDP flows and a
 * TCP connection held open, each run by Node inside a pod's namespace.
 */
import { spawn } from 'node:child_process';
import type { Netns } from './netns';

/** A pod as these helpers need it. */
export interface TrafficPod {
  key: string;
  ns: Netns;
}

/**
 * A UDP stream, one datagram every 2 ms, each from a new socket on a source port of its own
 * (from `basePort` up, below the ephemeral range the probes use): a new flow each time, checked
 * against the policy of its moment rather than let through as a flow seen before. Echoes are
 * counted (each waits up to 3 s).
 */
export function stream(from: TrafficPod, host: string, port: number, basePort: number) {
  const script = `
    const dgram = require('dgram'); let sent = 0, received = 0;
    const one = () => { const s = dgram.createSocket('udp4'); const t = setTimeout(() => s.close(), 3000);
      s.on('message', () => { received++; clearTimeout(t); s.close(); });
      s.bind(${basePort} + sent, () => s.send('x', ${port}, '${host}')); sent++; };
    const iv = setInterval(one, 2); process.stdout.write('started\\n');
    process.stdin.on('data', () => { clearInterval(iv); setTimeout(() => { process.stdout.write(JSON.stringify({ sent, received }) + '\\n'); process.exit(0); }, 3100); });`;
  const child = spawn('nsenter', [`--net=${from.ns.path}`, '--', 'node', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  let onStart: () => void;
  const started = new Promise<void>((r) => (onStart = r));
  child.stdout.on('data', (d) => {
    out += d;
    if (out.includes('started')) onStart();
  });
  return {
    started,
    stop: () =>
      new Promise<{ sent: number; received: number }>((resolve, reject) => {
        child.on('close', () => {
          try {
            resolve(JSON.parse(out.split('\n').filter((l) => l.startsWith('{'))[0]!));
          } catch {
            reject(new Error(`stream from ${from.key}: ${out}`));
          }
        });
        child.stdin.end('stop\n');
      }),
  };
}

/** One TCP connection held open; `roundTrip` sends a line and waits (2 s at most) for its echo. */
export function longConnection(from: TrafficPod, host: string, port: number) {
  const script = `
    const c = require('net').connect(${port}, '${host}'); let buf = '';
    c.on('connect', () => process.stdout.write('ready\\n'));
    c.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { process.stdout.write('echo ' + buf.slice(0, i) + '\\n'); buf = buf.slice(i + 1); } });
    c.on('error', (e) => { process.stdout.write('error ' + e.message + '\\n'); });
    process.stdin.on('data', (d) => { for (const l of String(d).split('\\n').filter(Boolean)) { if (l === 'quit') { c.destroy(); process.exit(0); } c.write(l + '\\n'); } });`;
  const child = spawn('nsenter', [`--net=${from.ns.path}`, '--', 'node', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  let seq = 0;
  const waitFor = (needle: string, ms: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${what}: no "${needle}" within ${ms} ms; output: ${out}`)), ms);
      const check = () => {
        if (out.includes(needle)) {
          clearTimeout(t);
          child.stdout.off('data', check);
          resolve();
        }
      };
      child.stdout.on('data', check);
      check();
    });
  child.stdout.on('data', (d) => (out += d));
  return {
    ready: waitFor('ready\n', 5000, `connect ${from.key} -> ${host}:${port}`),
    async roundTrip() {
      const n = `msg-${++seq}`;
      child.stdin.write(`${n}\n`);
      await waitFor(`echo ${n}\n`, 2000, `round trip ${from.key} -> ${host}:${port}`);
    },
    close: () =>
      new Promise<void>((resolve) => {
        child.on('close', () => resolve());
        child.stdin.end('quit\n');
      }),
  };
}
