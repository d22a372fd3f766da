/**
 * The control-plane benchmark of k4s, run as a client process against a fresh server with one
 * worker host: a ReplicaSet of built-in echo workers scaled 0 → N (until all N replicas are
 * Running) and back to 0 (until all are gone), the server's and host's memory asked of the
 * harness at the empty and the N-idle points, and apply-to-watch latency (a Service applied, its
 * ADDED event seen on a watch opened before). Args: address, N, number of applies.
 */
import { performance } from "node:perf_hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type Container, type K4sClient } from "../../src/client/index.js";
import { createLatencyRecorder } from "../lib/latency-recorder.js";
import { failStartup, tellParent } from "../lib/processes.js";

const [address, replicasArg, appliesArg] = process.argv.slice(2);
const N = Number(replicasArg);
const APPLIES = Number(appliesArg);
const STEP_TIMEOUT_MS = 180_000;

/** Asks the harness to read the server's and host's RSS now, and waits until it did. */
function measureMemory(label: string): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (m: { cmd?: string; label?: string }) => {
      if (m.cmd === "memory-read" && m.label === label) {
        process.off("message", onMessage);
        resolve();
      }
    };
    process.on("message", onMessage);
    tellParent({ ev: "memory", label });
  });
}

/**
 * Follows containers named prefix-* from resource version rv and keeps their phases, so a step
 * can wait for a condition over all of them without polling the server.
 */
function followContainers(client: K4sClient, glob: string, rv: string, signal: AbortSignal) {
  const phases = new Map<string, string>();
  let waiter: { test: () => boolean; resolve: () => void } | undefined;
  let failed: unknown;
  let resumes = 0;
  void (async () => {
    let from = rv;
    for (;;) {
      const stream = client.watch({ kind: "Container", nameGlob: glob, resourceVersion: from, signal });
      try {
        for await (const ev of stream) {
          const c = ev.object as Container;
          const name = c.metadata!.name;
          if (ev.type === "DELETED") phases.delete(name);
          else phases.set(name, c.status?.phase ?? "");
          if (waiter?.test()) waiter.resolve();
        }
        return;
      } catch (err) {
        // A client busy digesting tens of thousands of events may miss its own keepalive
        // deadline and cut the stream: pick up where it was, as a reflector does, a few times.
        if (signal.aborted) return;
        if (resumes++ < 10) {
          // Fallen behind the server's kept history: list again (the listing says where they all are).
          const relist = ConnectError.from(err).code === Code.OutOfRange;
          if (relist) phases.clear();
          from = relist ? "" : stream.resourceVersion || from;
          continue;
        }
        // Named, so a failed run says it was the watch (not the apply or scale) that broke.
        failed = new Error(`the watch of containers ${glob} failed after ${phases.size} replicas seen and ${resumes - 1} resumes: ${err instanceof Error ? err.message : String(err)}`);
        waiter?.resolve();
        return;
      }
    }
  })();
  return {
    phases,
    /** How many times the watch was cut and picked up again. */
    resumes: () => resumes,
    until(test: () => boolean, what: string): Promise<void> {
      if (test()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          const running = [...phases.values()].filter((p) => p === "Running").length;
          reject(new Error(`${what}: not reached within ${STEP_TIMEOUT_MS / 1000} s (${phases.size} replicas, ${running} Running)`));
        }, STEP_TIMEOUT_MS);
        waiter = {
          test,
          resolve: () => {
            clearTimeout(timer);
            waiter = undefined;
            if (failed) reject(failed);
            else resolve();
          },
        };
      });
    },
  };
}

async function main() {
  const client = createClient({ address, name: `bench-cp-${process.pid}` });
  const stop = new AbortController();
  try {
    // A probe container proves the host is connected before anything is timed.
    const rv0 = (await client.list("Container")).resourceVersion;
    const probe = followContainers(client, "cp-probe", rv0, stop.signal);
    await client.apply(`apiVersion: k4s/v1\nkind: Container\nmetadata: {name: cp-probe}\nspec: {module: workers, function: echo_worker}\n`);
    await probe.until(() => probe.phases.get("cp-probe") === "Running", "probe container Running");
    await client.delete("Container", "cp-probe");
    await probe.until(() => !probe.phases.has("cp-probe"), "probe container deleted");
    await measureMemory("empty");

    await client.apply(
      `apiVersion: k4s/v1\nkind: ReplicaSet\nmetadata: {name: cp-rs}\nspec:\n  replicas: 0\n  template:\n    spec: {module: workers, function: echo_worker}\n`,
    );
    const rv = (await client.list("Container", { nameGlob: "cp-rs-*" })).resourceVersion;
    const rs = followContainers(client, "cp-rs-*", rv, stop.signal);
    const running = () => {
      let n = 0;
      for (const p of rs.phases.values()) if (p === "Running") n++;
      return n;
    };
    const t0 = performance.now();
    await client.scale("cp-rs", N);
    await rs.until(() => running() === N, `ReplicaSet cp-rs scaled to ${N}`);
    const scaleUpMs = performance.now() - t0;
    await measureMemory("idle");
    const t1 = performance.now();
    await client.scale("cp-rs", 0);
    await rs.until(() => rs.phases.size === 0, "ReplicaSet cp-rs scaled to 0");
    const scaleDownMs = performance.now() - t1;
    await measureMemory("gone");

    // Apply-to-watch: one apply at a time, each timed until its ADDED event reaches the watch.
    const rvs = (await client.list("Service", { nameGlob: "cp-lat-*" })).resourceVersion;
    const seen = new Map<string, () => void>();
    const watching = (async () => {
      for await (const ev of client.watch({ kind: "Service", nameGlob: "cp-lat-*", resourceVersion: rvs, signal: stop.signal })) {
        if (ev.type === "ADDED") seen.get(ev.object.metadata!.name)?.();
      }
    })();
    watching.catch(() => {});
    const toWatch = createLatencyRecorder();
    const applyRtt = createLatencyRecorder();
    for (let i = 0; i < APPLIES; i++) {
      const name = `cp-lat-${i}`;
      const added = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ADDED event for Service ${name} within 10 s`)), 10_000);
        seen.set(name, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      const t = performance.now();
      await client.apply(`apiVersion: k4s/v1\nkind: Service\nmetadata: {name: ${name}}\nspec: {selector: "nothing-${i}-*"}\n`);
      applyRtt.record(performance.now() - t);
      await added;
      toWatch.record(performance.now() - t);
      seen.delete(name);
    }
    return { replicas: N, watchResumes: rs.resumes(), scaleUpMs, scaleDownMs, applyToWatch: toWatch.summary(), applyRoundTrip: applyRtt.summary() };
  } finally {
    stop.abort();
    await client.close();
  }
}

try {
  tellParent({ ev: "ready" });
  const result = await main();
  tellParent({ ev: "result", result });
  process.exit(0);
} catch (err) {
  failStartup(err);
}
