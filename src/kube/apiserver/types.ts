/**
 * The resources the test API server serves, and the Kubernetes `Status` object its errors
 * travel as (https://kubernetes.io/docs/reference/using-api/api-concepts/).
 */
import type { KubeObject } from '../../common/kube-object';

/** One served resource type. */
export interface ResourceType {
  /** '' for the core group. */
  group: string;
  version: string;
  /** Path segment, e.g. 'nodes'. */
  plural: string;
  kind: string;
  namespaced: boolean;
  /** Whether `.status` is changed only through the `/status` subresource. */
  statusSubresource: boolean;
}

export const RESOURCES: readonly ResourceType[] = [
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, statusSubresource: false },
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, statusSubresource: false },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true, statusSubresource: false },
  { group: 'networking.k8s.io', version: 'v1', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true, statusSubresource: false },
];

/** Namespaces a fresh cluster has. */
export const INITIAL_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

export function apiVersionOf(t: ResourceType): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

export function resourceByPlural(plural: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.plural === plural);
}

export function resourceByKind(kind: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.kind === kind);
}

/** Reasons of the API's `Status` objects (metav1.StatusReason). */
export type StatusReason =
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Invalid'
  | 'BadRequest'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType'
  | 'Expired'
  | 'Gone'
  | 'Timeout'
  | 'InternalError';

/** A failure answered as a `Status` object with the HTTP code in `code`. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: { name?: string; group?: string; kind?: string },
  ) {
    super(message);
  }

  status(): KubeObject {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

const what = (t: ResourceType) => (t.group ? `${t.plural}.${t.group}` : t.plural);

export const notFound = (t: ResourceType, name: string) => new ApiError(404, 'NotFound', `${what(t)} "${name}" not found`, { name, group: t.group, kind: t.plural });
export const alreadyExists = (t: ResourceType, name: string) =>
  new ApiError(409, 'AlreadyExists', `${what(t)} "${name}" already exists`, { name, group: t.group, kind: t.plural });
export const conflict = (t: ResourceType, name: string) =>
  new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${what(t)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, {
    name,
    group: t.group,
    kind: t.plural,
  });
export const invalid = (t: ResourceType, name: string, message: string) =>
  new ApiError(422, 'Invalid', `${t.kind} "${name}" is invalid: ${message}`, { name, group: t.group, kind: t.kind });
export const badRequest = (message: string) => new ApiError(400, 'BadRequest', message);
/** What a watch from a compacted resourceVersion gets (as an ERROR event, as the real server sends it). */
export const expired = (asked: number, oldest: number) => new ApiError(410, 'Expired', `too old resource version: ${asked} (${oldest})`);
