/**
 * Where the mesh's targets come from. Each source owns its own set of addresses and replaces
 * it whole whenever it changes; the mesh dials the union. Gossip adds learnt addresses on top
 * (peers of peers), which no source needs to know.
 */
import type { Startable } from '../common/lifecycle';

/** What a peer source feeds: the mesh's targets, kept per source. */
export interface PeerTargets {
  /** Replaces the addresses (HOST or HOST:PORT) that `source` wants dialled. */
  setTargets(source: string, addrs: readonly string[]): void;
}

export interface PeerSource extends Startable {
  /** Short name, e.g. 'flags', 'kubernetes'. */
  readonly name: string;
  /** One line for `weft status`, e.g. "kubernetes: 5 nodes". */
  describe(): string;
}

/** The addresses given on the command line and through `weft connect` / `weft forget`. */
export class StaticPeerSource implements PeerSource {
  readonly name = 'flags';
  private readonly addrs: string[] = [];

  /** `normalise` makes `host` and `host:6783` one address (the mesh's own rule). */
  constructor(
    private readonly c: { targets: PeerTargets; normalise?: (addr: string) => string },
    initial: readonly string[],
  ) {
    for (const a of initial) this.push(a);
  }

  private key(a: string): string {
    return this.c.normalise?.(a) ?? a;
  }

  private push(a: string): void {
    if (!this.addrs.includes(this.key(a))) this.addrs.push(this.key(a));
  }

  async start(): Promise<void> {
    this.c.targets.setTargets(this.name, this.addrs);
  }

  async stop(): Promise<void> {}

  /** `weft connect`: adds addresses (kept until forgotten). */
  add(addrs: readonly string[]): void {
    for (const a of addrs) this.push(a);
    this.c.targets.setTargets(this.name, this.addrs);
  }

  /** `weft forget`: removes addresses; returns the ones that were there. */
  remove(addrs: readonly string[]): string[] {
    const gone = addrs.map((a) => this.key(a)).filter((a) => this.addrs.includes(a));
    for (const a of gone) this.addrs.splice(this.addrs.indexOf(a), 1);
    this.c.targets.setTargets(this.name, this.addrs);
    return gone;
  }

  list(): readonly string[] {
    return this.addrs;
  }

  describe(): string {
    return `flags: ${this.addrs.length} address${this.addrs.length === 1 ? '' : 'es'}`;
  }
}
