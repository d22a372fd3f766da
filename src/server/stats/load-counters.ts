/**
 * The per-container counters behind the live stats: messages, requests and failures settled,
 * and a fixed log-scale histogram of their latency. Recording one message is a few integer
 * operations on preallocated memory; nothing is allocated per message.
 */

/** Sub-buckets per power of two: each bucket is 1/8 of its octave wide (~6 % from its middle). */
const SUB_BITS = 3;
const SUB = 1 << SUB_BITS;

/** Buckets of the latency histogram: every whole microsecond count up to 2^32 µs (71 min). */
export const LATENCY_BUCKETS = (32 - SUB_BITS + 1) * SUB;

/** The histogram bucket of a latency in microseconds. */
export function latencyBucket(us: number): number {
  const v = us >= 0xffffffff ? 0xffffffff : us > 0 ? us >>> 0 : 0;
  if (v < 2 * SUB) return v;
  const e = 31 - Math.clz32(v);
  return ((e - SUB_BITS + 1) << SUB_BITS) | ((v >>> (e - SUB_BITS)) & (SUB - 1));
}

/** The middle of a bucket, in microseconds. */
export function bucketMiddleUs(bucket: number): number {
  if (bucket < 2 * SUB) return bucket + 0.5;
  const group = bucket >> SUB_BITS;
  const width = 2 ** (group - 1);
  return (SUB + (bucket & (SUB - 1))) * width + width / 2;
}

/**
 * The q-quantile (0 < q ≤ 1) of a histogram holding `total` observations, in milliseconds;
 * 0 when it holds none.
 */
export function quantileMs(counts: ArrayLike<number>, total: number, q: number): number {
  if (total <= 0) return 0;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i]!;
    if (seen >= rank) return bucketMiddleUs(i) / 1000;
  }
  return bucketMiddleUs(counts.length - 1) / 1000;
}

/** LoadCounters count what one container settled since it was created. */
export class LoadCounters {
  messages = 0;
  requests = 0;
  errors = 0;
  /** Settled messages by latency bucket; allocated on the first one, so idle containers cost nothing. */
  latency: Uint32Array | undefined = undefined;

  /** Records one settled message: its latency (ms), whether it was a request, whether it failed. */
  record(latencyMs: number, request: boolean, failed: boolean): void {
    this.messages++;
    if (request) this.requests++;
    if (failed) this.errors++;
    const h = (this.latency ??= new Uint32Array(LATENCY_BUCKETS));
    h[latencyBucket(latencyMs * 1000)]!++;
  }
}
