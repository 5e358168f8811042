/** Label selectors, with the API's semantics: every matchLabels pair and every expression must hold. */
import type { LabelSelector } from './model';

/**
 * Whether `labels` satisfy `sel`. An empty selector matches everything. `NotIn` and
 * `DoesNotExist` hold for objects that lack the key.
 */
export function matches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false;
  for (const r of sel.matchExpressions) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    switch (r.operator) {
      case 'In':
        if (!has || !r.values.includes(labels[r.key]!)) return false;
        break;
      case 'NotIn':
        if (has && r.values.includes(labels[r.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}
