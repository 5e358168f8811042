/**
 * The sleeve's kernel half, in the host's network namespace: a VXLAN device of its own on the
 * bridge, whose datagrams the router reads and writes over loopback.
 *
 * Why it is this way: the kernel keeps encapsulating (and, with a large MTU, hands the router
 * few large datagrams instead of many small frames), and the router only moves datagrams.
 *   vxlan-sleeve   VXLAN on the bridge, local = the block's first address, its own UDP port
 *                  (not fastdp's 6784), MTU = the inner MTU; transmit checksum offload off,
 *                  or inner checksums would never be filled in (the datagrams end in userspace)
 *   sleeve-via     one end of a veth pair (MTU 65535) holding the block's first address: peer
 *                  addresses route through it. Not `lo`: a route through lo counts as local, and
 *                  VXLAN would then bypass encapsulation and loop the frame into itself
 *   forwarding     `00:00:00:00:00:00 dst PEER_ADDR` per peer (head-end replication for
 *                  flooding); the device learns pod MACs from what it receives
 *   nat OUTPUT     PEER_ADDR:VXLAN_PORT -> 127.0.0.1:PEER_PORT (the router's socket for the peer)
 *   nat POSTROUTING  127.0.0.1:PEER_PORT -> 127.0.0.1:VXLAN_PORT gets source PEER_ADDR, so the
 *                  device learns a remote pod's MAC at the address that reaches its host
 *   filter INPUT   VXLAN_PORT only from lo: nobody on the underlay can inject plain frames
 * NAT binds on a flow's first datagram, so the rules exist before anything can send through
 * them: `program` installs a peer's rules before the sleeve opens its socket, and `setup` ends
 * the tracked flows that may have begun without them.
 * All of it is checked by `verify` and made again by `setup`; `teardown` removes it.
 */
import { ipBatch } from '../../sys/exec';
import { deleteLink, getLink, replaceAddress, listAddresses } from '../../sys/link';
import { setOffload, offload } from '../../sys/ethtool';
import { forgetUdpFlows } from '../../sys/conntrack';
import { fdbEntries, fdbSettle } from '../../sys/fdb';
import type { ChainSpec, Iptables } from '../../sys/iptables';
import type { Logger } from '../../common/log';
import { parseIPv4 } from '../../common/ip';
import { SysError } from '../../common/errors';
import type { Slot, SlotTable } from './slots';

export const SLEEVE_VXLAN_DEV = 'vxlan-sleeve';
export const SLEEVE_VIA_DEV = 'sleeve-via';
export const SLEEVE_VIA_PEER = 'sleeve-via-p';
const VIA_MTU = 65535;
const ZERO_MAC = '00:00:00:00:00:00';
const COMMENT = 'weft sleeve';

export interface SleeveKernelOptions {
  bridge: string;
  vni: number;
  /** UDP port of the sleeve's VXLAN device (loopback only). */
  vxlanPort: number;
  /** MTU of the VXLAN device: the largest frame the sleeve carries. */
  mtu: number;
  slots: SlotTable;
  iptables: Iptables;
  log: Logger;
}

export class SleeveKernel {
  /** How many peers' NAT rules were last applied. */
  private applied = 0;
  /** The rules last written (their specs as JSON); undefined after a failed write. */
  private written: string | undefined;

  constructor(private readonly o: SleeveKernelOptions) {}

  private get prefix(): number {
    return this.o.slots.block.prefix;
  }

  /** Creates or adopts the devices and rules (idempotent). */
  async setup(): Promise<void> {
    const o = this.o;
    const own = o.slots.ownAddr;
    // nothing is made before the one thing that must exist already is there
    if (!(await getLink(o.bridge))) throw new SysError(`bridge ${o.bridge} does not exist: the host network is set up first`);
    if (!(await getLink(SLEEVE_VIA_DEV))) {
      await deleteLink(SLEEVE_VIA_PEER);
      await ipBatch([`link add ${SLEEVE_VIA_DEV} mtu ${VIA_MTU} type veth peer name ${SLEEVE_VIA_PEER} mtu ${VIA_MTU}`]);
    }
    await ipBatch([`link set ${SLEEVE_VIA_DEV} mtu ${VIA_MTU} up`, `link set ${SLEEVE_VIA_PEER} mtu ${VIA_MTU} up`]);
    if (!(await listAddresses(SLEEVE_VIA_DEV)).includes(`${own}/${this.prefix}`)) await replaceAddress(SLEEVE_VIA_DEV, `${own}/${this.prefix}`);

    const link = await getLink(SLEEVE_VXLAN_DEV);
    const info = (link?.linkinfo as { info_kind?: string; info_data?: { id?: number; port?: number; local?: string } } | undefined);
    const fits = info?.info_kind === 'vxlan' && info.info_data?.id === o.vni && info.info_data?.port === o.vxlanPort && info.info_data?.local === own;
    if (link && !fits) {
      o.log.warn({ dev: SLEEVE_VXLAN_DEV }, 'sleeve VXLAN device has other settings; recreating it');
      await deleteLink(SLEEVE_VXLAN_DEV);
    }
    if (!link || !fits) await ipBatch([`link add ${SLEEVE_VXLAN_DEV} type vxlan id ${o.vni} dstport ${o.vxlanPort} local ${own}`]);
    const mtuChanged = link !== undefined && fits && link.mtu !== o.mtu;
    // isolated like fastdp's device: frames never pass from one overlay into the other (no transit loops)
    await ipBatch([`link set ${SLEEVE_VXLAN_DEV} mtu ${o.mtu} master ${o.bridge} up`, `link set ${SLEEVE_VXLAN_DEV} type bridge_slave isolated on`]);
    // a path MTU cached under the old MTU would keep clamping until it expires
    if (mtuChanged) await ipBatch(['route flush cache']);
    await setOffload(SLEEVE_VXLAN_DEV, 'tx-checksumming', 'tx', false);
    await this.applyRules(o.slots.all());
    await this.forgetUnnatted();
  }

  /**
   * Ends the tracked flows to the device's port: one that began while the NAT rules were
   * missing (a repair, a start after someone flushed them) would bypass them until idle 30 s.
   * Flows with NAT lose nothing: their next datagram starts a new one through the rules.
   */
  private async forgetUnnatted(): Promise<void> {
    try {
      const n = await forgetUdpFlows(this.o.vxlanPort);
      if (n) this.o.log.info({ flows: n, port: this.o.vxlanPort }, 'sleeve: tracked flows ended, so every flow passes the NAT rules');
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'sleeve: cannot end tracked flows (is conntrack installed?); a flow begun without the NAT rules lasts until idle 30 s');
    }
  }

  /** Undefined when everything is in place; otherwise what is missing. */
  async verify(): Promise<string | undefined> {
    const o = this.o;
    const via = await getLink(SLEEVE_VIA_DEV);
    if (!via || !via.flags.includes('UP')) return `sleeve device ${SLEEVE_VIA_DEV} is ${via ? 'down' : 'missing'}`;
    if (!(await listAddresses(SLEEVE_VIA_DEV)).includes(`${o.slots.ownAddr}/${this.prefix}`)) return `sleeve device ${SLEEVE_VIA_DEV} lacks ${o.slots.ownAddr}/${this.prefix}`;
    const vx = await getLink(SLEEVE_VXLAN_DEV);
    if (!vx) return `sleeve VXLAN device ${SLEEVE_VXLAN_DEV} is missing`;
    if (!vx.flags.includes('UP')) return `sleeve VXLAN device ${SLEEVE_VXLAN_DEV} is down`;
    if (vx.master !== o.bridge) return `sleeve VXLAN device ${SLEEVE_VXLAN_DEV} is not on bridge ${o.bridge}`;
    if (vx.mtu !== o.mtu) return `sleeve VXLAN device ${SLEEVE_VXLAN_DEV} has MTU ${vx.mtu}, not ${o.mtu}`;
    if ((await offload(SLEEVE_VXLAN_DEV, 'tx-checksumming')) !== false) return `transmit checksum offload is on for ${SLEEVE_VXLAN_DEV}`;
    const missing = await o.iptables.missingJumps(this.chains([]));
    if (missing.length) return `sleeve iptables rules missing: ${missing.join(', ')}`;
    // what was last applied, not the slots: those change a moment before their rules do
    const want = this.applied;
    const nat = await o.iptables.rulesByChain('nat');
    for (const chain of ['WEFT-SLEEVE-OUT', 'WEFT-SLEEVE-POST']) {
      const have = nat.get(chain)?.length ?? 0;
      if (have !== want) return `sleeve NAT chain ${chain} has ${have} rules, not ${want} (one per peer)`;
    }
    return undefined;
  }

  /**
   * Makes forwarding entries and NAT rules match `slots`. `moved` lists addresses whose peer
   * changed or went: frames the device learnt at them are forgotten (in the device and in the
   * bridge), so none goes to a host that is not theirs, and the bridge floods until it relearns.
   */
  async program(slots: readonly Slot[], moved: readonly string[]): Promise<void> {
    const entries = await fdbEntries(SLEEVE_VXLAN_DEV);
    const wanted = new Set(slots.map((s) => s.addr));
    const lines: string[] = [];
    for (const s of slots) {
      if (!entries.some((e) => e.mac === ZERO_MAC && e.dst === s.addr)) lines.push(`fdb append ${ZERO_MAC} dev ${SLEEVE_VXLAN_DEV} dst ${s.addr} self permanent`);
    }
    const stale = new Set(moved);
    for (const e of entries) {
      if (!e.dst) continue;
      const gone = e.mac === ZERO_MAC ? !wanted.has(e.dst) : stale.has(e.dst) || !wanted.has(e.dst);
      if (!gone) continue;
      lines.push(`fdb del ${e.mac} dev ${SLEEVE_VXLAN_DEV} dst ${e.dst} self`);
      if (e.mac !== ZERO_MAC) lines.push(`fdb del ${e.mac} dev ${SLEEVE_VXLAN_DEV} master`);
    }
    await this.applyRules(slots, false);
    // one batch: one line at a time would cost a process each
    await fdbSettle(lines);
  }

  /** The slots the previous run left (from its NAT rules' comments). */
  async previousSlots(): Promise<{ peer: string; index: number }[]> {
    const out: { peer: string; index: number }[] = [];
    for (const line of await this.o.iptables.rules('nat', 'WEFT-SLEEVE-OUT')) {
      const m = /-d (\d+\.\d+\.\d+\.\d+)\/32 .*--comment "?weft sleeve ([0-9a-f:]+)"?/.exec(line);
      const addr = m ? parseIPv4(m[1]!) : undefined;
      const index = addr === undefined ? undefined : this.o.slots.indexOf(addr);
      if (m && index !== undefined) out.push({ peer: m[2]!, index });
    }
    return out;
  }

  /** Removes the devices and rules. */
  async teardown(): Promise<void> {
    await this.o.iptables.remove(this.chains([]));
    await deleteLink(SLEEVE_VXLAN_DEV);
    await deleteLink(SLEEVE_VIA_DEV);
  }

  /**
   * Writes the rules for `slots`; `program` skips it when they are those last written (every
   * programming pass would otherwise rewrite them), `setup` (start, repair) always writes.
   */
  private async applyRules(slots: readonly Slot[], force = true): Promise<void> {
    const specs = this.chains(slots);
    const key = JSON.stringify(specs);
    if (!force && key === this.written) return;
    this.written = undefined;
    await this.o.iptables.apply(specs);
    this.written = key;
    this.applied = slots.length;
  }

  private chains(slots: readonly Slot[]): ChainSpec[] {
    const p = this.o.vxlanPort;
    return [
      {
        table: 'nat',
        chain: 'WEFT-SLEEVE-OUT',
        from: 'OUTPUT',
        rules: slots.map((s) => `-d ${s.addr}/32 -p udp -m udp --dport ${p} -m comment --comment "${COMMENT} ${s.peer}" -j DNAT --to-destination 127.0.0.1:${s.port}`),
      },
      {
        table: 'nat',
        chain: 'WEFT-SLEEVE-POST',
        from: 'POSTROUTING',
        rules: slots.map((s) => `-s 127.0.0.1/32 -d 127.0.0.1/32 -p udp -m udp --sport ${s.port} --dport ${p} -j SNAT --to-source ${s.addr}`),
      },
      { table: 'filter', chain: 'WEFT-SLEEVE-IN', from: 'INPUT', rules: [`! -i lo -p udp -m udp --dport ${p} -j DROP`] },
    ];
  }
}
