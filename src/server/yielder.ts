/**
 * Cooperative yielding for long synchronous work on the event loop: decoding thousands of
 * objects, checking a huge Apply, fanning a big revision out. Such work calls `yield()` between
 * items; once it has held the loop for one slice, the call lets timers and I/O run (worker
 * heartbeats, other clients' requests) before it resumes, so nobody waits longer than a slice.
 */

/** The default slice of event-loop time one task may hold before it lets others run (ms). */
export const DEFAULT_SLICE_MS = 10;

/** Yielder paces one task's synchronous steps. */
export interface Yielder {
  /** Resolves at once while the slice lasts; after it, once other pending work had its turn. */
  yield(): Promise<void>;
}

/** Creates a Yielder whose slice starts now. */
export function createYielder(sliceMs = DEFAULT_SLICE_MS): Yielder {
  let sliceStart = performance.now();
  return {
    async yield() {
      if (performance.now() - sliceStart < sliceMs) return;
      // setImmediate runs after the I/O callbacks already waiting, unlike a resolved promise.
      await new Promise<void>((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    },
  };
}
