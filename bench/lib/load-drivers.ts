/**
 * Load drivers: a closed loop (C callers, each sending its next call when the previous one
 * answered) and an open loop (calls started on a fixed-rate schedule whatever the answers, with
 * latency measured from each call's intended start so a slow answer cannot hide the calls it
 * delayed: no coordinated omission).
 */
import { performance } from "node:perf_hooks";
import { createLatencyRecorder, type LatencySummary } from "./latency-recorder.js";

/** Phases tells the harness when the measured window starts and ends. */
export interface Phases {
  warmupMs: number;
  durationMs: number;
  /** Called when warm-up ends and measuring starts. */
  onMeasureStart?: () => void;
  /** Called when the measured window ends (before in-flight calls drain). */
  onMeasureEnd?: () => void;
}

/** ClosedLoopResult is what a closed-loop run measured in its window. */
export interface ClosedLoopResult {
  /** Calls answered in the window. */
  calls: number;
  errors: number;
  /** The first error's message, to tell the reader why. */
  firstError?: string;
  elapsedMs: number;
  /** Calls per second in the window. */
  rate: number;
  latency: LatencySummary;
}

/** Runs `call` from `concurrency` loops for warm-up + duration; latencies count only in the window. */
export async function closedLoop(call: () => Promise<unknown>, concurrency: number, phases: Phases): Promise<ClosedLoopResult> {
  const rec = createLatencyRecorder();
  let measuring = false;
  let stopping = false;
  let errors = 0;
  let firstError: string | undefined;
  let windowStart = 0;
  const worker = async () => {
    while (!stopping) {
      const t0 = performance.now();
      try {
        await call();
        if (measuring) rec.record(performance.now() - t0);
      } catch (err) {
        if (measuring) errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        // A failing target answers fast; pause this caller so errors cannot spin a core.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  const loops = Array.from({ length: concurrency }, worker);
  await new Promise((r) => setTimeout(r, phases.warmupMs));
  rec.reset();
  errors = 0;
  measuring = true;
  windowStart = performance.now();
  phases.onMeasureStart?.();
  await new Promise((r) => setTimeout(r, phases.durationMs));
  measuring = false;
  const elapsedMs = performance.now() - windowStart;
  phases.onMeasureEnd?.();
  stopping = true;
  const latency = rec.summary();
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 10_000))]);
  return { calls: latency.count, errors, firstError, elapsedMs, rate: (latency.count * 1000) / elapsedMs, latency };
}

/** OpenLoopResult is what an open-loop run measured for the calls scheduled in its window. */
export interface OpenLoopResult {
  /** Calls scheduled in the window. */
  scheduled: number;
  /** Of those, answered. */
  answered: number;
  errors: number;
  /** Not answered within the drain timeout after the window. */
  unanswered: number;
  firstError?: string;
  /** Answered calls per second of window. */
  rate: number;
  /** Latency from the intended start of each call (what a user waiting on the schedule sees). */
  latency: LatencySummary;
  /** Latency from the actual start (service time only): the gap to `latency` is generator lag. */
  serviceLatency: LatencySummary;
}

/**
 * Starts `call` at `ratePerSec` on a fixed schedule for warm-up + duration. A 1 ms timer starts
 * every call whose intended time has come; those that start late carry their lateness in
 * `latency`.
 */
export async function openLoop(call: () => Promise<unknown>, ratePerSec: number, phases: Phases, maxOutstanding = 50_000): Promise<OpenLoopResult> {
  const rec = createLatencyRecorder();
  const service = createLatencyRecorder();
  const period = 1000 / ratePerSec;
  const start = performance.now();
  const windowStart = start + phases.warmupMs;
  const end = windowStart + phases.durationMs;
  let next = start;
  let outstanding = 0;
  let scheduled = 0;
  let errors = 0;
  let firstError: string | undefined;
  let announced = false;
  let drained: () => void = () => {};
  const fire = (intended: number) => {
    const inWindow = intended >= windowStart;
    if (inWindow) scheduled++;
    if (outstanding >= maxOutstanding) {
      if (inWindow) errors++;
      firstError ??= `more than ${maxOutstanding} calls outstanding`;
      return;
    }
    outstanding++;
    const actual = performance.now();
    call().then(
      () => {
        const now = performance.now();
        if (inWindow) {
          rec.record(now - intended);
          service.record(now - actual);
        }
        if (--outstanding === 0) drained();
      },
      (err) => {
        if (inWindow) errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        if (--outstanding === 0) drained();
      },
    );
  };
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (!announced && now >= windowStart) {
        announced = true;
        phases.onMeasureStart?.();
      }
      while (next <= now && next < end) {
        fire(next);
        next += period;
      }
      if (next >= end) {
        phases.onMeasureEnd?.();
        resolve();
      }
      else setTimeout(tick, Math.max(0, Math.min(1, next - performance.now())));
    };
    tick();
  });
  if (outstanding > 0) {
    await Promise.race([new Promise<void>((r) => (drained = r)), new Promise((r) => setTimeout(r, 10_000))]);
  }
  const latency = rec.summary();
  return {
    scheduled,
    answered: latency.count,
    errors,
    unanswered: outstanding,
    firstError,
    rate: (latency.count * 1000) / phases.durationMs,
    latency,
    serviceLatency: service.summary(),
  };
}
