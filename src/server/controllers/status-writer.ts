/**
 * Writes the status of Containers as the lifecycle sees them, in batches: every change of the
 * same event-loop turn goes out together (a transaction per MAX_BATCH_WRITES containers, see
 * ResourceStore.updateStatuses), and changes made while a batch is on its way go in the next
 * one, so a scale-up of thousands costs a few revisions, not thousands. A write that would
 * change nothing is skipped.
 */
import { create, equals } from "@bufbuild/protobuf";
import { ContainerStatusSchema, type Container, type ContainerStatus } from "../../gen/k4s/v1/resources_pb.js";
import type { ResourceStore, StatusUpdate } from "../store/resource-store.js";
import type { ContainerRecord } from "./container-record.js";

/** StatusWriter keeps the stored status of containers in step with their records. */
export interface StatusWriter {
  /**
   * Writes a record's status soon (coalescing with other changes). `stored` is the object as
   * the informer holds it: when its status already says what the record says and no write is on
   * its way, nothing is written (a reconcile that changed nothing costs no store round trip).
   */
  write(rec: ContainerRecord, stored?: Container): void;
  /** Stops writing; resolves once the writes on their way are done. */
  stop(): Promise<void>;
}

/** The status a record reports, against the stored object (Terminating once it is marked). */
export function containerStatus(rec: ContainerRecord, current: Container): ContainerStatus {
  return create(ContainerStatusSchema, {
    phase: current.metadata?.deletionTimestamp ? "Terminating" : rec.phase(),
    ready: rec.ready(),
    restarts: rec.restarts,
    host: rec.hostName,
    startedAt: rec.startedAt,
    message: rec.message,
    observedGeneration: rec.observedGeneration,
    exitCode: rec.exitCode,
  });
}

/** Creates a status writer over a resource store. */
export function createStatusWriter(options: { resources: ResourceStore; onError: (message: string, err: unknown) => void }): StatusWriter {
  const { resources } = options;
  /** Records with a change not written yet, and those of the batch on its way. */
  const dirty = new Set<ContainerRecord>();
  let writing = new Set<ContainerRecord>();
  let flushing: Promise<void> | undefined;
  let stopped = false;

  /**
   * The newest stored version of each record's object seen (the informer's copy, or what the
   * last write stored): a write finding it still current needs no decoding of the stored one.
   */
  const known = new WeakMap<ContainerRecord, Container>();
  const remember = (rec: ContainerRecord, obj: Container) => {
    const had = known.get(rec);
    if (!had || Number(obj.metadata?.resourceVersion) > Number(had.metadata?.resourceVersion)) known.set(rec, obj);
  };

  const update = (rec: ContainerRecord): StatusUpdate<"Container"> => ({
    name: rec.name,
    known: known.get(rec),
    mutate: (cur) => {
      if (cur.metadata?.uid !== rec.uid) return undefined;
      const next = containerStatus(rec, cur);
      return cur.status && equals(ContainerStatusSchema, cur.status, next) ? undefined : next;
    },
  });

  async function flush() {
    try {
      while (dirty.size > 0 && !stopped) {
        // Let the rest of this turn's changes land first: one batch for all of them.
        await new Promise((r) => setImmediate(r));
        writing = new Set(dirty);
        dirty.clear();
        const recs = [...writing];
        try {
          const results = await resources.updateStatuses("Container", recs.map(update));
          results.forEach((r, i) => {
            // What was just stored is the version the next write of this record will find.
            if (r.object) remember(recs[i]!, r.object);
            if (r.error && !stopped) options.onError(`writing the status of container "${recs[i]!.name}" failed`, r.error);
          });
        } catch (err) {
          if (!stopped) options.onError(`writing the status of ${recs.length} containers failed`, err);
        }
      }
    } finally {
      // In the same turn as the last look at `dirty`: a write after it starts a new flush.
      writing = new Set();
      flushing = undefined;
    }
  }

  return {
    write(rec, stored) {
      if (stopped) return;
      if (!writing.has(rec) && stored?.metadata?.uid === rec.uid && stored.status && equals(ContainerStatusSchema, stored.status, containerStatus(rec, stored))) return;
      if (stored) remember(rec, stored);
      dirty.add(rec);
      flushing ??= flush();
    },
    async stop() {
      stopped = true;
      await flushing;
    },
  };
}
