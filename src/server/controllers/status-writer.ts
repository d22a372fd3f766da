/**
 * Writes the status of Containers as the lifecycle sees them, in batches: every change of the
 * same event-loop turn goes out together (a transaction per MAX_BATCH_WRITES containers, see
 * ResourceStore.updateStatuses), and changes made while a batch is on its way go in the next
 * one, so a scale-up of thousands costs a few revisions, not thousands. A write that would
 * change nothing is skipped.
 */
import { create, equals } from "@bufbuild/protobuf";
import { createBackoff, type Backoff } from "../../api/backoff.js";
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

/** How a status write that failed is retried: 500 ms, doubling while it keeps failing, up to 30 s. */
const STATUS_RETRY = { initialMs: 500, maxMs: 30_000, jitter: 0.2 };

/** Creates a status writer over a resource store. */
export function createStatusWriter(options: {
  resources: ResourceStore;
  onError: (message: string, err: unknown) => void;
  /**
   * A record whose write failed (in a cluster: refused while the server joined etcd again): looked
   * at again after `delayMs`, which grows (capped) while its writes keep failing.
   */
  retry?: (rec: ContainerRecord, delayMs: number) => void;
}): StatusWriter {
  const { resources } = options;
  let stopped = false;
  /** The back-off of each record whose writes are failing now (none: its last write succeeded). */
  const failing = new WeakMap<ContainerRecord, Backoff>();
  /** A write of a record failed: logged once per run of failures, retried later and later. */
  const failed = (rec: ContainerRecord, message: string, err: unknown) => {
    let backoff = failing.get(rec);
    if (!backoff) {
      backoff = createBackoff(STATUS_RETRY);
      failing.set(rec, backoff);
      options.onError(`${message} (retried with back-off up to ${STATUS_RETRY.maxMs / 1000} s; not logged again until a write of it succeeds)`, err);
    }
    options.retry?.(rec, backoff.next());
  };

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
        const rec = recs[i]!;
        if (r.object) remember(rec, r.object);
        if (r.error) {
          if (!stopped) failed(rec, `writing the status of container "${rec.name}" failed`, r.error);
        } else failing.delete(rec);
      });
    },
    (recs, err) => {
      if (stopped) return;
      recs.forEach((rec) => failed(rec, `writing the status of container "${rec.name}" (in a batch of ${recs.length}) failed`, err));
    },
  );

  return {
    write(rec, stored) {
      if (stopped) return;
      if (!batches.handling(rec) && stored?.metadata?.uid === rec.uid && stored.status && equals(ContainerStatusSchema, stored.status, containerStatus(rec, stored))) {
        // Stored as it is (a write on its way when one failed did it): nothing is failing now.
        failing.delete(rec);
        return;
      }
      if (stored) remember(rec, stored);
      batches.add(rec);
    },
    stop() {
      stopped = true;
      return batches.stop();
    },
  };
}
