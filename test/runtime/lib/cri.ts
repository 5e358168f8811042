/**
 * A small CRI client (the kubelet's side of containerd's CRI plugin) on @grpc/grpc-js, with
 * the trimmed runtime.v1 messages in cri.proto. Every call has a deadline.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';

const PROTO = join(__dirname, 'cri.proto');

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network: { ip: string; additionalIps: { ip: string }[] } | null;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

/** A gRPC error with its status code (grpc.status). */
export interface CriError extends Error {
  code?: number;
  details?: string;
}

export class CriClient {
  private readonly client: grpc.Client & Record<string, Function>;

  constructor(socket: string) {
    const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as any;
    const Service = pkg.runtime.v1.RuntimeService as grpc.ServiceClientConstructor;
    this.client = new Service(`unix://${socket}`, grpc.credentials.createInsecure()) as any;
  }

  private call<T>(method: string, req: object, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method]!.call(this.client, req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (err) {
          const e: CriError = new Error(`CRI ${method}: ${err.message}`);
          e.code = err.code;
          e.details = err.details;
          reject(e);
        } else resolve(res);
      });
    });
  }

  version(timeoutMs = 10_000) {
    return this.call<{ version: string; runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }>('Version', { version: 'v1' }, timeoutMs);
  }

  async status(timeoutMs = 10_000): Promise<RuntimeCondition[]> {
    const r = await this.call<{ status: { conditions: RuntimeCondition[] } | null }>('Status', { verbose: false }, timeoutMs);
    return r.status?.conditions ?? [];
  }

  async runPodSandbox(config: { metadata: PodSandboxMetadata; hostname?: string; cgroupParent?: string }, timeoutMs = 60_000): Promise<string> {
    const r = await this.call<{ podSandboxId: string }>(
      'RunPodSandbox',
      {
        config: {
          metadata: config.metadata,
          hostname: config.hostname ?? config.metadata.name,
          linux: config.cgroupParent ? { cgroupParent: config.cgroupParent } : undefined,
        },
      },
      timeoutMs,
    );
    return r.podSandboxId;
  }

  async podSandboxStatus(id: string, timeoutMs = 10_000): Promise<PodSandboxStatus> {
    const r = await this.call<{ status: PodSandboxStatus }>('PodSandboxStatus', { podSandboxId: id, verbose: false }, timeoutMs);
    return r.status;
  }

  async stopPodSandbox(id: string, timeoutMs = 60_000): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id }, timeoutMs);
  }

  async removePodSandbox(id: string, timeoutMs = 60_000): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id }, timeoutMs);
  }

  close(): void {
    this.client.close();
  }
}
