/**
 * Container output: the lines each container logged or printed, kept per container in a bounded
 * buffer (like the kubelet's log files, but in memory) and streamed to `k4s logs -f` followers.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { LogLineSchema, type LogLine } from "../gen/k4s/v1/log_service_pb.js";

/** LogStore keeps recent output lines per container. */
export interface LogStore {
  append(container: string, stream: string, lines: readonly string[]): void;
  /** Kept lines of a container, oldest first; the last `tail` only when tail > 0. */
  lines(container: string, tail?: number): LogLine[];
  /** Calls listener with each new batch of a container's lines until the returned function is called. */
  subscribe(container: string, listener: (lines: LogLine[]) => void): () => void;
  /** Forgets a deleted container's lines. */
  drop(container: string): void;
}

/** Creates a log store keeping `linesPerContainer` lines (default 1000) of each container. */
export function createLogStore(options: { linesPerContainer?: number } = {}): LogStore {
  const limit = options.linesPerContainer ?? 1000;
  const buffers = new Map<string, LogLine[]>();
  const listeners = new Map<string, Set<(lines: LogLine[]) => void>>();
  return {
    append(container, stream, texts) {
      if (texts.length === 0) return;
      const time = timestampNow();
      const batch = texts.map((text) => create(LogLineSchema, { time, container, stream, text }));
      let buf = buffers.get(container);
      if (!buf) buffers.set(container, (buf = []));
      buf.push(...batch);
      if (buf.length > limit) buf.splice(0, buf.length - limit);
      for (const l of listeners.get(container) ?? []) l(batch);
    },
    lines(container, tail = 0) {
      const buf = buffers.get(container) ?? [];
      return tail > 0 ? buf.slice(-tail) : buf.slice();
    },
    subscribe(container, listener) {
      let set = listeners.get(container);
      if (!set) listeners.set(container, (set = new Set()));
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0) listeners.delete(container);
      };
    },
    drop(container) {
      buffers.delete(container);
    },
  };
}
