/**
 * A busy server keeps its live hosts: a real `k4s server` process (default 5 s heartbeats: 15
 * silent seconds lose a session) and a real `k4s worker` host running a canary container, while
 * one Apply creates 2,000 Containers and a ReplicaSet is scaled 0 -> 1,000 replicas on that same
 * host and back to 0. The canary is never restarted or moved, the host's session is never lost (it would say so on
 * stderr), no HostLost event is recorded, and
 * another client's Get is timed throughout (the figures are printed; only a loose bound is
 * asserted: README states the bound `npm run bench:huge` measures at 10,000).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { createClient, type Container, type K4sClient, type ReplicaSet } from "../src/client/index.js";
import { eventually, spawnK4s, type Proc } from "./helpers.js";

const APPLY_OBJECTS = 2000;
const REPLICAS = 1000;
/** What a session may be silent before it is lost (3 default heartbeats): the bound a Get must stay under. */
const PROBE_BOUND_MS = 15_000;

let server: Proc;
let host: Proc;
let client: K4sClient;

before(async () => {
  server = spawnK4s(["server", "--port", "0", "--memory", "--no-local-worker", "--no-dashboard"]);
  await server.waitFor(/listening on \S+/, 30_000);
  const address = /listening on (\S+)/.exec(server.stdout())![1]!;
  host = spawnK4s(["worker", "--server", address, "--name", "live"]);
  await host.waitFor(/serving containers/, 30_000);
  client = createClient({ address });
});

after(async () => {
  await client?.close();
  await host?.kill("SIGKILL");
  await server?.kill("SIGKILL");
});

test(`a live host keeps its container and its session while an Apply of ${APPLY_OBJECTS} and a scale 0 -> ${REPLICAS} -> 0 run`, async () => {
  await client.apply("kind: Container\nmetadata: {name: canary}\nspec: {module: workers, function: echo_worker}\n");
  await eventually(async () => (await client.get("Container", "canary"))?.status?.phase === "Running", 30_000, "the canary running");

  // Followed from now on: the server keeps only its last 1,000 events, fewer than the run makes.
  const canaryEvents: string[] = [];
  const lost: string[] = [];
  const follow = new AbortController();
  const following = (async () => {
    try {
      for await (const e of client.events({ kind: "Container", follow: true, signal: follow.signal })) {
        if (e.reason === "HostLost") lost.push(e.message);
        if (e.name === "canary") canaryEvents.push(`${e.reason}: ${e.message}`);
      }
    } catch {
      // Aborted at the end.
    }
  })();
  let worst = 0;
  let probes = 0;
  let stopped = false;
  const probe = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      await client.get("Container", "canary");
      worst = Math.max(worst, performance.now() - t0);
      probes++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = performance.now();
  try {
    const docs = Array.from({ length: APPLY_OBJECTS }, (_, i) => `kind: Container\nmetadata: {name: pending-${i}}\nspec: {module: nobody-serves, function: f}\n`);
    await client.apply(docs.slice(0, 1000).join("---\n"));
    await client.apply(docs.slice(1000).join("---\n"));
    await client.apply(`kind: ReplicaSet\nmetadata: {name: busy}\nspec: {replicas: 0, template: {spec: {module: workers, function: echo_worker}}}\n`);
    await client.scale("busy", REPLICAS);
    await eventually(async () => ((await client.get("ReplicaSet", "busy")) as ReplicaSet)?.status?.readyReplicas === REPLICAS, 600_000, `${REPLICAS} ready replicas`);
    await client.scale("busy", 0);
    await eventually(async () => (await client.list("Container", { nameGlob: "busy-*", limit: 1 })).items.length === 0, 600_000, "no replica left");
  } finally {
    stopped = true;
    await probe;
    follow.abort();
    await following;
  }
  const seconds = (performance.now() - t0) / 1000;

  const canary = (await client.get("Container", "canary")) as Container;
  console.log(
    `busy-server figures: ${APPLY_OBJECTS} applied + ${REPLICAS} replicas up and down in ${seconds.toFixed(1)} s; ${probes} probes, worst Get ${worst.toFixed(0)} ms; canary restarts ${canary.status?.restarts}, HostLost ${lost.length}`,
  );
  const story = `canary events: ${canaryEvents.join(" | ")}; host stderr: ${host.stderr().slice(-2000)}`;
  assert.deepEqual(lost, [], `HostLost events; ${story}`);
  assert.equal(canary.status?.restarts ?? 0, 0, `canary restarts (${canary.status?.message}); ${story}`);
  assert.equal(canary.status?.phase, "Running");
  assert.equal(canary.status?.host, "live");
  // The host says so on stderr each time its session is lost or comes back.
  assert.doesNotMatch(host.stderr(), /lost the connection|reconnected/, "the host's session was lost");
  assert.ok(worst < PROBE_BOUND_MS, `a Get waited ${worst.toFixed(0)} ms`);
});
