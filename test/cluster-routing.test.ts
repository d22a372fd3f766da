/**
 * Routing between servers: three `k4s server` processes over one real etcd; the containers'
 * processes are attached to the leader, and a client speaks only to a standby, whose peer link
 * carries its calls to the leader. Replies, sends, services, deadlines, cancels and a SIGKILLed
 * leader behave across the hop as on one server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import { createClient, type K4sClient } from "../src/client/index.js";
import { attach, type Attached } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { isLeader, startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";

const MANIFEST = `kind: Container
metadata: {name: rt-a, labels: {app: rt}}
spec: {}
---
kind: Container
metadata: {name: rt-b, labels: {app: rt}}
spec: {}
---
kind: Service
metadata: {name: rt-svc}
spec: {matchLabels: {app: rt}}
`;

/** What the attached workers saw. */
interface Seen {
  sends: string[];
  started: string[];
  cancelled: string[];
}

/** Serves a container from this process: sends are recorded, {sleep} waits (until cancelled), anything else is echoed. */
function serve(addresses: string[], container: string, seen: Seen): Attached {
  return attach({
    address: addresses.join(","),
    container,
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        const v = msg.value as { sleep?: number; tag?: string };
        if (!msg.expectsReply) {
          seen.sends.push(String(v.tag));
          return undefined;
        }
        if (v.sleep) {
          seen.started.push(String(v.tag));
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, v.sleep);
            msg.signal.addEventListener("abort", () => {
              clearTimeout(t);
              seen.cancelled.push(String(v.tag));
              resolve();
            });
          });
        }
        return `${container}:${v.tag}`;
      });
    }),
  });
}

/** The code of a call that succeeded. */
const OK = 0;
const codeOf = (err: unknown) => ConnectError.from(err).code;

test("cluster routing: calls through a standby reach containers attached to the leader over the peer link; deadlines, cancels and a SIGKILLed leader behave as on one server", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const workers: Attached[] = [];
  let client: K4sClient | undefined;
  try {
    const [a, b] = cluster.standbys as [ClusterServer, ClusterServer];
    await a.client.apply(MANIFEST);
    // The processes list every server, the leader first (a standby would relay them to it).
    const everyone = [leader, a, b].map((s) => s.address);
    const seen: Seen = { sends: [], started: [], cancelled: [] };
    workers.push(serve(everyone, "rt-a", seen), serve(everyone, "rt-b", seen));
    await Promise.all(workers.map((w) => w.ready));
    await eventually(async () => (await leader.client.servers()).find((s) => s.leader)!.sessions.length === 2, 30_000, "both sessions on the leader");
    // This client knows only the standby B: the last in line for leadership, so that it still
    // stands by, and routes to whoever leads, after the leader is killed below.
    const via = b;
    client = createClient({ address: via.address, reconnect: false });

    // A request through B reaches the container whose process is attached to the leader.
    let t0 = Date.now();
    assert.equal(await client.request("container/rt-a", { tag: "one" }), "rt-a:one");
    const firstMs = Date.now() - t0;
    t0 = Date.now();
    for (let i = 0; i < 50; i++) assert.equal(await client.request("rt-b", { tag: `r${i}` }), `rt-b:r${i}`);
    const perRequestMs = (Date.now() - t0) / 50;

    // The unary MessagingService of B (grpcurl's way in) goes the same way.
    const unary = createConnectClient(MessagingService, createGrpcTransport({ baseUrl: `http://${via.address}` }));
    const viaUnary = await unary.request({ target: "container/rt-a", data: new TextEncoder().encode(JSON.stringify({ tag: "unary" })), contentType: "application/json" });
    assert.equal(JSON.parse(new TextDecoder().decode(viaUnary.data)), "rt-a:unary");
    assert.equal(viaUnary.container, "rt-a");
    const unarySend = await unary.send({ target: "rt-b", data: new TextEncoder().encode(JSON.stringify({ tag: "unary-send" })), contentType: "application/json" });
    assert.equal(unarySend.container, "rt-b");
    await eventually(() => seen.sends.includes("unary-send"), 30_000, "the unary send delivered");
    seen.sends.length = 0;

    // Sends through B are accepted by the leader and delivered, each once.
    const tags = Array.from({ length: 30 }, (_, i) => `s${i}`);
    await Promise.all(tags.map((tag) => client!.send("container/rt-b", { tag })));
    await eventually(() => seen.sends.length >= tags.length, 30_000, "the sends delivered");
    assert.deepEqual([...seen.sends].sort(), [...tags].sort());

    // A service through B spreads over its ready endpoints.
    const answeredBy = new Set<string>();
    for (let i = 0; i < 20; i++) answeredBy.add(String(await client.request("service/rt-svc", { tag: "svc" })).split(":")[0]!);
    assert.deepEqual([...answeredBy].sort(), ["rt-a", "rt-b"]);

    // A deadline holds across the hop: the leader answers DEADLINE_EXCEEDED naming the container.
    t0 = Date.now();
    const late = await client.request("rt-a", { sleep: 60_000, tag: "late" }, { timeoutMs: 500 }).then(
      () => assert.fail("a request past its deadline succeeded"),
      (err: unknown) => ConnectError.from(err),
    );
    const deadlineMs = Date.now() - t0;
    assert.equal(late.code, Code.DeadlineExceeded, late.message);
    assert.match(late.rawMessage, /container "rt-a"/);
    assert.ok(deadlineMs >= 450, `answered after the deadline, not before (${deadlineMs} ms)`);
    // The leader withdrew it from the worker too.
    await eventually(() => seen.cancelled.includes("late"), 30_000, "the expired request withdrawn from the worker");

    // A cancel through B reaches the worker: its handler is told, and the container is free at once.
    const ac = new AbortController();
    const cancelled = client.request("rt-a", { sleep: 60_000, tag: "cancel-me" }, { signal: ac.signal, timeoutMs: 120_000 });
    await eventually(() => seen.started.includes("cancel-me"), 30_000, "the request started");
    ac.abort();
    assert.equal(await cancelled.then(() => OK, codeOf), Code.Canceled);
    await eventually(() => seen.cancelled.includes("cancel-me"), 30_000, "the cancel at the worker");
    assert.equal(await client.request("rt-a", { tag: "after-cancel" }, { timeoutMs: 20_000 }), "rt-a:after-cancel");

    // SIGKILL the leader with a request in its worker's hands and sends pouring in through B.
    const stuck = client.request("rt-a", { sleep: 60_000, tag: "stuck" }, { timeoutMs: 60_000 }).then(
      () => ({ code: OK as Code, at: Date.now() }),
      (err: unknown) => ({ code: codeOf(err), at: Date.now() }),
    );
    await eventually(() => seen.started.includes("stuck"), 30_000, "the request started");
    seen.sends.length = 0;
    const outcomes = new Map<string, Code | 0>();
    let sending = true;
    const sender = (async () => {
      for (let i = 0; sending; i++) {
        const tag = `k${i}`;
        outcomes.set(tag, await client!.send("container/rt-b", { tag }, { timeoutMs: 60_000 }).then(() => OK, codeOf));
      }
    })();
    await eventually(() => outcomes.size >= 20, 30_000, "sends under way");
    const killedAt = Date.now();
    await leader.proc.kill("SIGKILL");
    const { code: stuckCode, at } = await stuck;
    const stuckMs = at - killedAt;
    assert.equal(stuckCode, Code.Unavailable, "the request in flight when the leader died fails UNAVAILABLE");
    assert.ok(stuckMs < 20_000, `the request failed when the peer link broke, not at its deadline (${stuckMs} ms)`);
    await eventually(() => [...outcomes.values()].some((c) => c !== OK), 30_000, "a send refused while no leader is reachable");
    sending = false;
    await sender;
    // Every send was answered; each refused one is the caller's to retry, and a retry through B
    // reaches the next leader once the workers moved there.
    assert.ok([...outcomes.values()].every((c) => c === OK || c === Code.Unavailable), `sends answered OK or UNAVAILABLE: ${[...new Set(outcomes.values())]}`);
    const refused = [...outcomes].filter(([, c]) => c !== OK).map(([tag]) => tag);
    const next = (await eventually(() => [a, b].find(isLeader), 30_000, "a new leader"))!;
    // They moved on: held by the new leader, or relayed to it by the other server.
    await eventually(async () => (await next.client.servers()).reduce((n, s) => n + s.sessions.length, 0) === 2, 30_000, "both sessions held again");
    const retry = createClient({ address: via.address, reconnect: false });
    try {
      for (const tag of refused) await eventually(() => retry.send("container/rt-b", { tag }).then(() => true), 30_000, `send ${tag} accepted`);
      await eventually(() => refused.every((t) => seen.sends.includes(t)), 30_000, "the retried sends delivered");
      assert.equal(await retry.request("rt-a", { tag: "after-kill" }, { timeoutMs: 20_000 }), "rt-a:after-kill");
    } finally {
      await retry.close();
    }
    console.log(
      `# routing through standby ${via.address} to the leader: first request ${firstMs} ms, then ${perRequestMs.toFixed(2)} ms per request (sequential); ` +
        `deadline 500 ms answered after ${deadlineMs} ms; leader SIGKILLed: request in flight failed UNAVAILABLE after ${stuckMs} ms, ` +
        `${outcomes.size} sends answered (${refused.length} UNAVAILABLE, retried and delivered through ${next === via ? "it, now the leader" : `it to the new leader ${next.address}`})`,
    );
  } catch (err) {
    dumpLogs(Object.fromEntries(cluster.servers.map((s, i) => [`server ${i}${s === leader ? " (first leader)" : ""} ${s.address}`, s.proc])));
    throw err;
  } finally {
    await client?.close();
    for (const w of workers) await w.stop(0).catch(() => {});
    await cluster.stop();
  }
});

test("cluster routing: hosts stay on the server they connect to; a request through one server reaches a host on another, a service spreads over hosts on two servers, and a SIGKILLed server's host moves on with its containers resumed", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const hosts: Proc[] = [];
  let client: K4sClient | undefined;
  try {
    const [a, c] = cluster.standbys as [ClusterServer, ClusterServer];
    // One host on the standby C (the leader second in its list, for when C dies), one on the leader.
    hosts.push(spawnK4s(["worker", "--server", `${c.address},${leader.address}`, "--name", "host-c"]));
    hosts.push(spawnK4s(["worker", "--server", leader.address, "--name", "host-l"]));
    const held = async () => Object.fromEntries((await a.client.servers()).map((s) => [s.address, s.sessions.map((x) => x.name).sort().join(",")]));
    await eventually(async () => (await held())[c.address] === "host-c" && (await held())[leader.address] === "host-l", 30_000, "each host held by its server");
    // Two replicas: the scheduler puts them on the least loaded hosts, one on each.
    await a.client.apply(`kind: ReplicaSet
metadata: {name: spread}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: spread}}
    spec: {module: workers, function: echo_worker}
---
kind: Service
metadata: {name: spread}
spec: {matchLabels: {app: spread}}
`);
    await eventually(async () => (await a.client.get("ReplicaSet", "spread")).status?.readyReplicas === 2, 60_000, "2 ready replicas");
    const placed = (await a.client.list("Container")).items;
    assert.deepEqual(placed.map((x) => x.status?.host).sort(), ["host-c", "host-l"], "one replica on each host");
    const onC = placed.find((x) => x.status?.host === "host-c")!.metadata!.name;
    client = createClient({ address: a.address, reconnect: false });
    // Through A to the host connected to C.
    assert.deepEqual(await client.request(`container/${onC}`, "x", { timeoutMs: 20_000 }), "ECHO: x");
    // A service with an endpoint on each host spreads over both (the echo logs say who answered).
    for (let i = 0; i < 40; i++) assert.equal(await client.request("service/spread", `m${i}`, { timeoutMs: 20_000 }), `ECHO: m${i}`);
    const by: Record<string, number> = {};
    // Each container's output is kept by the server holding its host.
    const holderOf: Record<string, ClusterServer> = { "host-c": c, "host-l": leader };
    for (const x of placed) {
      const lines: string[] = [];
      for await (const l of holderOf[x.status!.host]!.client.logs(x.metadata!.name)) lines.push(l.text);
      by[x.status!.host] = lines.filter((t) => /ECHO: m\d+/.test(t)).length;
    }
    assert.ok(by["host-c"]! > 0 && by["host-l"]! > 0, `answered on both hosts: ${JSON.stringify(by)}`);
    const before = (await a.client.get("Container", onC)).status?.restarts;
    const uid = (await a.client.get("Container", onC)).metadata?.uid;
    // SIGKILL C: its host moves to the leader, and its container is resumed, not restarted.
    const killedAt = Date.now();
    await c.proc.kill("SIGKILL");
    await eventually(async () => (await held())[leader.address] === "host-c,host-l", 30_000, "host-c on the leader");
    const movedMs = Date.now() - killedAt;
    await eventually(() => client!.request(`container/${onC}`, "y", { timeoutMs: 5000 }).then((r) => r === "ECHO: y"), 30_000, "the replica on host-c answering again");
    const servedMs = Date.now() - killedAt;
    const after = await a.client.get("Container", onC);
    assert.equal(after.metadata?.uid, uid);
    assert.equal(after.status?.restarts, before, "not restarted");
    console.log(`# host-c on C, host-l on the leader: a service spread over hosts on two servers ${JSON.stringify(by)}; C SIGKILLed: host-c held by the leader after ${movedMs} ms, its replica answering again after ${servedMs} ms, not restarted`);
  } catch (err) {
    dumpLogs({ ...Object.fromEntries(cluster.servers.map((s, i) => [`server ${i}${s === leader ? " (leader)" : ""} ${s.address}`, s.proc])), "host-c": hosts[0], "host-l": hosts[1] });
    throw err;
  } finally {
    await client?.close();
    for (const h of hosts) await h.kill();
    await cluster.stop();
  }
});
