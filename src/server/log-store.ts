/**
 * Container output: the lines each container logged or printed, kept per container in a bounded
 * buffer (like the kubelet's log files) and streamed to `k4s logs -f` followers. Each line gets
 * a position (seq) that a follower resumes after; with a journal, the kept lines are also
 * written to the store and read back after a restart.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { LogLineSchema, type LogLine } from "../gen/k4s/v1/log_service_pb.js";
import { nextPosition, type TailJournal } from "./tail-journal.js";

/** LogStore keeps recent output lines per container. */
export interface LogStore {
  append(container: string, stream: string, lines: readonly string[]): void;
  /**
   * Kept lines of a container, oldest first: those after position `afterSeq` (when > 0), and of
   * those the last `tail` only (when > 0).
   */
  lines(container: string, tail?: number, afterSeq?: bigint): LogLine[];
  /** Calls listener with each new batch of a container's lines until the returned function is called. */
  subscribe(container: string, listener: (lines: LogLine[]) => void): () => void;
  /** Forgets a deleted container's lines. */
  drop(container: string): void;
  /** Reads the kept lines back from the journal (before the first append). */
  restore(): Promise<void>;
  /** Forgets every container not in `names` (deleted while the server was down). */
  retain(names: ReadonlySet<string>): void;
}

/** LogStoreOptions bound what is kept and say where it is persisted. */
export interface LogStoreOptions {
  /** Lines kept per container (default 1000). */
  linesPerContainer?: number;
  /** Bytes of text kept per container (default 256 KiB). */
  bytesPerContainer?: number;
  /** Where the kept lines are persisted; in memory only without one. */
  journal?: TailJournal<LogLine>;
}

interface Buffer_ {
  lines: LogLine[];
  bytes: number;
  last: bigint;
}

/** Creates a log store. */
export function createLogStore(options: LogStoreOptions = {}): LogStore {
  const maxLines = options.linesPerContainer ?? 1000;
  const maxBytes = options.bytesPerContainer ?? 256 * 1024;
  const journal = options.journal;
  const buffers = new Map<string, Buffer_>();
  const listeners = new Map<string, Set<(lines: LogLine[]) => void>>();

  const bufferOf = (container: string): Buffer_ => {
    let buf = buffers.get(container);
    if (!buf) buffers.set(container, (buf = { lines: [], bytes: 0, last: 0n }));
    return buf;
  };

  /** Drops the oldest lines beyond the bounds (always keeping the newest). */
  function trim(container: string, buf: Buffer_) {
    let drop = 0;
    while (buf.lines.length - drop > 1 && (buf.lines.length - drop > maxLines || buf.bytes > maxBytes)) {
      buf.bytes -= Buffer.byteLength(buf.lines[drop]!.text);
      drop++;
    }
    if (drop === 0) return;
    buf.lines.splice(0, drop);
    journal?.trimmed(container, buf.lines[0]!.seq);
  }

  return {
    append(container, stream, texts) {
      if (texts.length === 0) return;
      const time = timestampNow();
      const buf = bufferOf(container);
      const batch = texts.map((text) => {
        buf.last = nextPosition(buf.last);
        buf.bytes += Buffer.byteLength(text);
        return create(LogLineSchema, { time, container, stream, text, seq: buf.last });
      });
      buf.lines.push(...batch);
      journal?.append(container, batch);
      trim(container, buf);
      for (const l of listeners.get(container) ?? []) l(batch);
    },
    lines(container, tail = 0, afterSeq = 0n) {
      const all = buffers.get(container)?.lines ?? [];
      let from = 0;
      if (afterSeq > 0n) while (from < all.length && all[from]!.seq <= afterSeq) from++;
      return tail > 0 ? all.slice(Math.max(from, all.length - tail)) : all.slice(from);
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
      journal?.drop(container);
    },
    async restore() {
      if (!journal) return;
      for (const [container, lines] of await journal.load()) {
        const buf = bufferOf(container);
        buf.lines = lines;
        buf.bytes = lines.reduce((n, l) => n + Buffer.byteLength(l.text), 0);
        buf.last = lines[lines.length - 1]?.seq ?? 0n;
        trim(container, buf);
      }
    },
    retain(names) {
      for (const container of [...buffers.keys()]) if (!names.has(container)) this.drop(container);
    },
  };
}
