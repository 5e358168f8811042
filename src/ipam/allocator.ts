/**
 * The router's table of allocations on this host, keyed by (network, containerID, ifname).
 *
 * Why it is this way: one process (the router) is the only writer, so allocation is a plain
 * synchronous function on in-memory maps and two requests can never race for an address.
 * Addresses inside the allocation range come only from space this peer owns (`Space`); the
 * whole range on a single host, a share of the ring with peers. Addresses outside the range
 * (explicit `IP=10.0.1.1/24`, like `weave run 10.0.1.1/24`) are the user's to keep unique
 * across hosts, as in Weave; the router still refuses duplicates on its own host.
 * Within a subnet the search starts after the last address handed out (round robin), so a
 * released address is not reused at once while peers may still have it in their ARP caches.
 */
import type { AllocateRequest, AllocationRecord, AttachmentKey } from '../common/api';
import { attachmentId } from '../common/api';
import { AddressInUseError, ConfigError, NoSpaceError } from '../common/errors';
import {
  cidrOf,
  containsCidr,
  contains,
  formatAddr,
  formatCidr,
  formatIPv4,
  isHostAddress,
  lastOf,
  overlaps,
  parseAddrWithPrefix,
  parseCidr,
  type Cidr,
} from '../common/ip';
import { isoTime } from '../common/time';

/** The parts of the allocation range this peer may hand out. */
export interface Space {
  /** Owned ranges, disjoint. */
  owned(): readonly Cidr[];
}

/** The key used for a bridge's gateway address in a subnet. */
export const GATEWAY_NETWORK = '_gateway';

/** One allocation in memory: the record plus its address as a number. */
interface Entry {
  rec: AllocationRecord;
  addr: number;
}

export interface AllocatorState {
  allocations: AllocationRecord[];
  cursors: Record<string, number>;
}

export class Allocator {
  private readonly byKey = new Map<string, Entry>();
  private readonly byAddr = new Map<number, Entry>();
  private cursors: Record<string, number> = {};

  constructor(
    readonly range: Cidr,
    readonly defaultSubnet: Cidr,
    private readonly space: Space,
  ) {}

  /** Restores state read from disk (replaces what is in memory). */
  load(state: AllocatorState): void {
    this.byKey.clear();
    this.byAddr.clear();
    for (const rec of state.allocations) this.restore(rec);
    this.cursors = { ...state.cursors };
  }

  /**
   * Puts a record back (after a load, or to undo a release that could not be committed). An
   * undo never takes an address back from an attachment that got it meanwhile: that one's
   * allocation is what the next commit writes. Returns whether it was put back.
   */
  restore(rec: AllocationRecord): boolean {
    const a = parseAddrWithPrefix(rec.address);
    if (!a) return false;
    const holder = this.byAddr.get(a.addr);
    if (holder && attachmentId(holder.rec) !== attachmentId(rec)) return false;
    const e = { rec, addr: a.addr };
    this.byKey.set(attachmentId(rec), e);
    this.byAddr.set(a.addr, e);
    return true;
  }

  snapshot(): AllocatorState {
    return { allocations: [...this.byKey.values()].map((e) => e.rec), cursors: { ...this.cursors } };
  }

  get(key: AttachmentKey): AllocationRecord | undefined {
    return this.byKey.get(attachmentId(key))?.rec;
  }

  list(): AllocationRecord[] {
    return [...this.byKey.values()].map((e) => e.rec);
  }

  /** Resolves the subnet a request allocates in, checking it against the range. */
  subnetFor(req: Pick<AllocateRequest, 'address' | 'subnet'>): { subnet: Cidr; exact?: number } {
    let subnet: Cidr | undefined;
    if (req.subnet !== undefined) {
      subnet = parseCidr(req.subnet);
      if (!subnet) throw new ConfigError('ipam.subnet', `"${req.subnet}" is not a network in CIDR notation (e.g. 10.32.1.0/24)`);
      if (overlaps(subnet, this.range) && !containsCidr(this.range, subnet)) {
        throw new ConfigError('ipam.subnet', `${req.subnet} overlaps the allocation range ${formatCidr(this.range)} without lying inside it`);
      }
    }
    if (req.address === undefined) return { subnet: subnet ?? this.defaultSubnet };
    const inRange = (() => {
      const bare = parseAddrWithPrefix(req.address, 32);
      return bare !== undefined && contains(this.range, bare.addr);
    })();
    const fallbackPrefix = subnet?.prefix ?? (inRange ? this.defaultSubnet.prefix : undefined);
    const a = parseAddrWithPrefix(req.address, fallbackPrefix);
    if (!a) {
      throw new ConfigError('ips', `"${req.address}" is not an IPv4 address${fallbackPrefix === undefined ? ' with a prefix length (e.g. 10.0.1.1/24)' : ''}`);
    }
    const own = cidrOf(a);
    if (subnet && (own.base !== subnet.base || own.prefix !== subnet.prefix)) {
      throw new ConfigError('ips', `${req.address} is not in ipam.subnet ${req.subnet}`);
    }
    if (!isHostAddress(own, a.addr)) throw new ConfigError('ips', `${formatAddr(a)} is the network or broadcast address of its subnet`);
    if (overlaps(own, this.range) && !containsCidr(this.range, own)) {
      throw new ConfigError('ips', `${formatAddr(a)}: its subnet overlaps the allocation range ${formatCidr(this.range)} without lying inside it`);
    }
    return { subnet: own, exact: a.addr };
  }

  /** True when the subnet is part of the allocation range (and so gets a gateway on the bridge). */
  inRange(subnet: Cidr): boolean {
    return containsCidr(this.range, subnet);
  }

  /**
   * Allocates for `key` in `subnet` (an exact address when given). Idempotent: an existing
   * allocation for the key is returned as it is when it fits the request.
   */
  allocate(
    key: AttachmentKey,
    subnet: Cidr,
    exact: number | undefined,
    extra: Pick<AllocationRecord, 'bridge' | 'mac' | 'pod' | 'gateway'>,
  ): AllocationRecord {
    const id = attachmentId(key);
    const existing = this.byKey.get(id);
    if (existing) {
      const fits = exact === undefined ? contains(subnet, existing.addr) : existing.addr === exact;
      if (fits) {
        // createdAt is when an ADD last handed this allocation out: a release the plugin recorded
        // before this ADD (src/router/spool.ts compares the two) must not undo it
        existing.rec = { ...existing.rec, ...defined(extra), createdAt: isoTime() };
        return existing.rec;
      }
      this.remove(existing);
    }
    const addr = exact ?? this.findFree(subnet);
    if (exact !== undefined) this.checkExact(subnet, exact);
    const rec: AllocationRecord = {
      network: key.network,
      containerId: key.containerId,
      ifname: key.ifname,
      address: formatAddr({ addr, prefix: subnet.prefix }),
      ...defined(extra),
      bridge: extra.bridge,
      createdAt: isoTime(),
    };
    const e = { rec, addr };
    this.byKey.set(id, e);
    this.byAddr.set(addr, e);
    if (exact === undefined) this.cursors[formatCidr(subnet)] = addr;
    return rec;
  }

  release(key: AttachmentKey): AllocationRecord | undefined {
    const e = this.byKey.get(attachmentId(key));
    if (!e) return undefined;
    this.remove(e);
    return e.rec;
  }

  /** Releases every allocation of `network` whose (containerId, ifname) is not in `valid`. */
  gc(network: string, valid: readonly { containerId: string; ifname: string }[]): AllocationRecord[] {
    const keep = new Set(valid.map((v) => `${v.containerId}/${v.ifname}`));
    const gone: AllocationRecord[] = [];
    for (const e of [...this.byKey.values()]) {
      if (e.rec.network === network && !keep.has(`${e.rec.containerId}/${e.rec.ifname}`)) {
        this.remove(e);
        gone.push(e.rec);
      }
    }
    return gone;
  }

  /** Free addresses this peer could hand out in `subnet` (the default subnet unless given). */
  freeCount(subnet: Cidr = this.defaultSubnet): number {
    let total = 0;
    for (const r of this.space.owned()) {
      const part = intersect(r, subnet);
      if (part) total += allocatableIn(subnet, part);
    }
    let used = 0;
    for (const addr of this.byAddr.keys()) if (allocatable(subnet, addr) && this.owns(addr)) used++;
    return Math.max(0, total - used);
  }

  /** Addresses held inside any of `blocks`. */
  usedIn(blocks: readonly Cidr[]): number[] {
    return [...this.byAddr.keys()].filter((a) => blocks.some((b) => contains(b, a)));
  }

  private owns(addr: number): boolean {
    return this.space.owned().some((r) => contains(r, addr));
  }

  private checkExact(subnet: Cidr, addr: number): void {
    const holder = this.byAddr.get(addr);
    if (holder) {
      throw new AddressInUseError(`${formatIPv4(addr)} is already held by ${holder.rec.containerId}/${holder.rec.ifname} on network ${holder.rec.network}`);
    }
    if (this.inRange(subnet) && !this.owns(addr)) {
      throw new AddressInUseError(`${formatIPv4(addr)} is in the allocation range but owned by another peer`);
    }
  }

  private findFree(subnet: Cidr): number {
    const inRange = this.inRange(subnet);
    const parts = inRange
      ? this.space.owned().map((r) => intersect(r, subnet)).filter((p): p is Span => p !== undefined)
      : [{ first: subnet.base, last: lastOf(subnet) }];
    if (parts.length === 0) throw new NoSpaceError(`this peer owns no space in ${formatCidr(subnet)}`);
    const cursor = this.cursors[formatCidr(subnet)] ?? subnet.base;
    // two passes: from the cursor to the end, then from the start up to the cursor
    for (const after of [true, false]) {
      for (const p of parts) {
        const from = after ? Math.max(p.first, cursor + 1) : p.first;
        const to = after ? p.last : Math.min(p.last, cursor);
        for (let a = from; a <= to; a++) {
          if (!this.byAddr.has(a) && allocatable(subnet, a)) return a;
        }
      }
    }
    throw new NoSpaceError(`no free address in ${formatCidr(subnet)} (${this.byAddr.size} held on this host)`);
  }

  private remove(e: Entry): void {
    this.byKey.delete(attachmentId(e.rec));
    if (this.byAddr.get(e.addr) === e) this.byAddr.delete(e.addr);
  }
}

interface Span {
  first: number;
  last: number;
}

function intersect(a: Cidr, b: Cidr): Span | undefined {
  const first = Math.max(a.base, b.base);
  const last = Math.min(lastOf(a), lastOf(b));
  return first <= last ? { first, last } : undefined;
}

/**
 * Whether `findFree` may hand out `a` in `subnet`: a host address, and in subnets larger than
 * /24 not an x.y.z.0 address (valid, but they surprise people and tools).
 */
export function allocatable(subnet: Cidr, a: number): boolean {
  return isHostAddress(subnet, a) && !(subnet.prefix < 24 && (a & 0xff) === 0);
}

/** How many addresses of `part` (a stretch inside `subnet`) `allocatable` accepts. */
function allocatableIn(subnet: Cidr, part: Span): number {
  if (subnet.prefix >= 31) return part.last - part.first + 1;
  // the network and broadcast addresses
  let out = part.last - part.first + 1 - Number(part.first === subnet.base) - Number(part.last === lastOf(subnet));
  if (subnet.prefix < 24) {
    // x.y.z.0 addresses in the stretch, less the network address (already taken off: it is one)
    const zeros = Math.floor(part.last / 256) - Math.floor((part.first - 1) / 256);
    out -= zeros - Number(part.first === subnet.base);
  }
  return out;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
