/**
 * Writes the status of Containers as the lifecycle sees them, one write per container at a
 * time: changes made while a write is on its way, and every change of the same event-loop
 * turn, go out together in the next one. A write that would change nothing is skipped.
 */
import { create, equals } from "@bufbuild/protobuf";
import { ContainerStatusSchema, type Container, type ContainerStatus } from "../../gen/k4s/v1/resources_pb.js";
import type { ResourceStore } from "../store/resource-store.js";
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
  /** Records with a change not written yet, and those with a write on its way. */
  const dirty = new Set<ContainerRecord>();
  const writing = new Set<ContainerRecord>();
  const writes = new Set<Promise<void>>();
  let stopped = false;

  async function run(rec: ContainerRecord) {
    try {
      while (dirty.has(rec) && !stopped) {
        // Let the rest of this turn's changes land first: one write for all of them.
        await new Promise((r) => setImmediate(r));
        dirty.delete(rec);
        await resources.updateStatus("Container", rec.name, (cur) => {
          if (cur.metadata?.uid !== rec.uid) return undefined;
          const next = containerStatus(rec, cur);
          return cur.status && equals(ContainerStatusSchema, cur.status, next) ? undefined : next;
        });
      }
    } catch (err) {
      if (!stopped) options.onError(`writing the status of container "${rec.name}" failed`, err);
    } finally {
      writing.delete(rec);
    }
  }

  return {
    write(rec, stored) {
      if (stopped) return;
      if (!writing.has(rec) && stored?.metadata?.uid === rec.uid && stored.status && equals(ContainerStatusSchema, stored.status, containerStatus(rec, stored))) return;
      dirty.add(rec);
      if (writing.has(rec)) return;
      writing.add(rec);
      const p = run(rec);
      writes.add(p);
      void p.then(() => writes.delete(p));
    },
    async stop() {
      stopped = true;
      await Promise.allSettled([...writes]);
    },
  };
}
