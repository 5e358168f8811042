/**
 * A Kubernetes object as it travels on the wire: plain JSON (list items and watch events alike).
 * One shape for the client (kube/), the test API server, the sandbox and the NetworkPolicy part.
 */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

/** (`creationTimestamp` is left to the index signature: a string on the wire, a Date in the Kubernetes library's own type, which the client's objects must fit.) */
export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}
