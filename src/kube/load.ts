/**
 * Loads @kubernetes/client-node on first use.
 *
 * Why it is this way: the client is large (its generated models alone take tens of ms to
 * evaluate; minified, it is over half of the router's code) and ESM-only. Only the router's
 * Kubernetes mode needs it; the plugin must never load it and no other command should pay for
 * it, in time or in memory. In the single executable it is a bundle of its own, an asset
 * (KUBE_ASSET, built from `k8s-asset.ts`) run on first use, so a router outside Kubernetes never
 * reads its bytes. From source it is a plain dynamic import, which the router+CLI bundle leaves
 * out (webpackIgnore).
 */
import { inSea, runAssetModule } from '../common/sea-module';

export type K8s = typeof import('@kubernetes/client-node') & {
  /** Model-aware (de)serialisation; the package's index does not re-export it. */
  ObjectSerializer: (typeof import('@kubernetes/client-node/dist/serializer.js'))['ObjectSerializer'];
};

/** The asset holding the client's bundle (build.sh). */
export const KUBE_ASSET = 'weft-kube.js';

let loading: Promise<K8s> | undefined;

export function loadK8s(): Promise<K8s> {
  return (loading ??= inSea()
    ? Promise.resolve().then(() => runAssetModule(KUBE_ASSET).exports as K8s)
    : Promise.all([
        import(/* webpackIgnore: true */ '@kubernetes/client-node'),
        import(/* webpackIgnore: true */ '@kubernetes/client-node/dist/serializer.js'),
      ]).then(([k8s, ser]) => ({ ...k8s, ObjectSerializer: ser.ObjectSerializer })));
}
