/**
 * Batches of work by event-loop turn: the items added in one turn are handled together, and
 * those added while a batch is being handled go in the next one, so a storm of thousands of
 * changes costs a few batched store writes, not thousands.
 */

/** TurnBatcher hands the items added to it to its handler a batch at a time. */
export interface TurnBatcher<T> {
  /** Adds an item to the next batch (once, however often it is added before that batch starts). */
  add(item: T): void;
  /** Tells whether an item is in the batch being handled now. */
  handling(item: T): boolean;
  /** Starts no more batches; resolves once the one being handled is done. */
  stop(): Promise<void>;
}

/**
 * Creates a batcher over `handle`: one batch at a time, each started a turn after its first
 * item came, so the rest of that turn's items join it. A batch whose handler throws goes to
 * `failed` whole (which reports it and must not throw), and the next batch is handled as usual.
 */
export function createTurnBatcher<T>(handle: (batch: T[]) => Promise<void>, failed: (batch: T[], err: unknown) => void): TurnBatcher<T> {
  const waiting = new Set<T>();
  let current = new Set<T>();
  let running: Promise<void> | undefined;
  let stopped = false;

  async function run() {
    try {
      while (waiting.size > 0 && !stopped) {
        // Let the rest of this turn's items land first: one batch for all of them.
        await new Promise((r) => setImmediate(r));
        current = new Set(waiting);
        waiting.clear();
        const batch = [...current];
        try {
          await handle(batch);
        } catch (err) {
          failed(batch, err);
        }
      }
    } finally {
      // In the same turn as the last look at `waiting`: an item added after it starts a new run.
      current = new Set();
      running = undefined;
    }
  }

  return {
    add(item) {
      if (stopped) return;
      waiting.add(item);
      running ??= run();
    },
    handling: (item) => current.has(item),
    async stop() {
      stopped = true;
      await running;
    },
  };
}
