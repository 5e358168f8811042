/**
 * Connection tracking entries through `conntrack` (conntrack-tools).
 *
 * Why: NAT is decided on a flow's first packet and kept in its conntrack entry, so a flow that
 * began while a NAT rule was missing goes on without NAT after the rule is back, for as long as
 * its packets keep coming (a UDP entry lives 30 s after its last packet). Whoever restores NAT
 * rules ends such flows, as kube-proxy does for UDP services.
 */
import { run, type RunOptions } from './exec';

/** Deletes the tracked UDP flows to `dport` (any address); returns how many went. */
export async function forgetUdpFlows(dport: number, opts: RunOptions = {}): Promise<number> {
  try {
    const { stderr } = await run('conntrack', ['-D', '-p', 'udp', '--dport', String(dport)], opts);
    return deletedCount(stderr);
  } catch (e) {
    // conntrack exits 1 when nothing matched; that is not a failure
    const stderr = (e as { stderr?: string }).stderr ?? '';
    if (/\b0 flow entries have been deleted/.test(stderr)) return 0;
    throw e;
  }
}

function deletedCount(stderr: string): number {
  const m = /(\d+) flow entries have been deleted/.exec(stderr);
  return m ? Number(m[1]) : 0;
}
