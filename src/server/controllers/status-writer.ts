/**
 * Writes the status of Containers as the lifecycle sees them, in batches: every change of the
 * same event-loop turn goes out together (a transaction per MAX_BATCH_WRITES containers, see
 * ResourceStore.updateStatuses), and changes made while a batch is on its way go in the next
 * one, so a scale-up of thousands costs a few revisions, not thousands. A write that would
 * change nothing is skipped.
 */
import { create, equals } from "@bufbuild/protobuf";
import { ContainerStatusSchema, type Container, type ContainerStatus } from "../../gen/k4s/v1/resources_pb.js";
import { isNewerVersion } from "../store/newer-version.js";
import type { ResourceStore, StatusUpdate } from "../store/resource-store.js";
import type { ContainerRecord } from "./container-record.js";
import { createTurnBatcher } from "./turn-batcher.js";

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
export function createStatusWriter(options: {
  resources: ResourceStore;
  onError: (message: string, err: unknown) => void;
  /** A record whose write failed (in a cluster: refused while the server joined etcd again): looked at again later. */
  retry?: (rec: ContainerRecord) => void;
}): StatusWriter {
  const { resources } = options;
  let stopped = false;

  /**
   * The newest stored version of each record's object seen (the informer's copy, or what the
   * last write stored): a write finding it still current needs no decoding of the stored one.
   */
  const known = new WeakMap<ContainerRecord, Container>();
  const remember = (rec: ContainerRecord, obj: Container) => {
    if (isNewerVersion(obj, known.get(rec))) known.set(rec, obj);
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

  const batches = createTurnBatcher<ContainerRecord>(
    async (recs) => {
      const results = await resources.updateStatuses("Container", recs.map(update));
      results.forEach((r, i) => {
        // What was just stored is the version the next write of this record will find.
        if (r.object) remember(recs[i]!, r.object);
        if (r.error && !stopped) {
          options.onError(`writing the status of container "${recs[i]!.name}" failed`, r.error);
          options.retry?.(recs[i]!);
        }
      });
    },
    (recs, err) => {
      if (stopped) return;
      options.onError(`writing the status of ${recs.length} containers failed`, err);
      recs.forEach((rec) => options.retry?.(rec));
    },
  );

  return {
    write(rec, stored) {
      if (stopped) return;
      if (!batches.handling(rec) && stored?.metadata?.uid === rec.uid && stored.status && equals(ContainerStatusSchema, stored.status, containerStatus(rec, stored))) return;
      if (stored) remember(rec, stored);
      batches.add(rec);
    },
    stop() {
      stopped = true;
      return batches.stop();
    },
  };
}
