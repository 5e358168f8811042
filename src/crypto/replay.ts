/**
 * Replay protection for datagrams: a sliding window over the highest counter seen (RFC 6479's
 * ring of bitmap blocks). UDP may reorder a little, so a counter below the highest is still
 * accepted once while it lies inside the window; a counter seen before, or older than the
 * window, is a replay.
 *
 * `check` is called before decrypting and `accept` only after the datagram authenticated, so
 * forged counters cannot move the window.
 */
const BLOCK_BITS = 32;

export class ReplayWindow {
  private readonly blocks: Uint32Array;
  /** Counters this far below the highest are still accepted. */
  readonly size: number;
  private top = -1;

  /** `blocks` must be a power of two; the window spans (blocks - 1) * 32 counters. */
  constructor(blocks = 64) {
    if (blocks < 2 || (blocks & (blocks - 1)) !== 0) throw new RangeError('replay window blocks must be a power of two >= 2');
    this.blocks = new Uint32Array(blocks);
    this.size = (blocks - 1) * BLOCK_BITS;
  }

  /** True when `n` was not seen and is not older than the window. Records nothing. */
  check(n: number): boolean {
    if (n > this.top) return true;
    if (this.top - n >= this.size) return false;
    return (this.blocks[this.index(n)]! & (1 << (n % BLOCK_BITS))) === 0;
  }

  /** Records `n` as seen; call only for a datagram that authenticated and passed `check`. */
  accept(n: number): void {
    if (n > this.top) {
      const from = this.top < 0 ? -1 : Math.floor(this.top / BLOCK_BITS);
      const to = Math.floor(n / BLOCK_BITS);
      // clear the blocks the window slides over (all of them when it jumps far)
      const steps = Math.min(to - from, this.blocks.length);
      for (let i = 1; i <= steps; i++) this.blocks[(to - steps + i) % this.blocks.length] = 0;
      this.top = n;
    }
    this.blocks[this.index(n)]! |= 1 << (n % BLOCK_BITS);
  }

  private index(n: number): number {
    return Math.floor(n / BLOCK_BITS) % this.blocks.length;
  }
}
