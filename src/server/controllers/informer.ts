/**
 * The informer: the one loop on the server that follows the store for its own components (the
 * controllers and the messaging plane), as Kubernetes' shared informers do. It lists the watched
 * kinds into a cache, hands every change to its subscribers after the cache took it in, and
 * keeps following: a watch that ends or fails is reopened with back-off, and a revision that fell
 * out of the store's history (OUT_OF_RANGE, Kubernetes' 410) makes it relist, reporting what
 * vanished meanwhile as DELETED.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { abortableDelay } from "../../api/abortable-delay.js";
import { createBackoff } from "../../api/backoff.js";
import { kindOf, type AnyObject, type Kind, type ObjectOf } from "../../api/kinds.js";
import type { ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { yieldToLoop } from "../yielder.js";

/**
 * ObjectCache is a read-only view of the watched kinds, as of the last event taken in
 * (Kubernetes' lister). It may lag the store by the events not yet delivered: a reconcile may
 * read from it, but its writes must not trust it blindly.
 */
export interface ObjectCache {
  get<K extends Kind>(kind: K, name: string): ObjectOf<K> | undefined;
  list<K extends Kind>(kind: K): IterableIterator<ObjectOf<K>>;
}

/** InformerOptions configure an informer. */
export interface InformerOptions {
  resources: ResourceStore;
  /** The kinds to follow. */
  kinds: readonly Kind[];
  /** Who is told about watch failures (they are retried); default: ignored. */
  onError?: (message: string, err: unknown) => void;
  /** Name used in error messages. */
  name?: string;
}

/** Informer keeps a cache of some kinds in step with the store and tells subscribers of changes. */
export interface Informer extends ObjectCache {
  /**
   * Calls handler with every event from now on, after the cache took it in. A relist reports
   * objects that vanished meanwhile as DELETED and the others as ADDED or MODIFIED (with the
   * cached object as previous). Handlers run synchronously, in the order they subscribed.
   */
  subscribe(handler: (event: ObjectEvent) => void): () => void;
  /** Lists the kinds, hands the listing to the subscribers, then follows the store. */
  start(): Promise<void>;
  /**
   * Reads one object from the store now and, when the cache has not seen that version yet,
   * takes it in and hands it out as an event: for a caller who knows of a write the watch has
   * not delivered yet. The watch's own event for it is then dropped as a replay.
   */
  refresh<K extends Kind>(kind: K, name: string): Promise<ObjectOf<K> | undefined>;
  /** Stops following; resolves once the watch ended. */
  stop(): Promise<void>;
}

/** Watch reopens back off from this delay, doubling to WATCH_RETRY_MAX_MS. */
const WATCH_RETRY_INITIAL_MS = 10;
const WATCH_RETRY_MAX_MS = 5000;

/** Creates an informer over the given kinds; call start() to fill it. */
export function createInformer(options: InformerOptions): Informer {
  const { resources, kinds } = options;
  const name = options.name ?? "informer";
  const onError = options.onError ?? (() => {});
  const objects = new Map<Kind, Map<string, AnyObject>>(kinds.map((k) => [k, new Map()]));
  const handlers: Array<(event: ObjectEvent) => void> = [];
  const abort = new AbortController();
  let following: Promise<void> | undefined;

  const dispatch = (event: ObjectEvent) => {
    for (const handler of handlers) {
      try {
        handler(event);
      } catch (err) {
        // A subscriber's bug must not wedge the watch on one event; the next relist catches up.
        onError(`${name}: handling a ${event.type} event of ${kindOf(event.object)} "${event.object.metadata?.name}" failed`, err);
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
   * Lists every kind and hands out what changed against the cache (everything, the first
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
      const events: ObjectEvent[] = [];
      for (const obj of listed.get(kind)!) {
        const objName = obj.metadata?.name ?? "";
        seen.add(objName);
        const previous = byName.get(objName);
        byName.set(objName, obj);
        events.push({ type: previous ? "MODIFIED" : "ADDED", object: obj, previous, revision: revisionOf(obj) });
      }
      for (const [objName, obj] of byName) {
        if (seen.has(objName)) continue;
        byName.delete(objName);
        events.push({ type: "DELETED", object: obj, previous: obj, revision: from });
      }
      // Ten thousand objects are handed out a slice at a time, so I/O runs in between.
      for (const event of events) {
        await yieldToLoop();
        dispatch(event);
      }
    }
    return from;
  };

  const follow = async (initialRevision: number) => {
    let from: number | undefined = initialRevision;
    const retries = createBackoff({ initialMs: WATCH_RETRY_INITIAL_MS, maxMs: WATCH_RETRY_MAX_MS });
    while (!abort.signal.aborted) {
      try {
        if (from === undefined) from = await relist();
        for await (const batch of resources.watch({ fromRevision: from }, abort.signal)) {
          retries.reset();
          for (const event of batch.events) {
            // A revision of thousands of objects (a huge apply) fans out a slice at a time.
            await yieldToLoop();
            if (absorb(event)) dispatch(event);
          }
          // Also a batch without events: the watch resumes past revisions that held nothing.
          from = Math.max(from, batch.revision);
        }
        // A watch that ends without being stopped is resumed; back off in case it keeps ending.
        if (!abort.signal.aborted) throw new ConnectError(`${name}: watch ended`, Code.Unavailable);
      } catch (err) {
        if (abort.signal.aborted) return;
        if (ConnectError.from(err).code === Code.OutOfRange) {
          // Our revision fell out of the kept history: relist, as a Kubernetes informer on 410.
          from = undefined;
          continue;
        }
        onError(`${name}: watch failed, retrying`, err);
        await abortableDelay(retries.next(), abort.signal);
      }
    }
  };

  return {
    get: <K extends Kind>(kind: K, objName: string) => objects.get(kind)?.get(objName) as ObjectOf<K> | undefined,
    list: <K extends Kind>(kind: K) => (objects.get(kind) ?? new Map()).values() as IterableIterator<ObjectOf<K>>,
    subscribe(handler) {
      handlers.push(handler);
      return () => {
        const i = handlers.indexOf(handler);
        if (i >= 0) handlers.splice(i, 1);
      };
    },
    async start() {
      if (following) throw new Error(`${name} already started`);
      const from = await relist();
      following = follow(from);
    },
    async refresh<K extends Kind>(kind: K, objName: string) {
      const obj = await resources.get(kind, objName);
      if (!obj || abort.signal.aborted) return obj;
      const previous = objects.get(kind)?.get(objName);
      const event: ObjectEvent = { type: previous ? "MODIFIED" : "ADDED", object: obj, previous, revision: revisionOf(obj) };
      if (absorb(event)) dispatch(event);
      return obj;
    },
    async stop() {
      abort.abort();
      await following;
    },
  };
}

/** The store revision of an object's last change (its resourceVersion as a number). */
export function revisionOf(obj: AnyObject): number {
  return Number(obj.metadata?.resourceVersion ?? 0) || 0;
}
