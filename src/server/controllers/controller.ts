/**
 * The controller framework: an informer's events feed a keyed work queue, and workers call an
 * idempotent reconcile(key) that re-reads state (Kubernetes' sample-controller pattern).
 *
 * Each watch maps an event of its kind to the keys it affects. The queue dedupes keys, never
 * hands one key to two workers, and retries a failing key with capped exponential back-off.
 * Nothing polls: a change in the store reaches reconcile within one event-loop turn of the
 * watch delivering it. Other sources (a worker's report, a timer) queue keys with enqueue().
 */
import { equals, type DescMessage, type Message } from "@bufbuild/protobuf";
import { backoffDelay, type BackoffPolicy } from "../../api/backoff.js";
import { kindOf, type AnyObject, type Kind } from "../../api/kinds.js";
import { sameStringMap } from "../../api/string-map.js";
import type { EventRecorder } from "../event-recorder.js";
import type { ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { createInformer, revisionOf, type Informer, type ObjectCache } from "./informer.js";
import { createWorkQueue } from "./work-queue.js";
import { yieldToLoop } from "../yielder.js";

export type { ObjectCache } from "./informer.js";

/** Controller is a running reconcile loop. */
export interface Controller {
  readonly name: string;
  /**
   * Starts the workers. A controller with its own informer lists the watched kinds first (their
   * keys are queued), then follows changes; a shared informer is started by its owner.
   */
  start(): Promise<void>;
  /** Stops the workers (and its own informer), waiting for reconciles in flight. */
  stop(): Promise<void>;
  /** Queues a key, after delayMs when given (an earlier pending delay wins). */
  enqueue(key: string, delayMs?: number): void;
}

/** WatchSpec maps the events of one kind to the keys they affect. */
export interface WatchSpec {
  kind: Kind;
  /**
   * Returns the keys to reconcile for an event. Called after the cache took the event in.
   * A relist reports objects that vanished meanwhile as DELETED and the others as ADDED or
   * MODIFIED (with the cached object as previous).
   */
  keys(event: ObjectEvent, cache: ObjectCache): Iterable<string>;
}

/** ReconcileResult asks for the key to be reconciled again: later with the key's back-off, or after a delay. */
export interface ReconcileResult {
  requeue?: boolean;
  /** Reconcile again after this many ms (a deadline the key waits for), without counting a failure. */
  requeueAfterMs?: number;
}

/** ControllerOptions describe a controller. */
export interface ControllerOptions {
  name: string;
  /** Where the watched kinds come from: a shared informer, or a store to follow with an own one. */
  informer?: Informer;
  resources?: ResourceStore;
  watches: readonly WatchSpec[];
  /**
   * Makes the world match the desired state of one key; re-reads what it needs and is safe to
   * repeat. A rejection retries the key with back-off, and so does a result asking to requeue
   * (for work left over on purpose, without reporting an error). signal aborts on stop.
   */
  reconcile(key: string, signal: AbortSignal, cache: ObjectCache): Promise<ReconcileResult | void> | ReconcileResult | void;
  /** Keys reconciled at once (default 2); one key is never reconciled twice at once. */
  workers?: number;
  /** First retry delay of a failing key (default 5 ms), doubled per failure. */
  backoffBaseMs?: number;
  /** Longest retry delay (default 30 s). */
  backoffMaxMs?: number;
  /** Told about failed reconciles and watch errors (default: ignored; they are retried). */
  onError?: (message: string, err: unknown) => void;
  /** Told after every reconcile, for metrics. */
  onReconcile?: (result: ReconcileReport) => void;
}

/** StoredKindControllerOptions are the dependencies of a controller of stored objects (ReplicaSet, Service). */
export interface StoredKindControllerOptions {
  resources: ResourceStore;
  /** A shared informer to follow the store through (default: the controller's own). */
  informer?: Informer;
  events: EventRecorder;
  /** Keys reconciled at once (default 2). */
  workers?: number;
  /** Told about failed reconciles (they are retried with back-off). */
  onError?: (message: string, err: unknown) => void;
  /** Told after every reconcile, for metrics. */
  onReconcile?: (result: ReconcileReport) => void;
}

/** ReconcileReport describes one finished reconcile, for metrics. */
export interface ReconcileReport {
  controller: string;
  key: string;
  durationMs: number;
  /** What the reconcile threw; undefined when it succeeded (or asked to requeue). */
  error: unknown;
}

/** The cache of a controller that watches nothing. */
const EMPTY_CACHE: ObjectCache = {
  get: () => undefined,
  list: () => [][Symbol.iterator](),
};

/** Creates a controller from a watch-to-keys mapping and a reconcile function. */
export function createController(options: ControllerOptions): Controller {
  const { name, watches } = options;
  const workerCount = Math.max(1, options.workers ?? 2);
  const retry: BackoffPolicy = { initialMs: options.backoffBaseMs ?? 5, maxMs: options.backoffMaxMs ?? 30_000 };
  const onError = options.onError ?? (() => {});
  const watchesByKind = new Map<Kind, WatchSpec[]>();
  for (const w of watches) {
    const list = watchesByKind.get(w.kind) ?? [];
    list.push(w);
    watchesByKind.set(w.kind, list);
  }
  // A controller of in-memory keys only (no watches) needs no informer.
  const owned = !options.informer && watches.length > 0;
  if (owned && !options.resources) throw new Error(`controller ${name}: give informer or resources`);
  const informer: Informer | undefined = owned
    ? createInformer({ resources: options.resources!, kinds: [...watchesByKind.keys()], onError, name: `controller ${name}` })
    : options.informer;
  const cache: ObjectCache = informer ?? EMPTY_CACHE;

  const queue = createWorkQueue();
  const failures = new Map<string, number>();
  const abort = new AbortController();
  let running: Promise<unknown> | undefined;

  const take = (event: ObjectEvent) => {
    for (const w of watchesByKind.get(kindOf(event.object)) ?? []) {
      try {
        for (const key of w.keys(event, cache)) queue.add(key);
      } catch (err) {
        // A mapping bug must not wedge the watch on one event; the next relist catches up.
        onError(`controller ${name}: mapping a ${event.type} event of ${w.kind} "${event.object.metadata?.name}" to keys failed`, err);
      }
    }
  };
  const unsubscribe = informer?.subscribe(take);

  /**
   * A controller started on a shared informer that is already following the store (a server
   * that becomes the leader of its cluster) is handed what the cache holds, as its own
   * informer's first listing would: every object changed while no controller ran (a scale
   * written while the cluster had no leader) is reconciled.
   */
  const takeCached = () => {
    for (const kind of watchesByKind.keys()) for (const object of informer!.list(kind)) take({ type: "ADDED", object, previous: undefined, revision: revisionOf(object) });
  };

  /** Counts a failure of key and returns its next delay. */
  const backoff = (key: string): number => {
    const n = (failures.get(key) ?? 0) + 1;
    failures.set(key, n);
    return backoffDelay(retry, n - 1);
  };

  const work = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      // Thousands of queued keys (a huge apply, a host coming back) are reconciled a slice at
      // a time: heartbeats and requests are served in between.
      await yieldToLoop();
      const started = performance.now();
      let error: unknown;
      try {
        const result = await options.reconcile(key, abort.signal, cache);
        if (abort.signal.aborted) {
          // Stopping: nothing is queued again.
        } else if (result?.requeue) {
          queue.addAfter(key, backoff(key));
        } else {
          failures.delete(key);
          if (result?.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
        }
      } catch (err) {
        error = err;
        if (!abort.signal.aborted) {
          const delay = backoff(key);
          onError(`controller ${name}: reconcile ${key} failed (attempt ${failures.get(key)}), retrying in ${delay} ms`, err);
          queue.addAfter(key, delay);
        }
      } finally {
        queue.done(key);
      }
      options.onReconcile?.({ controller: name, key, durationMs: performance.now() - started, error });
    }
  };

  return {
    name,
    async start() {
      if (running) throw new Error(`controller ${name} already started`);
      if (owned) await informer!.start();
      else if (informer) takeCached();
      running = Promise.all(Array.from({ length: workerCount }, work));
    },
    async stop() {
      abort.abort();
      // A stopped controller of a shared informer is told of nothing more (leadership comes and goes).
      if (!owned) unsubscribe?.();
      queue.shutDown();
      if (owned) await informer!.stop();
      await running;
    },
    enqueue(key, delayMs = 0) {
      queue.addAfter(key, delayMs);
    },
  };
}

/** The keys of a kind's own events: its name, unless only its status changed (see specOrIdentityChanged). */
export function keysOnSpecChange(specSchema: DescMessage): (event: ObjectEvent) => string[] {
  return (e) => (specOrIdentityChanged(e, specSchema) ? [e.object.metadata?.name ?? ""] : []);
}

/**
 * Tells whether an event may change what a controller of this kind does: anything but a
 * MODIFIED event that kept the object's uid, generation, labels, spec and deletion mark, which
 * is (nearly always) the controller's own status write coming back.
 */
export function specOrIdentityChanged(event: ObjectEvent, specSchema: DescMessage): boolean {
  if (event.type !== "MODIFIED" || !event.previous) return true;
  const a = event.previous as AnyObject & { spec?: Message };
  const b = event.object as AnyObject & { spec?: Message };
  const am = a.metadata;
  const bm = b.metadata;
  if (am?.uid !== bm?.uid || am?.generation !== bm?.generation) return true;
  if (!am?.deletionTimestamp !== !bm?.deletionTimestamp) return true;
  if (!sameStringMap(am?.labels, bm?.labels)) return true;
  if (!a.spec || !b.spec) return a.spec !== b.spec;
  return !equals(specSchema, a.spec as never, b.spec as never);
}
