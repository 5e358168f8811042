/**
 * The peer record: which peer name runs on which Node, who is reclaiming whose space, and
 * which peers were reclaimed. It lives in one ConfigMap (`weft-peers` in weft's namespace) as
 * one JSON document, changed only by compare-and-swap on the ConfigMap's resourceVersion, so
 * any number of routers can change it at once and none overwrites another.
 *
 * Why one ConfigMap and not Leases: the record and its locks must change together (a
 * reclaim's end removes the peer, drops the claim and adds the tombstone in one write), and a
 * ConfigMap needs the fewest RBAC verbs (get, create, update on one name).
 */
import { KubeApiError } from '../common/errors';
import { sleepUnless } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { byText } from '../common/order';
import type { KubeObject } from '../common/kube-object';

export const RECORD_NAME = 'weft-peers';
export const RECORD_KEY = 'peers.json';
/** Tombstones kept for peers reclaimed earlier; the oldest go first. */
export const MAX_TOMBSTONES = 200;

/**
 * The record's JSON document (ConfigMap data key `peers.json`). Times are ISO 8601 strings.
 */
export interface PeerRecord {
  version: 1;
  /** Routers that registered, by peer name. */
  peers: Record<string, PeerEntry>;
  /** Reclaims in progress, by the peer being reclaimed: the lock. */
  claims: Record<string, Claim>;
  /** Peers whose space was taken over (tombstones): such a peer must start with empty IPAM state. */
  reclaimed: Record<string, { node: string; by: string; at: string }>;
  /** The last finished reclaim, for `weft status`. */
  lastReclaim?: LastReclaim;
  /** Set by the first router whose ring was initialised: from then on, new routers join as observers. */
  ring?: { by: string; at: string };
}

export interface PeerEntry {
  /** Node name the router runs on. */
  node: string;
  /** When it registered. */
  since: string;
  /** A later router registered for the same Node under this peer name: this entry is an old incarnation. */
  supersededBy?: string;
}

/** A reclaimer's lock on one dead peer: valid until `expires`, then anyone may take it over. */
export interface Claim {
  holder: string;
  holderNode: string;
  since: string;
  expires: string;
  /** The holder of an expired claim this one replaced (it died halfway). */
  previousHolder?: string;
}

export interface LastReclaim {
  /** The peer whose space was taken over, and its Node. */
  peer: string;
  node: string;
  /** The router that did it, and its Node. */
  by: string;
  byNode: string;
  at: string;
  /** Addresses taken over (0 when a previous holder had already done it before dying). */
  addresses: number;
  previousHolder?: string;
}

export function emptyRecord(): PeerRecord {
  return { version: 1, peers: {}, claims: {}, reclaimed: {} };
}

/** Reads the document out of the ConfigMap; a missing or unreadable one counts as empty, with a reason. */
export function parseRecord(cm: KubeObject | undefined): { record: PeerRecord; problem?: string } {
  const raw = (cm?.data as Record<string, string> | undefined)?.[RECORD_KEY];
  if (raw === undefined) return { record: emptyRecord() };
  try {
    const r = JSON.parse(raw) as Partial<PeerRecord>;
    if (r.version !== 1) return { record: emptyRecord(), problem: `unknown record version ${String(r.version)}` };
    return { record: { version: 1, peers: r.peers ?? {}, claims: r.claims ?? {}, reclaimed: r.reclaimed ?? {}, lastReclaim: r.lastReclaim, ring: r.ring } };
  } catch (e) {
    return { record: emptyRecord(), problem: `unreadable: ${(e as Error).message}` };
  }
}

/** The ConfigMap calls the record needs (a `KubeClient` has them). */
export interface RecordApi {
  getConfigMap(namespace: string, name: string): Promise<KubeObject | undefined>;
  createConfigMap(namespace: string, body: KubeObject): Promise<KubeObject>;
  replaceConfigMap(namespace: string, body: KubeObject): Promise<KubeObject>;
}

export interface RecordStoreOptions {
  namespace: string;
  name?: string;
  /** How long one `update` may keep retrying (default 30 s). */
  deadlineMs?: number;
}

/** Result of an update function: the new record, or undefined to leave it as it is. */
export type RecordChange = PeerRecord | undefined;

export class RecordStore {
  readonly namespace: string;
  readonly name: string;
  /** The record as last read or written, for status. */
  last: PeerRecord | undefined;

  constructor(
    private readonly c: { api: RecordApi; log: Logger },
    private readonly o: RecordStoreOptions,
  ) {
    this.namespace = o.namespace;
    this.name = o.name ?? RECORD_NAME;
  }

  async read(): Promise<PeerRecord> {
    const cm = await this.c.api.getConfigMap(this.namespace, this.name);
    const { record, problem } = parseRecord(cm);
    if (problem) this.c.log.warn({ configmap: `${this.namespace}/${this.name}`, problem }, 'peer record unusable; treating it as empty');
    this.last = record;
    return record;
  }

  /**
   * Compare-and-swap: reads the record, applies `change` to a copy, writes it with the
   * resourceVersion it read; on 409 (someone wrote in between) reads again and reapplies. A
   * failure other than 409 is retried too, with back-off, until the deadline, then thrown.
   * Returns the record as stored (unchanged when `change` returned undefined).
   */
  async update(change: (r: PeerRecord) => RecordChange, signal?: AbortSignal): Promise<PeerRecord> {
    const deadline = Date.now() + (this.o.deadlineMs ?? 30_000);
    let attempt = 0;
    for (;;) {
      try {
        const cm = await this.c.api.getConfigMap(this.namespace, this.name);
        const { record } = parseRecord(cm);
        const next = change(structuredClone(record));
        if (next === undefined) {
          this.last = record;
          return record;
        }
        const data = { ...((cm?.data as Record<string, string> | undefined) ?? {}), [RECORD_KEY]: JSON.stringify(next) };
        if (cm) await this.c.api.replaceConfigMap(this.namespace, { ...cm, data });
        else await this.c.api.createConfigMap(this.namespace, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: this.name, namespace: this.namespace }, data });
        this.last = next;
        return next;
      } catch (e) {
        const conflict = e instanceof KubeApiError && e.code === 409;
        if (Date.now() >= deadline || signal?.aborted) throw e;
        if (!conflict) this.c.log.warn({ err: (e as Error).message }, 'peer record update failed; retrying');
        // a conflict means progress elsewhere: retry soon; anything else: back off
        const base = conflict ? 5 : 200;
        await sleepUnless(Math.min(5000, base * 2 ** Math.min(attempt++, 8)) * Math.random(), signal);
      }
    }
  }
}

/** Drops the oldest tombstones beyond MAX_TOMBSTONES. */
export function trimTombstones(r: PeerRecord): void {
  const names = Object.keys(r.reclaimed).sort((a, b) => byText(r.reclaimed[a]!.at, r.reclaimed[b]!.at));
  for (const n of names.slice(0, Math.max(0, names.length - MAX_TOMBSTONES))) delete r.reclaimed[n];
}
