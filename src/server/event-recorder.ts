/**
 * Cluster events, as Kubernetes records them: short notes about what happened to an object
 * (Scheduled, Started, BackOff, ScalingReplicaSet, ...), kept in a bounded ring and streamed to
 * followers. Each event gets a position (seq) that a follower resumes after; with a journal, the
 * kept events are also written to the store and read back after a restart.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../gen/k4s/v1/log_service_pb.js";
import type { Kind } from "../api/kinds.js";
import { nextPosition, type TailJournal } from "./tail-journal.js";

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
  /** Kept events, oldest first (those after position `afterSeq`, when given). */
  recent(filter?: { kind?: string; name?: string; afterSeq?: bigint }): Event[];
  /** Calls listener for each new event until the returned function is called. */
  subscribe(listener: (e: Event) => void): () => void;
  /** Reads the kept events back from the journal (before the first record). */
  restore(): Promise<void>;
}

/** The journal group all events are kept in. */
const GROUP = "all";

/** Creates an event recorder keeping the last `capacity` events (default 1000). */
export function createEventRecorder(
  options: { capacity?: number; onRecord?: (e: Event) => void; journal?: TailJournal<Event> } = {},
): EventRecorder {
  const capacity = options.capacity ?? 1000;
  const journal = options.journal;
  // A ring buffer: `count` events, the oldest at `head` (a scale-up records thousands a second,
  // each pushing the oldest out).
  let ring: (Event | undefined)[] = new Array<Event | undefined>(capacity);
  let head = 0;
  let count = 0;
  let last = 0n;
  const listeners = new Set<(e: Event) => void>();
  const kept = (): Event[] => {
    const out: Event[] = [];
    for (let i = 0; i < count; i++) out.push(ring[(head + i) % capacity]!);
    return out;
  };
  const keep = (e: Event): boolean => {
    if (count < capacity) {
      ring[(head + count++) % capacity] = e;
      return false;
    }
    ring[head] = e;
    head = (head + 1) % capacity;
    return true;
  };
  return {
    record(input) {
      last = nextPosition(last);
      const e = create(EventSchema, { time: timestampNow(), type: input.type ?? "Normal", ...input, seq: last });
      journal?.append(GROUP, [e]);
      if (keep(e)) journal?.trimmed(GROUP, ring[head]!.seq);
      options.onRecord?.(e);
      for (const l of listeners) l(e);
    },
    recent(filter = {}) {
      const after = filter.afterSeq ?? 0n;
      return kept().filter((e) => e.seq > after && (!filter.kind || e.kind === filter.kind) && (!filter.name || e.name === filter.name));
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async restore() {
      if (!journal) return;
      const restored = (await journal.load()).get(GROUP) ?? [];
      const all = [...restored.slice(-capacity), ...kept()];
      ring = new Array<Event | undefined>(capacity);
      head = 0;
      count = 0;
      let dropped = false;
      for (const e of all) dropped = keep(e) || dropped;
      last = all.reduce((m, e) => (e.seq > m ? e.seq : m), last);
      if (restored.length > capacity) journal.trimmed(GROUP, restored[restored.length - capacity]!.seq);
      if (dropped) journal.trimmed(GROUP, ring[head]!.seq);
    },
  };
}
