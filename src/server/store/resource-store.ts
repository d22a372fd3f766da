/**
 * The typed object layer over the key-value Store: what the API handlers, the controllers and
 * the messaging plane read and write. It owns the API machinery's rules: uid, generation,
 * resourceVersion and creation time are assigned here; status is written only through
 * updateStatus; a ReplicaSet's delete cascades to the Containers it owns.
 *
 * Keys are `/k4s/<plural>/<name>` and values the protobuf binary of the object; an object's
 * resourceVersion is the modRevision of its key, as a decimal string.
 */
import type { AnyObject, Kind, ObjectOf } from "../../api/kinds.js";
import type { LabelSelector } from "../../api/label-selector.js";
import type { ConnectError } from "@connectrpc/connect";
import type { Store } from "./store.js";

/** ListOptions filter a List or Watch. */
export interface ListOptions {
  /** Glob over names (minimatch); empty or undefined means all. */
  nameGlob?: string;
  /** Labels an object must all carry. */
  labels?: Readonly<Record<string, string>>;
  /** A parsed label selector the objects must also satisfy. */
  labelSelector?: LabelSelector;
}

/** PageOptions ask for one page of a listing (Kubernetes' limit and continue). */
export interface PageOptions extends ListOptions {
  /** The most objects in the page; 0 or undefined: no count limit. */
  limit?: number;
  /** The page ends before the object that would take its stored bytes past this (it holds at least one). */
  maxBytes?: number;
  /**
   * The continueToken of the previous page: read on from there, at that page's revision.
   * INVALID_ARGUMENT when it is not a token for this kind; OUT_OF_RANGE when the revision it
   * reads at has been compacted ("continue token expired").
   */
  continueToken?: string;
}

/** ListResult is a consistent listing (or a page of one) and the revision it was read at. */
export interface ListResult<K extends Kind> {
  /** Sorted by name. */
  items: ObjectOf<K>[];
  revision: number;
  /** Set when more objects follow: pass it as PageOptions.continueToken. */
  continueToken?: string;
  /** How many objects the following pages hold (an estimate), when there is no name or label filter. */
  remainingItemCount?: number;
}

/** ObjectEvent is one change of one object, in Kubernetes' watch vocabulary. */
export interface ObjectEvent {
  type: "ADDED" | "MODIFIED" | "DELETED";
  /** The object after the change (for DELETED, as it was last stored). */
  object: AnyObject;
  /** The object before the change, for MODIFIED and DELETED. */
  previous: AnyObject | undefined;
  revision: number;
  /** The object's stored (encoded) size in bytes, when known (for splitting responses). */
  size?: number;
  /**
   * The object's stored bytes, when known: its protobuf encoding with an empty resourceVersion
   * (the revision is not stored). An API watch sends them as they are instead of encoding the
   * object again. Shared: never modify.
   */
  value?: Uint8Array;
}

/**
 * ObjectBatch is what a watch yields: the events of one store revision, all together, or none
 * (progress: every selected change up to `revision` has been yielded).
 */
export interface ObjectBatch {
  /** The revision of the events; without events, the revision the watch has reached. */
  revision: number;
  events: ObjectEvent[];
  /** True for the initial listing: an ADDED event for every selected object at `revision`. */
  listing?: boolean;
}

/** WatchOptions select the events of a watch. */
export interface WatchOptions extends ListOptions {
  /** Undefined or empty means every kind. */
  kind?: Kind;
  /**
   * Stream events after this revision. Undefined: first the listing batch (an ADDED event for
   * every current object, yielded even when empty so the consumer knows the listing is
   * complete), then follow. Older than the kept history, or newer than the store's revision:
   * ConnectError OUT_OF_RANGE.
   */
  fromRevision?: number;
}

/** ApplyOptions shape an apply. */
export interface ApplyOptions {
  /** Check and report, write nothing. */
  dryRun?: boolean;
  /** How errors name each object (e.g. `document 2 (Container "x")`); default `object N (Kind "name")`. */
  labels?: readonly string[];
}

/** ApplyOutcome is what apply did to one object. */
export interface ApplyOutcome {
  action: "created" | "configured" | "unchanged";
  object: AnyObject;
}

/** BatchResult is what a batched write did to one object: the object as stored, or why not. */
export type BatchResult<T> = { object: T; error?: undefined } | { object?: undefined; error: ConnectError };

/** StatusUpdate is one object's part of a batched status write: see ResourceStore.updateStatus. */
export interface StatusUpdate<K extends Kind> {
  name: string;
  mutate: (current: ObjectOf<K>) => ObjectOf<K>["status"] | undefined;
  /**
   * The caller's read-only copy of the object (an informer's), used instead of decoding the
   * stored one when it is that very version (same resourceVersion): mutate then gets it
   * itself and must not change it, and the result shares its unchanged parts.
   */
  known?: ObjectOf<K>;
}

/** DeleteTarget is one object of a batched delete: see ResourceStore.deleteAll. */
export interface DeleteTarget {
  name: string;
  /** The caller's read-only copy of the object (an informer's), used instead of decoding the stored one when it is that very version. */
  known?: AnyObject;
}

/**
 * ResourceStore reads and writes typed objects. Objects get/list/create/update return are
 * fresh copies that the caller may keep; watch events' objects are shared, read-only; objects
 * passed in are never mutated (they are cloned first).
 * Errors are ConnectErrors: NOT_FOUND, ALREADY_EXISTS, ABORTED (resourceVersion conflict),
 * INVALID_ARGUMENT (bad object).
 */
export interface ResourceStore {
  get<K extends Kind>(kind: K, name: string): Promise<ObjectOf<K> | undefined>;
  /**
   * The stored object as get reads it, but shared and read-only (never to be changed): for a
   * reader that only looks, such as a controller reading its object on every reconcile, a
   * version this process holds already is not decoded again.
   */
  getShared<K extends Kind>(kind: K, name: string): Promise<ObjectOf<K> | undefined>;
  /** Lists the objects of a kind in one consistent read: all of them, or a page. */
  list<K extends Kind>(kind: K, options?: PageOptions): Promise<ListResult<K>>;
  /** Stores a new object: sets apiVersion, kind, uid, generation 1, creationTimestamp, empty status. */
  create<T extends AnyObject>(obj: T): Promise<T>;
  /**
   * Replaces labels, annotations, ownerReference and spec of an existing object, keeping its
   * status. When metadata.resourceVersion is set it must match (else ABORTED). Generation is
   * incremented when spec changed. A write that changes nothing is skipped and returns the
   * stored object.
   */
  update<T extends AnyObject>(obj: T): Promise<T>;
  /**
   * Creates many objects as create() does each, MAX_BATCH_WRITES to a transaction (one
   * revision and one watch batch for each), in order. Each object is created or refused on its
   * own (ALREADY_EXISTS, INVALID_ARGUMENT), never half of one: an object already there leaves
   * the others of its transaction to be written without it.
   */
  createAll<T extends AnyObject>(objects: readonly T[]): Promise<BatchResult<T>[]>;
  /**
   * Read-modify-write of status (controllers only), retried on conflict. `mutate` gets a
   * copy of the current object and returns the new status, or undefined to write nothing.
   * Resolves to the stored object, or undefined when the object does not exist.
   */
  updateStatus<K extends Kind>(
    kind: K,
    name: string,
    mutate: (current: ObjectOf<K>) => ObjectOf<K>["status"] | undefined,
  ): Promise<ObjectOf<K> | undefined>;
  /**
   * updateStatus for many objects of one kind, MAX_BATCH_WRITES to a transaction, each guarded
   * by the revision it was read at; when one of them changed meanwhile, the transaction's
   * objects are written one by one instead (retried on conflict, as updateStatus is). Resolves
   * per update, in order: the stored object (undefined when it does not exist), or the error.
   */
  updateStatuses<K extends Kind>(kind: K, updates: readonly StatusUpdate<K>[]): Promise<BatchResult<ObjectOf<K> | undefined>[]>;
  /**
   * Deletes an object, and for a ReplicaSet the Containers it owns, in one transaction.
   * A Container that is bound to a host (status.host set, not yet finished) is not removed
   * but marked: metadata.deletionTimestamp set and status.phase Terminating; `finalize`
   * removes it later. Resolves to the object as deleted or marked.
   */
  delete(kind: Kind, name: string, options?: { resourceVersion?: string }): Promise<AnyObject>;
  /**
   * Deletes many objects of one kind as delete() does each (a bound Container marked, not
   * removed), MAX_BATCH_WRITES to a transaction (one revision and one watch batch for each),
   * each guarded by the revision it was read at; when one of them changed meanwhile, the
   * transaction's objects are deleted one by one instead. Resolves per target, in order: the
   * object as deleted or marked, or the error (NOT_FOUND for one that is gone). A ReplicaSet
   * takes its Containers along, each ReplicaSet in a transaction of its own.
   */
  deleteAll(kind: Kind, targets: readonly DeleteTarget[]): Promise<BatchResult<AnyObject>[]>;
  /** Removes a Container marked for deletion (its host stopped it or its grace passed). */
  finalize(name: string): Promise<void>;
  /**
   * finalize for many Containers, MAX_BATCH_WRITES to a transaction; a chunk whose objects keep
   * changing is finalized one by one. Resolves per name, in order: undefined, or the error.
   */
  finalizeAll(names: readonly string[]): Promise<(ConnectError | undefined)[]>;
  /**
   * Creates or updates every object in one transaction, all or nothing (seed semantics); at
   * most MAX_APPLY_OBJECTS objects.
   */
  apply(objects: readonly AnyObject[], options?: ApplyOptions): Promise<ApplyOutcome[]>;
  /**
   * Streams batches of object events, one per store revision (never split), and progress
   * batches without events, until signal aborts. Event objects are shared by every watcher of
   * the store: read them, never change them (clone first).
   */
  watch(options: WatchOptions, signal: AbortSignal): AsyncIterable<ObjectBatch>;
  /** The current store revision. */
  revision(): Promise<number>;
  /** The underlying key-value store. */
  readonly store: Store;
}
