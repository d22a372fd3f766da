/**
 * Cluster events, as Kubernetes records them: short notes about what happened to an object
 * (Scheduled, Started, BackOff, ScalingReplicaSet, ...), kept in a bounded ring and streamed to
 * followers. Events are observability, not state: they are not persisted.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../gen/k4s/v1/log_service_pb.js";
import type { Kind } from "../api/kinds.js";

/** EventInput is what a component reports. */
export interface EventInput {
  type?: "Normal" | "Warning";
  reason: string;
  kind: Kind;
  name: string;
  message: string;
}

/** EventRecorder keeps recent events and tells followers about new ones. */
export interface EventRecorder {
  record(e: EventInput): void;
  /** Kept events, oldest first. */
  recent(filter?: { kind?: string; name?: string }): Event[];
  /** Calls listener for each new event until the returned function is called. */
  subscribe(listener: (e: Event) => void): () => void;
}

/** Creates an event recorder keeping the last `capacity` events. */
export function createEventRecorder(options: { capacity?: number; onRecord?: (e: Event) => void } = {}): EventRecorder {
  const capacity = options.capacity ?? 1000;
  const ring: Event[] = [];
  const listeners = new Set<(e: Event) => void>();
  return {
    record(input) {
      const e = create(EventSchema, { time: timestampNow(), type: input.type ?? "Normal", ...input });
      ring.push(e);
      if (ring.length > capacity) ring.shift();
      options.onRecord?.(e);
      for (const l of listeners) l(e);
    },
    recent(filter = {}) {
      return ring.filter((e) => (!filter.kind || e.kind === filter.kind) && (!filter.name || e.name === filter.name));
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
