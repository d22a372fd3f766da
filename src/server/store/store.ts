/**
 * The storage interface of the server, shaped like etcd's v3 KV API: a flat ordered key space,
 * a global revision incremented by every write transaction, compare-and-swap transactions, and
 * watches that resume from a revision. A backend keeps a bounded window of history; watching
 * from before it fails with OUT_OF_RANGE so the watcher relists (Kubernetes' 410 Gone).
 */
import { Code, ConnectError } from "@connectrpc/connect";

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

/** RangeOptions page a range read, as etcd's RangeRequest does. */
export interface RangeOptions {
  /** Only keys sorting after this one (the last key of the previous page). */
  readonly after?: string;
  /** At most this many keys; 0 or undefined: all. */
  readonly limit?: number;
  /**
   * Read the keys as they were at this revision (0 or undefined: the current one), so the pages
   * of one listing are consistent. OUT_OF_RANGE when that revision has been compacted.
   */
  readonly revision?: number;
}

/** RangeResult is a consistent read of (a page of) a key prefix. */
export interface RangeResult {
  readonly kvs: KeyValue[];
  /** The store revision the read saw. */
  readonly revision: number;
  /** True when keys past the last one returned remain (only with a limit). */
  readonly more: boolean;
  /**
   * How many keys remain past the last one returned, at the revision read. Exact, except that
   * the SQLite store counts the current keys when reading a past revision.
   */
  readonly remaining: number;
}

/**
 * WatchBatch is what a watch yields: the events of one revision, or none (progress: every
 * change under the prefix up to revision has been yielded).
 */
export interface WatchBatch {
  readonly revision: number;
  readonly events: StoreEvent[];
}

/** Store is a durable, revisioned key-value store with watch. */
export interface Store {
  /** The current revision (0 for an empty, never-written store). */
  revision(): Promise<number>;
  get(key: string): Promise<KeyValue | undefined>;
  /** The keys starting with prefix, sorted by key, all of them or a page. */
  range(prefix: string, options?: RangeOptions): Promise<RangeResult>;
  /**
   * Atomically: if every compare holds, apply every op as one revision and persist it before
   * resolving. One transaction produces one revision and one batch of events. The store keeps
   * the ops' value buffers: the caller must not change them afterwards.
   */
  txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult>;
  /**
   * Streams the changes of keys under prefix with revision > fromRevision, one batch per
   * revision in revision order (a revision's events are never split), then follows new writes
   * until signal aborts. Batches without events report progress. Throws ConnectError
   * OUT_OF_RANGE when fromRevision is older than the kept history.
   */
  watch(prefix: string, fromRevision: number, signal: AbortSignal): AsyncIterable<WatchBatch>;
  /** The oldest revision a watch may start from (and a past range may read). */
  compactRevision(): Promise<number>;
  close(): Promise<void>;
}

/** The OUT_OF_RANGE error for a watch or read from a revision that was compacted away. */
export function compactedError(fromRevision: number, compacted: number): ConnectError {
  return new ConnectError(
    `revision ${fromRevision} is older than the kept history (compacted up to ${compacted}): relist and watch from the listing's revision`,
    Code.OutOfRange,
  );
}

/** The OUT_OF_RANGE error for a watch or read from a revision the store has not reached. */
export function futureRevisionError(revision: number, current: number): ConnectError {
  return new ConnectError(
    `revision ${revision} is newer than the store's revision ${current}: use a resourceVersion this server returned, or relist`,
    Code.OutOfRange,
  );
}

/** The bytes a batch of events holds (keys, values and previous values), for buffer bounds. */
export function eventBytes(events: readonly StoreEvent[]): number {
  let n = 0;
  for (const e of events) n += e.kv.key.length + e.kv.value.byteLength + (e.prevKv?.value.byteLength ?? 0);
  return n;
}

/** The most operations one transaction may carry, in either backend. */
export const MAX_TXN_OPS = 100_000;

/**
 * The most objects a batched write (ResourceStore.createAll, updateStatuses) puts in one
 * transaction: etcd's default --max-txn-ops, so a scale-up works against an etcd cluster
 * started with default flags (its compares and its puts each stay within the limit).
 */
export const MAX_BATCH_WRITES = 128;

/** Refuses a transaction no backend takes: too many operations, or a key written twice. */
export function checkTxnOps(ops: readonly Op[]): void {
  if (ops.length > MAX_TXN_OPS) {
    throw new ConnectError(`transaction has ${ops.length} operations, more than the limit of ${MAX_TXN_OPS}`, Code.InvalidArgument);
  }
  const keys = new Set<string>();
  for (const op of ops) {
    if (keys.has(op.key)) throw new ConnectError(`transaction writes key ${op.key} twice`, Code.InvalidArgument);
    keys.add(op.key);
  }
}
