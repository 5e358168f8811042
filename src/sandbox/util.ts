/** Small helpers of the sandbox: file checks, log tails, durations, the mesh summary line. */
import { promises as fs } from 'node:fs';
import { readIfExists } from '../common/fsutil';
import type { MeshWait } from './types';

export function podNo(name: string): number {
  return Number(name.slice(name.lastIndexOf('-p') + 2));
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function tail(file: string, lines: number): Promise<string> {
  const text = (await readIfExists(file).catch(() => undefined)) ?? '';
  return text.trimEnd().split('\n').slice(-lines).map((l) => `    ${l}`).join('\n') || '    (empty)';
}

export function fmtMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function describeMesh(m: MeshWait, n: number): string {
  const per = m.peers.map((p, i) => `host${i + 1}:${p ?? '?'}/${m.established[i] ?? '?'}`).join(' ');
  if (m.complete) return `full mesh: ${n} peers each, ${m.established.reduce<number>((a, b) => a + (b ?? 0), 0)} established connections`;
  return `incomplete (${m.reason}); peers/established seen ${per}`;
}

