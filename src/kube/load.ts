/**
 * Loads @kubernetes/client-node on first use.
 *
 * Why it is this way: the client is large (its generated models alone take tens of ms to
 * evaluate) and ESM-only. Only the router's Kubernetes mode needs it; the plugin must never
 * load it and no other command should pay for it. A dynamic `import()` keeps it out of every
 * start-up path; the webpackMode hint keeps ncc from splitting it into a chunk file, which the
 * single executable could not load (as `src/sys/process.ts` does for execa).
 */
export type K8s = typeof import('@kubernetes/client-node') & {
  /** Model-aware (de)serialisation; the package's index does not re-export it. */
  ObjectSerializer: (typeof import('@kubernetes/client-node/dist/serializer.js'))['ObjectSerializer'];
};

let loading: Promise<K8s> | undefined;

export function loadK8s(): Promise<K8s> {
  return (loading ??= Promise.all([
    import(/* webpackMode: "eager" */ '@kubernetes/client-node'),
    import(/* webpackMode: "eager" */ '@kubernetes/client-node/dist/serializer.js'),
  ]).then(([k8s, ser]) => ({ ...k8s, ObjectSerializer: ser.ObjectSerializer })));
}
