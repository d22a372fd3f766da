/**
 * A keyed work queue with Kubernetes' workqueue semantics: a key waits at most once, a key is
 * never handed to two workers at once, and a key added while it is being processed is handed
 * out again once that processing is done. Delayed adds (for back-off) use one timer per key.
 */

/** WorkQueue hands out keys to workers. */
export interface WorkQueue {
  /** Queues a key unless it already waits; a key being processed is queued again after done(). */
  add(key: string): void;
  /** Queues a key after delayMs; an earlier pending delay for the same key wins. */
  addAfter(key: string, delayMs: number): void;
  /** Waits for the next key; undefined once the queue is shut down. */
  get(): Promise<string | undefined>;
  /** Marks a key handed out by get() as processed. */
  done(key: string): void;
  /** Keys waiting or being processed. */
  readonly length: number;
  /** Stops handing out keys: waiting get() calls resolve undefined, delayed adds are dropped. */
  shutDown(): void;
}

/** Creates an empty work queue. */
export function createWorkQueue(): WorkQueue {
  // queue: keys ready to hand out, in order. dirty: keys that need processing (queued, or
  // re-added while processing). processing: keys handed out and not yet done.
  const queue: string[] = [];
  let head = 0;
  const dirty = new Set<string>();
  const processing = new Set<string>();
  const timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  const waiters: Array<(key: string | undefined) => void> = [];
  let shuttingDown = false;

  const push = (key: string) => {
    const waiter = waiters.shift();
    if (waiter) {
      dirty.delete(key);
      processing.add(key);
      waiter(key);
    } else {
      queue.push(key);
    }
  };

  const take = (): string => {
    const key = queue[head++]!;
    // Compact the array now and then so a long-running queue does not grow without bound.
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    dirty.delete(key);
    processing.add(key);
    return key;
  };

  const add = (key: string) => {
    if (shuttingDown || dirty.has(key)) return;
    dirty.add(key);
    if (!processing.has(key)) push(key);
  };

  return {
    add,
    addAfter(key, delayMs) {
      if (shuttingDown) return;
      if (delayMs <= 0) return add(key);
      const at = Date.now() + delayMs;
      const pending = timers.get(key);
      if (pending && pending.at <= at) return;
      if (pending) clearTimeout(pending.timer);
      const timer = setTimeout(() => {
        timers.delete(key);
        add(key);
      }, delayMs);
      timers.set(key, { at, timer });
    },
    get() {
      if (head < queue.length) return Promise.resolve(take());
      if (shuttingDown) return Promise.resolve(undefined);
      return new Promise((resolve) => waiters.push(resolve));
    },
    done(key) {
      processing.delete(key);
      if (dirty.has(key) && !shuttingDown) push(key);
    },
    get length() {
      return queue.length - head + processing.size;
    },
    shutDown() {
      shuttingDown = true;
      for (const { timer } of timers.values()) clearTimeout(timer);
      timers.clear();
      queue.length = 0;
      head = 0;
      dirty.clear();
      for (const w of waiters.splice(0)) w(undefined);
    },
  };
}
