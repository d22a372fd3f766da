/**
 * The storage interface of the server, shaped like etcd's v3 KV API: a flat ordered key space,
 * a global revision incremented by every write transaction, compare-and-swap transactions, and
 * watches that resume from a revision. A backend keeps a bounded window of history; watching
 * from before it fails with OUT_OF_RANGE so the watcher relists (Kubernetes' 410 Gone).
 */

/** KeyValue is one stored key with its revisions, as in etcd's mvccpb.KeyValue. */
export interface KeyValue {
  readonly key: string;
  readonly value: Uint8Array;
  /** Revision of the write that created the key. */
  readonly createRevision: number;
  /** Revision of the write that last changed the key. */
  readonly modRevision: number;
  /** Number of writes to the key since it was created (1 on create). */
  readonly version: number;
}

/** StoreEvent is one change of one key. */
export interface StoreEvent {
  readonly type: "put" | "delete";
  /** The key after the change; for a delete, the key with empty value at the delete's revision. */
  readonly kv: KeyValue;
  /** The key before the change, if it existed. */
  readonly prevKv: KeyValue | undefined;
}

/** Compare is a transaction guard: the key's modRevision must equal the given one (0: absent). */
export interface Compare {
  readonly key: string;
  readonly modRevision: number;
}

/** Op is a write in a transaction. */
export type Op = { readonly type: "put"; readonly key: string; readonly value: Uint8Array } | { readonly type: "delete"; readonly key: string };

/** TxnResult tells whether the guards held; when they did, the writes are on disk. */
export interface TxnResult {
  readonly succeeded: boolean;
  /** The store revision after the transaction (unchanged when it failed or wrote nothing). */
  readonly revision: number;
}

/** RangeResult is a consistent read of a key prefix. */
export interface RangeResult {
  readonly kvs: KeyValue[];
  /** The store revision the read saw. */
  readonly revision: number;
}

/** Store is a durable, revisioned key-value store with watch. */
export interface Store {
  /** The current revision (0 for an empty, never-written store). */
  revision(): Promise<number>;
  get(key: string): Promise<KeyValue | undefined>;
  /** All keys starting with prefix, sorted by key. */
  range(prefix: string): Promise<RangeResult>;
  /**
   * Atomically: if every compare holds, apply every op as one revision and persist it before
   * resolving. One transaction produces one revision and one batch of events.
   */
  txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult>;
  /**
   * Streams batches of events for keys under prefix with revision > fromRevision, in revision
   * order, then follows new writes until signal aborts. Throws ConnectError OUT_OF_RANGE when
   * fromRevision is older than the kept history.
   */
  watch(prefix: string, fromRevision: number, signal: AbortSignal): AsyncIterable<StoreEvent[]>;
  /** The oldest revision a watch may start from. */
  compactRevision(): Promise<number>;
  close(): Promise<void>;
}
