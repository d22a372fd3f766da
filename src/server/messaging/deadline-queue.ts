/**
 * One timer for every deadline of the router: an intrusive binary min-heap of items keyed by
 * their absolute deadline, with a single setTimeout armed for the earliest one. Items carry
 * their own heap position, so adding and removing allocate nothing and cost O(log n).
 */

/** Deadlined is an item the queue can hold: it stores its deadline and its heap slot. */
export interface Deadlined {
  /** Absolute deadline in ms since the epoch. */
  deadline: number;
  /** Position in the heap; -1 when not queued. Owned by the queue. */
  heapIndex: number;
}

/** DeadlineQueue calls onExpire for each item whose deadline passed. */
export interface DeadlineQueue<T extends Deadlined> {
  /** Queues an item (or moves it when already queued) at its current `deadline`. */
  add(item: T): void;
  /** Removes an item; a no-op when it is not queued. */
  remove(item: T): void;
  readonly size: number;
  /** Drops every item and disarms the timer. */
  clear(): void;
}

/**
 * Creates a deadline queue. The timer is re-armed only when the earliest deadline moves
 * earlier; a timer firing early (its item was removed) just re-arms for the new earliest.
 */
export function createDeadlineQueue<T extends Deadlined>(onExpire: (item: T) => void): DeadlineQueue<T> {
  const heap: T[] = [];
  let timer: NodeJS.Timeout | undefined;
  let armedAt = Infinity;

  const swap = (i: number, j: number) => {
    const a = heap[i]!;
    const b = heap[j]!;
    heap[i] = b;
    heap[j] = a;
    b.heapIndex = i;
    a.heapIndex = j;
  };
  const up = (i: number) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p]!.deadline <= heap[i]!.deadline) break;
      swap(i, p);
      i = p;
    }
  };
  const down = (i: number) => {
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && heap[r]!.deadline < heap[l]!.deadline ? r : l;
      if (heap[i]!.deadline <= heap[m]!.deadline) break;
      swap(i, m);
      i = m;
    }
  };
  const removeAt = (i: number) => {
    const item = heap[i]!;
    const last = heap.pop()!;
    item.heapIndex = -1;
    if (i < heap.length) {
      heap[i] = last;
      last.heapIndex = i;
      up(i);
      down(last.heapIndex);
    }
  };
  const arm = () => {
    const first = heap[0];
    if (!first) return;
    if (timer && armedAt <= first.deadline) return;
    if (timer) clearTimeout(timer);
    armedAt = first.deadline;
    timer = setTimeout(fire, Math.max(0, first.deadline - Date.now()));
    timer.unref();
  };
  const fire = () => {
    timer = undefined;
    armedAt = Infinity;
    const now = Date.now();
    // Bounded per firing so a burst of expiries cannot starve the event loop.
    for (let n = 0; n < 10_000; n++) {
      const first = heap[0];
      if (!first || first.deadline > now) break;
      removeAt(0);
      onExpire(first);
    }
    arm();
  };

  return {
    add(item) {
      if (item.heapIndex >= 0) {
        up(item.heapIndex);
        down(item.heapIndex);
      } else {
        item.heapIndex = heap.length;
        heap.push(item);
        up(item.heapIndex);
      }
      arm();
    },
    remove(item) {
      const i = item.heapIndex;
      if (i < 0 || heap[i] !== item) return;
      removeAt(i);
    },
    get size() {
      return heap.length;
    },
    clear() {
      for (const item of heap) item.heapIndex = -1;
      heap.length = 0;
      if (timer) clearTimeout(timer);
      timer = undefined;
      armedAt = Infinity;
    },
  };
}
