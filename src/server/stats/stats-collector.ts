/**
 * The live stats: samples every container's load counters once a window (about a second) and
 * turns the differences into rates and latency percentiles per container, per service (summed
 * over its endpoints) and per host (summed over its containers).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { LoadSchema, StatsSchema, type Load, type Stats } from "../../gen/k4s/v1/stats_service_pb.js";
import { LATENCY_BUCKETS, quantileMs, type LoadCounters } from "./load-counters.js";

/** ContainerLoad is what the collector reads of one container. */
export interface ContainerLoad {
  readonly name: string;
  readonly hostName: string;
  readonly phase: string;
  readonly restarts: number;
  /** Deliveries handed to the worker, unsettled. */
  readonly inFlight: number;
  /** Messages waiting in the inbox. */
  readonly inboxDepth: number;
  readonly counters: LoadCounters;
}

/** StatsSource is the live state the collector samples (the messaging plane). */
export interface StatsSource {
  containers(): Iterable<ContainerLoad>;
  /** Services with the names of their ready endpoints. */
  services(): Iterable<{ name: string; endpoints: readonly string[] }>;
}

/** StatsCollectorOptions configure the sampling. */
export interface StatsCollectorOptions {
  source: StatsSource;
  /** Length of a window (ms, default 1000). */
  windowMs?: number;
}

/** StatsCollector samples the load and hands out snapshots. */
export interface StatsCollector {
  /**
   * The snapshot of the last window; sampled now when none ended within a window's length (with
   * nobody watching, windows are not sampled: the rates then average since the last sample).
   */
  latest(): Stats;
  /** The latest snapshot at once, then each new one, until the signal aborts. */
  watch(signal: AbortSignal): AsyncIterable<Stats>;
  /** Ends the current window now and returns its snapshot (the timer does this once a window). */
  sampleNow(): Stats;
  start(): void;
  stop(): void;
}

/** The window of one container: counter differences and the latency histogram's. */
interface Window {
  messages: number;
  requests: number;
  errors: number;
  latency: Uint32Array;
  latencyCount: number;
}

/** What was read of a container's counters at the last sample. */
interface Previous {
  counters: LoadCounters;
  messages: number;
  requests: number;
  errors: number;
  latency: Uint32Array;
}

/** Sums windows and gauges into a Load message; seconds is the window's length. */
function loadOf(parts: { w: Window; inFlight: number; inboxDepth: number; totals: LoadCounters }[], seconds: number): Load {
  let messages = 0;
  let requests = 0;
  let errors = 0;
  let inFlight = 0;
  let inboxDepth = 0;
  let messagesTotal = 0;
  let requestsTotal = 0;
  let errorsTotal = 0;
  let latencyCount = 0;
  let latency: Uint32Array | undefined;
  for (const p of parts) {
    messages += p.w.messages;
    requests += p.w.requests;
    errors += p.w.errors;
    inFlight += p.inFlight;
    inboxDepth += p.inboxDepth;
    messagesTotal += p.totals.messages;
    requestsTotal += p.totals.requests;
    errorsTotal += p.totals.errors;
    if (p.w.latencyCount === 0) continue;
    latencyCount += p.w.latencyCount;
    if (parts.length === 1) latency = p.w.latency;
    else {
      latency ??= new Uint32Array(LATENCY_BUCKETS);
      for (let i = 0; i < LATENCY_BUCKETS; i++) latency[i]! += p.w.latency[i]!;
    }
  }
  const perSecond = (n: number) => (seconds > 0 ? n / seconds : 0);
  return create(LoadSchema, {
    inFlight,
    inboxDepth,
    messagesPerSecond: perSecond(messages),
    requestsPerSecond: perSecond(requests),
    errorsPerSecond: perSecond(errors),
    latencyP50Ms: latency ? quantileMs(latency, latencyCount, 0.5) : 0,
    latencyP90Ms: latency ? quantileMs(latency, latencyCount, 0.9) : 0,
    latencyP99Ms: latency ? quantileMs(latency, latencyCount, 0.99) : 0,
    messagesTotal: BigInt(messagesTotal),
    requestsTotal: BigInt(requestsTotal),
    errorsTotal: BigInt(errorsTotal),
  });
}

/** The latency window of a container that settled nothing (never written). */
const NO_LATENCY = new Uint32Array(LATENCY_BUCKETS);

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Creates a stats collector over a source; start() begins sampling. */
export function createStatsCollector(options: StatsCollectorOptions): StatsCollector {
  const windowMs = options.windowMs ?? 1000;
  const previous = new Map<string, Previous>();
  let lastSampleAt = performance.now();
  let current: Stats | undefined;
  let currentAt = 0;
  /** Open watch() streams: sampling every window (O(containers)) only pays off for them. */
  let watchers = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  let next = new Promise<void>((resolve) => (wake = resolve));

  /** The container's window since the last sample; remembers the counters read. */
  function windowOf(c: ContainerLoad): Window {
    let prev = previous.get(c.name);
    if (!prev || prev.counters !== c.counters) {
      // New (or re-created under the same name): its whole history is this window.
      prev = { counters: c.counters, messages: 0, requests: 0, errors: 0, latency: new Uint32Array(LATENCY_BUCKETS) };
      previous.set(c.name, prev);
    }
    const k = c.counters;
    const w: Window = {
      messages: k.messages - prev.messages,
      requests: k.requests - prev.requests,
      errors: k.errors - prev.errors,
      latency: NO_LATENCY,
      latencyCount: 0,
    };
    if (k.latency && w.messages > 0) {
      w.latency = new Uint32Array(LATENCY_BUCKETS);
      for (let i = 0; i < LATENCY_BUCKETS; i++) {
        // Modulo 2^32: a bucket counter may wrap, a window never holds 2^32 messages.
        const d = (k.latency[i]! - prev.latency[i]!) >>> 0;
        w.latency[i] = d;
        w.latencyCount += d;
      }
      prev.latency.set(k.latency);
    }
    prev.messages = k.messages;
    prev.requests = k.requests;
    prev.errors = k.errors;
    return w;
  }

  function sample(): Stats {
    const now = performance.now();
    const seconds = (now - lastSampleAt) / 1000;
    lastSampleAt = now;
    const containers = [...options.source.containers()].sort(byName);
    const parts = new Map<string, { w: Window; inFlight: number; inboxDepth: number; totals: LoadCounters }>();
    const hosts = new Map<string, string[]>();
    for (const c of containers) {
      parts.set(c.name, { w: windowOf(c), inFlight: c.inFlight, inboxDepth: c.inboxDepth, totals: c.counters });
      let list = hosts.get(c.hostName);
      if (!list) hosts.set(c.hostName, (list = []));
      list.push(c.name);
    }
    for (const name of previous.keys()) if (!parts.has(name)) previous.delete(name);
    const partsOf = (names: readonly string[]) => names.flatMap((n) => parts.get(n) ?? []);
    const services = [...options.source.services()].sort(byName);
    return create(StatsSchema, {
      time: timestampFromMs(Date.now()),
      windowMs: Math.round(seconds * 1000),
      containers: containers.map((c) => ({
        name: c.name,
        host: c.hostName,
        phase: c.phase,
        restarts: c.restarts,
        load: loadOf([parts.get(c.name)!], seconds),
      })),
      services: services.map((s) => {
        const endpoints = [...s.endpoints].sort();
        return { name: s.name, endpoints, load: loadOf(partsOf(endpoints), seconds) };
      }),
      hosts: [...hosts.entries()]
        .map(([name, names]) => ({ name, containers: names, load: loadOf(partsOf(names), seconds) }))
        .sort(byName),
    });
  }

  function tick(): Stats {
    current = sample();
    currentAt = performance.now();
    const w = wake;
    next = new Promise<void>((resolve) => (wake = resolve));
    w?.();
    return current;
  }

  /** Each new snapshot as its window ends, until the signal aborts. */
  async function* following(signal: AbortSignal): AsyncGenerator<Stats> {
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          resolve();
        };
        signal.addEventListener("abort", done);
        next.then(done);
      });
      if (signal.aborted || stopped) return;
      yield current!;
    }
  }

  return {
    latest() {
      return current && performance.now() - currentAt < windowMs ? current : tick();
    },
    async *watch(signal) {
      yield this.latest();
      watchers++;
      try {
        yield* following(signal);
      } finally {
        watchers--;
      }
    },
    sampleNow: tick,
    start() {
      stopped = false;
      lastSampleAt = performance.now();
      // Ten thousand containers make a sample cost tens of milliseconds: none while nobody watches.
      timer ??= setInterval(() => watchers > 0 && tick(), windowMs).unref();
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      timer = undefined;
      wake?.();
    },
  };
}
