/**
 * The controller framework: a watch feeds a keyed work queue, and workers call an idempotent
 * reconcile(key) that re-reads state (Kubernetes' sample-controller pattern).
 *
 * One watch over the resource store keeps a cache of the watched kinds (an informer) and maps
 * each event to the keys it affects. The queue dedupes keys, never hands one key to two
 * workers, and retries a failing key with capped exponential back-off. Nothing polls: a change
 * in the store reaches reconcile within one event-loop turn of the watch delivering it.
 */
import { equals, type DescMessage, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { kindOf, type AnyObject, type Kind, type ObjectOf } from "../../api/kinds.js";
import type { ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { createWorkQueue } from "./work-queue.js";

/** Controller is a running reconcile loop. */
export interface Controller {
  readonly name: string;
  /** Lists the watched kinds, queues the keys of the listing, then follows changes. */
  start(): Promise<void>;
  /** Stops the watch and the workers, waiting for reconciles in flight. */
  stop(): Promise<void>;
}

/**
 * ObjectCache is the controller's read-only view of the watched kinds, as of the last event
 * taken in (Kubernetes' lister). It finds keys (which services select this container?), and a
 * reconcile may list from it instead of decoding every object from the store, as long as its
 * writes do not trust it blindly: it may lag the store by the events not yet delivered.
 */
export interface ObjectCache {
  get<K extends Kind>(kind: K, name: string): ObjectOf<K> | undefined;
  list<K extends Kind>(kind: K): IterableIterator<ObjectOf<K>>;
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

/** ReconcileResult asks for the key to be reconciled again later, with the key's back-off. */
export interface ReconcileResult {
  requeue: boolean;
}

/** ControllerOptions describe a controller. */
export interface ControllerOptions {
  name: string;
  resources: ResourceStore;
  watches: readonly WatchSpec[];
  /**
   * Makes the world match the desired state of one key; re-reads what it needs and is safe to
   * repeat. A rejection retries the key with back-off, and so does a result asking to requeue
   * (for work left over on purpose, without reporting an error). signal aborts on stop.
   */
  reconcile(key: string, signal: AbortSignal, cache: ObjectCache): Promise<ReconcileResult | void>;
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

/** ReconcileReport describes one finished reconcile, for metrics. */
export interface ReconcileReport {
  controller: string;
  key: string;
  durationMs: number;
  /** What the reconcile threw; undefined when it succeeded (or asked to requeue). */
  error: unknown;
}

/** Creates a controller from a watch-to-keys mapping and a reconcile function. */
export function createController(options: ControllerOptions): Controller {
  const { name, resources, watches } = options;
  const workerCount = Math.max(1, options.workers ?? 2);
  const backoffBaseMs = options.backoffBaseMs ?? 5;
  const backoffMaxMs = options.backoffMaxMs ?? 30_000;
  const onError = options.onError ?? (() => {});
  const watchesByKind = new Map<Kind, WatchSpec[]>();
  for (const w of watches) {
    const list = watchesByKind.get(w.kind) ?? [];
    list.push(w);
    watchesByKind.set(w.kind, list);
  }
  const kinds = [...watchesByKind.keys()];

  const queue = createWorkQueue();
  const failures = new Map<string, number>();
  const objects = new Map<Kind, Map<string, AnyObject>>(kinds.map((k) => [k, new Map()]));
  const cache: ObjectCache = {
    get: <K extends Kind>(kind: K, objName: string) => objects.get(kind)?.get(objName) as ObjectOf<K> | undefined,
    list: <K extends Kind>(kind: K) => (objects.get(kind) ?? new Map()).values() as IterableIterator<ObjectOf<K>>,
  };
  const abort = new AbortController();
  let running: Promise<unknown> | undefined;

  const enqueue = (event: ObjectEvent) => {
    for (const w of watchesByKind.get(kindOf(event.object)) ?? []) {
      try {
        for (const key of w.keys(event, cache)) queue.add(key);
      } catch (err) {
        // A mapping bug must not wedge the watch on one event; the next relist catches up.
        onError(`controller ${name}: mapping a ${event.type} event of ${w.kind} "${event.object.metadata?.name}" to keys failed`, err);
      }
    }
  };

  /** Applies a watch event to the cache; false for a replay older than what the cache holds. */
  const absorb = (event: ObjectEvent): boolean => {
    const byName = objects.get(kindOf(event.object));
    if (!byName) return false;
    const objName = event.object.metadata?.name ?? "";
    const cached = byName.get(objName);
    if (event.type === "DELETED") {
      // A replayed delete of an object the listing already saw re-created.
      if (cached && revisionOf(cached) > event.revision) return false;
      byName.delete(objName);
      return true;
    }
    if (cached && revisionOf(cached) >= revisionOf(event.object)) return false;
    byName.set(objName, event.object);
    return true;
  };

  /**
   * Lists every watched kind and queues what changed against the cache (everything, the first
   * time); resolves to a revision the watch may resume from. Changes between that revision and
   * the listings are replayed by the watch and dropped by absorb().
   */
  const relist = async (): Promise<number> => {
    const from = await resources.revision();
    const listed = new Map<Kind, AnyObject[]>();
    for (const kind of kinds) listed.set(kind, (await resources.list(kind)).items);
    for (const kind of kinds) {
      const byName = objects.get(kind)!;
      const seen = new Set<string>();
      const synthetic: ObjectEvent[] = [];
      for (const obj of listed.get(kind)!) {
        const objName = obj.metadata?.name ?? "";
        seen.add(objName);
        const previous = byName.get(objName);
        byName.set(objName, obj);
        synthetic.push({ type: previous ? "MODIFIED" : "ADDED", object: obj, previous, revision: revisionOf(obj) });
      }
      for (const [objName, obj] of byName) {
        if (seen.has(objName)) continue;
        byName.delete(objName);
        synthetic.push({ type: "DELETED", object: obj, previous: obj, revision: from });
      }
      synthetic.forEach(enqueue);
    }
    return from;
  };

  const follow = async (initialRevision: number) => {
    let from: number | undefined = initialRevision;
    let failuresInRow = 0;
    while (!abort.signal.aborted) {
      try {
        if (from === undefined) from = await relist();
        for await (const batch of resources.watch({ fromRevision: from }, abort.signal)) {
          failuresInRow = 0;
          for (const event of batch) {
            if (absorb(event)) enqueue(event);
            from = Math.max(from, event.revision);
          }
        }
        // A watch that ends without being stopped is resumed; back off in case it keeps ending.
        if (!abort.signal.aborted) throw new ConnectError(`watch for controller ${name} ended`, Code.Unavailable);
      } catch (err) {
        if (abort.signal.aborted) return;
        if (ConnectError.from(err).code === Code.OutOfRange) {
          // Our revision fell out of the kept history: relist, as a Kubernetes informer on 410.
          from = undefined;
          continue;
        }
        onError(`controller ${name}: watch failed, retrying`, err);
        failuresInRow++;
        await abortableDelay(Math.min(backoffBaseMs * 2 ** failuresInRow, backoffMaxMs), abort.signal);
      }
    }
  };

  /** Counts a failure of key and returns its next delay: base * 2^(failures-1), capped. */
  const backoff = (key: string): number => {
    const n = (failures.get(key) ?? 0) + 1;
    failures.set(key, n);
    return Math.min(backoffBaseMs * 2 ** Math.min(n - 1, 30), backoffMaxMs);
  };

  const work = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      const started = performance.now();
      let error: unknown;
      try {
        const result = await options.reconcile(key, abort.signal, cache);
        if (result?.requeue && !abort.signal.aborted) {
          queue.addAfter(key, backoff(key));
        } else {
          failures.delete(key);
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
      const from = await relist();
      running = Promise.all([follow(from), ...Array.from({ length: workerCount }, work)]);
    },
    async stop() {
      abort.abort();
      queue.shutDown();
      await running;
    },
  };
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
  if (!sameLabels(am?.labels, bm?.labels)) return true;
  if (!a.spec || !b.spec) return a.spec !== b.spec;
  return !equals(specSchema, a.spec as never, b.spec as never);
}

/** Tells whether two label maps hold the same keys and values. */
export function sameLabels(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): boolean {
  const entries = Object.entries(a ?? {});
  if (entries.length !== Object.keys(b ?? {}).length) return false;
  return entries.every(([k, v]) => b?.[k] === v);
}

/** The store revision of an object's last change (its resourceVersion as a number). */
function revisionOf(obj: AnyObject): number {
  return Number(obj.metadata?.resourceVersion ?? 0) || 0;
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
