/**
 * The data-plane scenarios of the benchmark, shared by the harness and the load process.
 */
import type { RequestTarget } from "../clients/bench-client.js";

/** Scenario is one measured load shape. */
export interface Scenario {
  /** Stable id, used as the JSON key and table row. */
  id: string;
  /** Human description for the table. */
  title: string;
  /** closed: C callers back to back; open: fixed rate; ff: fire-and-forget, counted by the receiver. */
  kind: "closed" | "open" | "ff";
  target: RequestTarget;
  concurrency: number;
  /** Calls per second (open loop). */
  rate: number;
  bytes: number;
}

/** Scenario run options sent to the load process. */
export interface RunCommand {
  cmd: "run";
  run: number;
  scenario: Scenario;
  warmupMs: number;
  durationMs: number;
}

const KIB = 1024;

/** Returns the scenarios in the order they run each round. */
export function dataPlaneScenarios(): Scenario[] {
  const list: Scenario[] = [];
  for (const bytes of [100, 64 * KIB]) {
    const size = bytes === 100 ? "100B" : "64KiB";
    for (const target of ["rr1", "rr2"] as const) {
      for (const c of [1, 64]) {
        list.push({
          id: `req-${target === "rr1" ? "1rep" : "2rep"}-c${c}-${size}`,
          title: `request/response, service of ${target === "rr1" ? 1 : 2} replica${target === "rr1" ? "" : "s"}, C=${c}, ${size}`,
          kind: "closed",
          target,
          concurrency: c,
          rate: 0,
          bytes,
        });
      }
    }
    list.push({
      id: `ff-c64-${size}`,
      title: `fire-and-forget to one receiver, 64 sends in flight, ${size}`,
      kind: "ff",
      target: "rr1",
      concurrency: 64,
      rate: 0,
      bytes,
    });
  }
  list.push({
    id: "open-1000rps-100B",
    title: "open loop 1,000 req/s, service of 1 replica, 100B",
    kind: "open",
    target: "rr1",
    concurrency: 0,
    rate: 1000,
    bytes: 100,
  });
  return list;
}
