/**
 * A latency recorder: keeps up to a fixed number of samples (milliseconds) in a preallocated
 * array, so recording costs no allocation, and answers percentiles by sorting a copy once.
 */

/** LatencySummary is what a recorder reports. */
export interface LatencySummary {
  /** Calls recorded (all of them, even past the sample cap). */
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** LatencyRecorder collects latencies in milliseconds. */
export interface LatencyRecorder {
  record(ms: number): void;
  /** Forgets everything recorded (end of warm-up). */
  reset(): void;
  readonly count: number;
  summary(): LatencySummary;
}

/** Returns the q-quantile (0..1) of sorted values by nearest rank; NaN when empty. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** Returns the median of numbers (NaN when there are none or all are NaN). */
export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Creates a recorder keeping at most maxSamples samples (default 2^21); later ones are counted only. */
export function createLatencyRecorder(maxSamples = 1 << 21): LatencyRecorder {
  const samples = new Float64Array(maxSamples);
  let n = 0;
  let count = 0;
  let sum = 0;
  return {
    record(ms) {
      count++;
      sum += ms;
      if (n < maxSamples) samples[n++] = ms;
    },
    reset() {
      n = 0;
      count = 0;
      sum = 0;
    },
    get count() {
      return count;
    },
    summary() {
      const sorted = samples.slice(0, n).sort();
      return {
        count,
        p50: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        p99: quantile(sorted, 0.99),
        max: n ? sorted[n - 1]! : Number.NaN,
        mean: count ? sum / count : Number.NaN,
      };
    },
  };
}
