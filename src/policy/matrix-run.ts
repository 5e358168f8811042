/**
 * The reachability matrix, probed: from every pod to every pod, per protocol and port, all at
 * once. How a probe is sent from inside a pod is the caller's (the tests keep a `weft
 * probe-agent agent` per pod; the sandbox can run `weft probe-agent probe` through nsenter), so
 * this runner serves both.
 *
 * A probe that the expected table says is blocked gets a short deadline and one it says
 * connects a long one: a matrix of mostly blocked cells then costs one short deadline, not one
 * per cell, and a slow but allowed connection is not mistaken for a block.
 */
import { Truth, type PodKey } from './matrix';

export type MatrixProtocol = 'tcp' | 'udp' | 'sctp';

/** One matrix: a protocol and a port. */
export interface MatrixSpec {
  protocol: MatrixProtocol;
  port: number;
}

/** A pod as a probe sees it: its key ("namespace/name") and the address probes go to. */
export interface MatrixPod {
  key: PodKey;
  ip: string;
}

export interface MatrixTarget {
  protocol: MatrixProtocol;
  host: string;
  port: number;
  timeoutMs: number;
}

/** Sends `targets` from inside `from`; results in the same order. */
export type MatrixProber<P extends MatrixPod> = (from: P, targets: MatrixTarget[]) => Promise<{ connected: boolean; error?: string }[]>;

/** "tcp/80": the name of a spec's matrix. */
export const specName = (s: MatrixSpec): string => `${s.protocol}/${s.port}`;

export interface MatrixDeadlines {
  /** Deadline of a probe expected to connect (default 4000 ms). */
  allowedMs?: number;
  /** Of one expected to be blocked (default 600 ms). */
  blockedMs?: number;
  /** Without an expectation (default 1500 ms). */
  unknownMs?: number;
}

/**
 * Probes every pod of `from` to every pod of `to` on every spec, all at once; one Truth per
 * spec (keyed by `specName`) over the keys of both lists.
 */
export async function probeMatrix<P extends MatrixPod>(
  probe: MatrixProber<P>,
  specs: readonly MatrixSpec[],
  o: { from: readonly P[]; to?: readonly P[]; expected?: ReadonlyMap<string, Truth>; deadlines?: MatrixDeadlines },
): Promise<Map<string, Truth>> {
  const to = o.to ?? o.from;
  const d = { allowedMs: 4000, blockedMs: 600, unknownMs: 1500, ...o.deadlines };
  const keys = [...new Set([...o.from, ...to].map((p) => p.key))];
  const out = new Map(specs.map((s) => [specName(s), new Truth(keys, false)]));
  await Promise.all(
    o.from.map(async (src) => {
      const cells = to.flatMap((dst) =>
        specs.map((spec) => {
          const exp = o.expected?.get(specName(spec))?.get(src.key, dst.key);
          return { spec, dst, timeoutMs: exp === false ? d.blockedMs : exp === true ? d.allowedMs : d.unknownMs };
        }),
      );
      const results = await probe(src, cells.map((c) => ({ protocol: c.spec.protocol, host: c.dst.ip, port: c.spec.port, timeoutMs: c.timeoutMs })));
      if (results.length !== cells.length) throw new Error(`probes from ${src.key}: ${results.length} results for ${cells.length} targets`);
      cells.forEach((c, i) => out.get(specName(c.spec))!.set(src.key, c.dst.key, results[i]!.connected));
    }),
  );
  return out;
}
