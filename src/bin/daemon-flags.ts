/**
 * V8 flags the router runs with (main.ts re-executes `weft router` with them; a flag of the same
 * name given with --node-options wins).
 *
 * Both are for the sleeve, which relays 64 KiB buffers by the thousand per second (each is
 * external memory to V8). With V8's defaults a router under that load ran major GCs back to back,
 * 4 to 12 a second (a third of its CPU in `perf`), because V8 grows the young generation to
 * 16 MB semi-spaces under such an allocation rate and sizes the old generation's limit from its
 * small live heap (~20 MB, limit ~30 MB), and then starts marking with headroom left:
 * - `--max-semi-space-size=1` (MB): frequent cheap scavenges, which also free the relayed
 *   buffers young;
 * - `--initial-old-space-size=64` (MB): the old generation's limit starts at 64 MB instead of
 *   just above the live heap.
 * Measured in a 2-host sandbox, encrypted, iperf3 pod to pod, 4 rounds of 5 s after a warm-up
 * (`--node-options` on both routers; --trace-gc counts): the old-space flag alone 1.25-1.45
 * Gbit/s with 20-36 major GCs per router per round (the defaults did no better); both flags
 * 1.71-1.85 Gbit/s with 0-1. Idle RSS is lower too (107/115 MiB against 116/124 MiB; 140/149 against 186/200 MiB
 * 20 s after a stream).
 */
export const ROUTER_V8_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--initial-old-space-size=64'];

/** `flags` plus each of ROUTER_V8_FLAGS whose name is not among them. */
export function withRouterFlags(flags: readonly string[]): string[] {
  const name = (f: string) => f.split('=')[0]!.replace(/_/g, '-');
  const given = new Set(flags.map(name));
  return [...flags, ...ROUTER_V8_FLAGS.filter((f) => !given.has(name(f)))];
}
