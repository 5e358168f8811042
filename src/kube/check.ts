/**
 * `weft kube-check`: what the router's Kubernetes mode would see, without starting a router:
 * where the configuration came from, the Nodes and their mesh addresses, the peer record, and
 * whether the NetworkPolicy part may list its resources.
 * For operators ("can weft reach the API from here, with these rights?") and for tests of the
 * bundled client.
 */
import { parse, type CliIo } from '../common/command';
import { KubeClient, nodeName, ownNamespace } from './client';
import { nodeAddress } from './peers';
import { RecordStore } from './record';
import { createLogger } from '../common/log';
import { POLICY_RESOURCES } from '../policy/source';

export const KUBE_CHECK_HELP = `Usage: weft kube-check [--kubeconfig FILE] [--node-name NAME] [--json]

Reads what the router's Kubernetes mode uses: the Nodes (each one's mesh address), the
peer record, and the Pods, Namespaces and NetworkPolicies the NetworkPolicy part watches,
through the same client and configuration (in a pod: the service account).
`;

export async function runKubeCheck(argv: string[], io: CliIo): Promise<number> {
  const { values: v } = parse(argv, { kubeconfig: { type: 'string' }, 'node-name': { type: 'string' }, json: { type: 'boolean' } }, false);
  if (v.help) {
    io.out(KUBE_CHECK_HELP);
    return 0;
  }
  const client = await KubeClient.create({ kubeconfig: v.kubeconfig as string | undefined });
  const self = nodeName(v['node-name'] as string | undefined);
  const namespace = ownNamespace();
  const list = await client.listSpec('nodes').list({});
  const nodes = list.items.map((n) => ({ name: n.metadata.name ?? '', address: nodeAddress(n) ?? null, self: n.metadata.name === self }));
  const record = await new RecordStore({ api: client, log: createLogger({ name: 'weft', level: 'silent' }) }, { namespace }).read();
  const policy: Record<string, number | string> = {};
  for (const r of POLICY_RESOURCES) policy[r] = await client.listSpec(r).list({}).then((l) => l.items.length, (e: Error) => `cannot list: ${e.message}`);
  const out = { config: client.origin, server: client.server, nodeName: self, namespace, nodes, record, policy };
  if (v.json) {
    io.out(`${JSON.stringify(out, null, 2)}\n`);
    return 0;
  }
  io.out(`config: ${out.config} (${out.server}), this node: ${self}, namespace: ${namespace}\n`);
  io.out(`nodes: ${nodes.length}\n`);
  for (const n of nodes) io.out(`  ${n.name.padEnd(24)} ${n.address ?? '(no IPv4 address)'}${n.self ? '  (this node)' : ''}\n`);
  io.out(`peer record: ${Object.keys(record.peers).length} peers, ${Object.keys(record.claims).length} claims${record.lastReclaim ? `, last reclaim: ${record.lastReclaim.peer} by ${record.lastReclaim.by} at ${record.lastReclaim.at} (${record.lastReclaim.addresses} addresses)` : ''}\n`);
  io.out(`network policy sources: ${POLICY_RESOURCES.map((r) => `${r} ${typeof policy[r] === 'number' ? policy[r] : `(${policy[r]})`}`).join(', ')}\n`);
  return 0;
}
