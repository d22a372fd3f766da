/**
 * The work the live stats add to the server, measured in isolation (CPU time, so a shared
 * machine does not inflate it): per settled message (the load counters and the second clock
 * read) and per sampling window (the collector's snapshot of N containers and its encoding for
 * one WatchStats stream). The end-to-end on/off comparison measures the same thing through the
 * whole system, but at a few percent it drowns in the noise of a loaded machine; this part does
 * not.
 */
import { toBinary } from "@bufbuild/protobuf";
import { StatsSchema } from "../../src/gen/k4s/v1/stats_service_pb.js";
import { LoadCounters } from "../../src/server/stats/load-counters.js";
import { createStatsCollector, type ContainerLoad } from "../../src/server/stats/stats-collector.js";

/** StatsWork is what the stats cost per message and per window. */
export interface StatsWork {
  /** CPU ns per settled message: recording it and reading the clock once more. */
  perMessageNs: number;
  /** CPU µs per window: sampling `containers` containers and encoding the snapshot once. */
  perWindowUs: number;
  containers: number;
}

/** CPU µs of fn run n times. */
function cpuUs(n: number, fn: (i: number) => void): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) fn(i);
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

/** Measures the stats' work with `containers` containers (default: the bench's 4, 2 services). */
export function measureStatsWork(containers = 4): StatsWork {
  const counters = Array.from({ length: containers }, () => new LoadCounters());
  let sink = 0;
  const record = (i: number) => {
    // What the router does per settled message: one more clock read, one record.
    const started = performance.now();
    counters[i % containers]!.record(performance.now() - started + (i & 1023) / 100, (i & 1) === 0, false);
  };
  const n = 2_000_000;
  cpuUs(n / 4, record);
  const perMessageNs = (cpuUs(n, record) * 1000) / n;
  const loads: ContainerLoad[] = counters.map((c, i) => ({ name: `c-${i}`, hostName: `h-${i % 2}`, phase: "Running", restarts: 0, inFlight: 3, inboxDepth: 1, counters: c }));
  const collector = createStatsCollector({
    source: { containers: () => loads, services: () => [{ name: "s", endpoints: loads.map((l) => l.name) }] },
  });
  const windows = 2000;
  const sample = () => {
    for (let i = 0; i < 50; i++) counters[i % containers]!.record(i / 10, true, false);
    sink += toBinary(StatsSchema, collector.sampleNow()).length;
  };
  cpuUs(windows / 4, sample);
  const perWindowUs = cpuUs(windows, sample) / windows;
  if (sink < 0) console.log(sink);
  return { perMessageNs, perWindowUs, containers };
}
