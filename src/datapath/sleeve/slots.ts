/**
 * Which host-local address and port stand for each peer the sleeve carries.
 *
 * The kernel VXLAN sends a peer's frames to that peer's address in a link-local block; a DNAT
 * rule turns the address into 127.0.0.1:port, where the router's socket for that peer reads
 * them. Address and port are both functions of one slot number, so a connection-tracking entry
 * that outlives a change (UDP entries live 30 s after the last datagram) still pairs the
 * address with the matching socket. A slot is picked by hashing the peer's name (stable across
 * restarts), probing on collision, and a starting router adopts the slots its predecessor
 * left in the kernel, so a restart moves no peer.
 */
import { createHash } from 'node:crypto';
import { formatIPv4, lastOf, sizeOf, type Cidr } from '../../common/ip';
import { ConfigError } from '../../common/errors';

export interface Slot {
  peer: string;
  /** Offset in the block: 2 .. size - 2 (0 is the network, 1 this host's own address). */
  index: number;
  /** The peer's address in the block (the VXLAN forwarding entries' destination). */
  addr: string;
  /** 127.0.0.1 port of the router's socket for the peer. */
  port: number;
}

export class SlotTable {
  private readonly byPeer = new Map<string, Slot>();
  private readonly byIndex = new Map<number, Slot>();
  /** Usable slots: 2 .. size - 2. */
  readonly capacity: number;

  constructor(
    readonly block: Cidr,
    readonly portBase: number,
  ) {
    const size = sizeOf(block);
    if (block.prefix > 29) throw new ConfigError('block', `${formatIPv4(block.base)}/${block.prefix} is too small (at most /29)`);
    this.capacity = size - 3;
    if (!Number.isInteger(portBase) || portBase < 1024 || portBase + size - 2 > 65535) {
      throw new ConfigError('portBase', `${portBase}: the ports ${portBase}+2..${portBase + size - 2} must lie in 1024..65535`);
    }
  }

  /** This host's own address in the block (the VXLAN device's source). */
  get ownAddr(): string {
    return formatIPv4(this.block.base + 1);
  }

  /** The address of a slot index. */
  addrOf(index: number): string {
    return formatIPv4(this.block.base + index);
  }

  /** The slot index of an address in the block, or undefined. */
  indexOf(addr: number): number | undefined {
    if (addr < this.block.base + 2 || addr >= lastOf(this.block)) return undefined;
    return addr - this.block.base;
  }

  get(peer: string): Slot | undefined {
    return this.byPeer.get(peer);
  }

  all(): Slot[] {
    return [...this.byPeer.values()];
  }

  /** Takes a slot found in the kernel for `peer`; false when the index is out of range or taken. */
  adopt(peer: string, index: number): boolean {
    if (index < 2 || index > this.capacity + 1 || this.byIndex.has(index) || this.byPeer.has(peer)) return false;
    this.put(peer, index);
    return true;
  }

  /** The peer's slot, assigning one when it has none. Throws when the block is full. */
  assign(peer: string): Slot {
    const have = this.byPeer.get(peer);
    if (have) return have;
    if (this.byPeer.size >= this.capacity) throw new RangeError(`sleeve address block full: ${this.capacity} peers`);
    let i = createHash('sha256').update(peer).digest().readUInt32BE(0) % this.capacity;
    while (this.byIndex.has(i + 2)) i = (i + 1) % this.capacity;
    return this.put(peer, i + 2);
  }

  release(peer: string): Slot | undefined {
    const s = this.byPeer.get(peer);
    if (!s) return undefined;
    this.byPeer.delete(peer);
    this.byIndex.delete(s.index);
    return s;
  }

  private put(peer: string, index: number): Slot {
    const s: Slot = { peer, index, addr: this.addrOf(index), port: this.portBase + index };
    this.byPeer.set(peer, s);
    this.byIndex.set(index, s);
    return s;
  }
}
