/**
 * A Prometheus counter incremented in batches: the message path counts every message, and a
 * prom-client inc() (label hashing, bookkeeping) cost a few percent of the server's CPU per
 * message. Counts gather in a plain number and reach the counter at most FLUSH_MS later, well
 * inside any scrape interval.
 */

/** How long counts may wait before they reach the counter (ms). */
const FLUSH_MS = 200;

/** BatchedCounter counts in memory and adds to its counter at most FLUSH_MS later. */
export interface BatchedCounter {
  /** Counts one. */
  inc(): void;
}

/** Creates a batched view of a counter (of prom-client's Counter or a labelled child of it). */
export function createBatchedCounter(counter: { inc(value?: number): void }): BatchedCounter {
  let pending = 0;
  const flush = () => {
    const n = pending;
    pending = 0;
    counter.inc(n);
  };
  return {
    inc() {
      if (pending++ === 0) setTimeout(flush, FLUSH_MS).unref();
    },
  };
}
