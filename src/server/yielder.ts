/**
 * Cooperative yielding for long synchronous work on the event loop: decoding thousands of
 * objects, checking a huge Apply, fanning a big revision out, a storm of status writes. Such
 * work awaits `yieldToLoop()` right before each heavy step. The callers queue up and are let go
 * one at a time, each after the previous one took its step, as long as the current slice of
 * event-loop time lasts; then timers and I/O (worker heartbeats, other clients' requests) run
 * before the next slice. So the loop reaches I/O every slice or so, however many tasks are busy
 * at once, and a task that started many steps at once (a Promise.all of writes) still runs
 * them a slice at a time.
 *
 * Two queues, as Kubernetes' API priority and fairness has levels: the steps of a client's
 * request go before the background work of controllers and the messaging plane, so a Get
 * during a storm of ten thousand status writes waits for a slice, not for the storm.
 */

/** The slice of event-loop time cooperative work may hold before it lets I/O run (ms). */
export const SLICE_MS = 10;

/** Whose work a step is: a client's request, or the server's own background work. */
export type Priority = "request" | "background";

/** A FIFO with a moving head (shift() on a long array is linear). */
interface Queue {
  items: (() => void)[];
  head: number;
}

const queues: Record<Priority, Queue> = { request: { items: [], head: 0 }, background: { items: [], head: 0 } };
let sliceStart = performance.now();
let releasing = false;

function take(q: Queue): (() => void) | undefined {
  if (q.head === q.items.length) {
    q.items = [];
    q.head = 0;
    return undefined;
  }
  return q.items[q.head++];
}

/** Lets the next caller go (requests first); the one after goes once that one took its step. */
function release(): void {
  const pending = queues.request.head < queues.request.items.length || queues.background.head < queues.background.items.length;
  if (!pending) {
    take(queues.request);
    take(queues.background);
    releasing = false;
    return;
  }
  if (performance.now() - sliceStart >= SLICE_MS) {
    // setImmediate runs after the I/O callbacks already waiting (a resolved promise would not).
    setImmediate(() => {
      sliceStart = performance.now();
      release();
    });
    return;
  }
  (take(queues.request) ?? take(queues.background))!();
  // Queued behind the caller's continuation: the clock is read again after its step.
  void Promise.resolve().then(release);
}

/** Resolves when it is the caller's turn: at once within the slice, else after I/O had its turn. */
export function yieldToLoop(priority: Priority = "background"): Promise<void> {
  return new Promise<void>((resolve) => {
    queues[priority].items.push(resolve);
    if (!releasing) {
      releasing = true;
      queueMicrotask(release);
    }
  });
}
