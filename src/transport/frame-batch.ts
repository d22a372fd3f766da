/**
 * How the frames queued on a stream are cut into stream messages: as many as fit in
 * MAX_BATCH_BYTES of payload, and at least one. Both ends of WorkerService.Connect batch this way.
 */
import { MAX_BATCH_BYTES } from "./limits.js";

/** Bytes counted for a frame's fields besides its payload (ids, names, tags). */
const FRAME_OVERHEAD_BYTES = 32;

/** A frame as batching sees it: a oneof whose value may carry payload bytes. */
export interface BatchedFrame {
  readonly frame: { readonly value?: unknown };
}

/** Bytes a frame is counted as: its payload plus FRAME_OVERHEAD_BYTES for the rest. */
export function frameBytes(frame: BatchedFrame): number {
  const v = frame.frame.value as { data?: Uint8Array } | undefined;
  return FRAME_OVERHEAD_BYTES + (v?.data ? v.data.byteLength : 0);
}

/**
 * Returns the end (exclusive) of the batch that starts at `start`: the frames up to
 * MAX_BATCH_BYTES of payload, and never fewer than one.
 */
export function batchEnd(frames: readonly BatchedFrame[], start = 0): number {
  return batchSpan(frames.length, start, (i) => frameBytes(frames[i]!)).end;
}

/**
 * The batch that starts at `start` among `count` frames whose bytes `sizeOf(i)` gives (each
 * frame's frameBytes, for a caller that has them already): its end (exclusive), as batchEnd
 * cuts it, and the bytes of its frames.
 */
export function batchSpan(count: number, start: number, sizeOf: (i: number) => number): { end: number; bytes: number } {
  let bytes = 0;
  for (let i = start; i < count; i++) {
    const size = sizeOf(i);
    if (bytes + size > MAX_BATCH_BYTES && i > start) return { end: i, bytes };
    bytes += size;
  }
  return { end: count, bytes };
}
