/**
 * Fixtures for the Kubernetes tests: the in-process test API server, a kubeconfig for it, a
 * KubeClient and Node objects in the API reference's shape.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../src/common/log';
import { startApiServer, type ApiServerOptions, type RunningApiServer } from '../../src/kube/apiserver/server';
import { writeKubeconfig } from '../../src/kube/apiserver/kubeconfig';
import { resourceByPlural, type ResourceType } from '../../src/kube/apiserver/types';
import { KubeClient } from '../../src/kube/client';
import type { KubeObject } from '../../src/common/kube-object';

export const R = (plural: string): ResourceType => resourceByPlural(plural)!;

export const quiet: Logger = createLogger({ name: 'test', level: process.env.TEST_LOG_LEVEL === 'debug' ? 'debug' : 'silent' });

export interface KubeEnv {
  srv: RunningApiServer;
  kubeconfig: string;
  dir: string;
  client(o?: { requestTimeoutMs?: number }): Promise<KubeClient>;
}

export async function withKube(fn: (e: KubeEnv) => Promise<void>, o: ApiServerOptions = {}): Promise<void> {
  const srv = await startApiServer(o);
  const dir = mkdtempSync(join(tmpdir(), 'weft-kube-'));
  const kubeconfig = join(dir, 'kubeconfig');
  try {
    await writeKubeconfig(kubeconfig, srv.url);
    await fn({ srv, kubeconfig, dir, client: (c = {}) => KubeClient.create({ kubeconfig, ...c }) });
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A Node as the kubelet registers it: addresses, and a Ready condition. */
export function nodeObject(name: string, addresses: { type: string; address: string }[], conditions: object[] = []): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    spec: {},
    status: {
      addresses: [...addresses, { type: 'Hostname', address: name }],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastTransitionTime: '2025-01-01T00:00:00Z', lastHeartbeatTime: '2025-01-01T00:00:00Z' }, ...conditions],
    },
  };
}

/** Waits (bounded) until `cond` gives a truthy value, polling; returns it. */
export async function until<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
