/**
 * Whether a periodic liveness check runs right after its own event loop was stalled. A loop held
 * up for seconds (a huge apply, a storm of starts) runs its timers before it reads the sockets
 * that filled meanwhile, so a peer whose heartbeats sit unread would look silent: such a check
 * gives every peer one more grace period before calling it lost.
 */

/** StallWatch is told each tick of a periodic check and says whether the check should excuse silence. */
export interface StallWatch {
  /**
   * Call once per tick with the time; true while less than graceMs passed since the loop woke
   * from a stall (a tick later than its interval by more than half of graceMs).
   */
  excused(now: number, graceMs: number): boolean;
}

/** Creates a stall watch for a check that ticks every intervalMs. */
export function createStallWatch(intervalMs: number): StallWatch {
  let lastTick = Date.now();
  let wokeAt = -Infinity;
  return {
    excused(now, graceMs) {
      if (now - lastTick > intervalMs + graceMs / 2) wokeAt = now;
      lastTick = now;
      return now - wokeAt < graceMs;
    },
  };
}
