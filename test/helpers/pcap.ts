/**
 * Captures on an interface inside a test namespace (tcpdump -w) and reads the file back: just
 * enough of the classic pcap format and IPv4 for the tests to say what crossed the wire.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Netns } from './netns';

export interface Ipv4Packet {
  src: string;
  dst: string;
  proto: number;
  /** Fragment offset in bytes; 0 for a first fragment or an unfragmented packet. */
  fragOffset: number;
  /** UDP or TCP ports, on a first fragment. */
  sport?: number;
  dport?: number;
  /** Everything after the IP header. */
  payload: Buffer;
  /** The whole Ethernet frame. */
  frame: Buffer;
}

export class Capture {
  private constructor(
    private readonly proc: ChildProcess,
    readonly file: string,
    private err: { s: string },
  ) {}

  /** Starts tcpdump in `ns` on `iface` writing to `file`; resolves once it listens. */
  static async start(ns: Netns, iface: string, file: string, filter: string[] = []): Promise<Capture> {
    const err = { s: '' };
    const proc = spawn('nsenter', [`--net=${ns.path}`, '--', 'tcpdump', '-i', iface, '--immediate-mode', '-U', '-n', '-s', '0', '-w', file, ...filter], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.on('data', (d: Buffer) => (err.s += d.toString()));
    const end = Date.now() + 10_000;
    while (!/listening on/.test(err.s)) {
      if (proc.exitCode !== null) throw new Error(`tcpdump exited: ${err.s}`);
      if (Date.now() > end) {
        proc.kill('SIGKILL');
        throw new Error(`tcpdump did not start within 10 s: ${err.s}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return new Capture(proc, file, err);
  }

  /** Stops tcpdump (it flushes on SIGINT) and returns the IPv4 packets captured. */
  async stop(): Promise<Ipv4Packet[]> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const done = new Promise<void>((r) => this.proc.once('close', () => r()));
      this.proc.kill('SIGINT');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    }
    return parsePcap(readFileSync(this.file));
  }

  /** What tcpdump printed (its packet counts at the end). */
  get log(): string {
    return this.err.s;
  }
}

const ip = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** IPv4 packets of a classic little- or big-endian pcap file with Ethernet frames. */
export function parsePcap(f: Buffer): Ipv4Packet[] {
  const magic = f.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && f.readUInt32BE(0) !== 0xa1b2c3d4 && f.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? f.readUInt32LE(o) : f.readUInt32BE(o));
  if (u32(20) !== 1) throw new Error(`pcap link type ${u32(20)}, expected Ethernet`);
  const out: Ipv4Packet[] = [];
  for (let o = 24; o + 16 <= f.length; ) {
    const len = u32(o + 8);
    const frame = f.subarray(o + 16, o + 16 + len);
    o += 16 + len;
    if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ihl = (frame[14]! & 0x0f) * 4;
    const proto = frame[23]!;
    const fragOffset = (frame.readUInt16BE(20) & 0x1fff) * 8;
    const payload = frame.subarray(14 + ihl);
    const p: Ipv4Packet = { src: ip(frame, 26), dst: ip(frame, 30), proto, fragOffset, payload, frame };
    if ((proto === 17 || proto === 6) && fragOffset === 0 && payload.length >= 8) {
      p.sport = payload.readUInt16BE(0);
      p.dport = payload.readUInt16BE(2);
    }
    out.push(p);
  }
  return out;
}
