/**
 * IPv4 arithmetic on plain uint32 numbers, with parsing and validation by ip-num.
 *
 * Allocation tables hold many addresses, so they store numbers, not objects; ip-num checks
 * what users type (its validator explains why a string is wrong, which goes into the error).
 */
import { IPv4, Validator } from 'ip-num';

/** An IPv4 network: `base` is the first address (aligned to `prefix`). */
export interface Cidr {
  readonly base: number;
  readonly prefix: number;
}

/** An address together with the prefix length of its subnet, as in `10.32.0.5/12`. */
export interface AddrWithPrefix {
  readonly addr: number;
  readonly prefix: number;
}

export function parseIPv4(s: string): number | undefined {
  const [ok] = Validator.isValidIPv4String(s);
  if (!ok) return undefined;
  return Number(IPv4.fromString(s).getValue());
}

/** Parses `A.B.C.D/P` (address bits beyond the prefix allowed) or, with `defaultPrefix`, a bare address. */
export function parseAddrWithPrefix(s: string, defaultPrefix?: number): AddrWithPrefix | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) {
    const addr = parseIPv4(s);
    return addr === undefined || defaultPrefix === undefined ? undefined : { addr, prefix: defaultPrefix };
  }
  const [ok] = Validator.isValidIPv4CidrNotation(s);
  if (!ok) return undefined;
  const addr = parseIPv4(s.slice(0, slash));
  const prefix = Number(s.slice(slash + 1));
  return addr === undefined ? undefined : { addr, prefix };
}

/** Parses a network in CIDR notation; the address must be the network's first address. */
export function parseCidr(s: string): Cidr | undefined {
  const a = parseAddrWithPrefix(s);
  if (!a || networkOf(a.addr, a.prefix) !== a.addr) return undefined;
  return { base: a.addr, prefix: a.prefix };
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function networkOf(addr: number, prefix: number): number {
  return (addr & maskOf(prefix)) >>> 0;
}

export function cidrOf(a: AddrWithPrefix): Cidr {
  return { base: networkOf(a.addr, a.prefix), prefix: a.prefix };
}

export function sizeOf(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function lastOf(c: Cidr): number {
  return c.base + sizeOf(c) - 1;
}

export function contains(c: Cidr, addr: number): boolean {
  return addr >= c.base && addr <= lastOf(c);
}

/** True when `inner` lies wholly inside `outer`. */
export function containsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && contains(outer, inner.base);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base <= lastOf(b) && b.base <= lastOf(a);
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatIPv4(c.base)}/${c.prefix}`;
}

export function formatAddr(a: AddrWithPrefix): string {
  return `${formatIPv4(a.addr)}/${a.prefix}`;
}

/**
 * True for addresses a host may hold in `c`: not the network or broadcast address, except in
 * /31 and /32 where every address is usable.
 */
export function isHostAddress(c: Cidr, addr: number): boolean {
  if (!contains(c, addr)) return false;
  if (c.prefix >= 31) return true;
  return addr !== c.base && addr !== lastOf(c);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function isMac(s: string): boolean {
  return MAC_RE.test(s);
}

/** A random locally administered unicast MAC. */
export function randomMac(bytes: Uint8Array): string {
  const b = Array.from(bytes.subarray(0, 6));
  b[0] = (b[0]! & 0xfe) | 0x02;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
