/**
 * The entry of the Kubernetes client's own bundle (build.sh: the asset `weft-kube.js`), which
 * `loadK8s` runs in the single executable.
 */
export * from '@kubernetes/client-node';
export { ObjectSerializer } from '@kubernetes/client-node/dist/serializer.js';
