/**
 * A kubeconfig for clients of the test API server. The server speaks plain HTTP, which
 * @kubernetes/client-node refuses unless the cluster sets `insecure-skip-tls-verify: true`.
 * JSON is valid YAML, so the file is written as JSON.
 */
import { writeFileAtomic } from '../../common/fsutil';

export function kubeconfigFor(server: string, o: { token?: string; namespace?: string } = {}): string {
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'weft-test', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'weft', user: o.token ? { token: o.token } : {} }],
    contexts: [{ name: 'weft-test', context: { cluster: 'weft-test', user: 'weft', namespace: o.namespace ?? 'kube-system' } }],
    'current-context': 'weft-test',
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Writes the kubeconfig to `path` (mode 0600, atomically). */
export async function writeKubeconfig(path: string, server: string, o: { token?: string; namespace?: string } = {}): Promise<void> {
  await writeFileAtomic(path, kubeconfigFor(server, o), 0o600);
}
