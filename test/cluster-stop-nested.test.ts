/**
 * A server of a cluster that stops gracefully still takes its own workers' calls while it drains:
 * three `k4s server` processes over one real etcd, two containers' processes attached to standby
 * X, a client speaking to standby A. A request to nb-a is in nb-a's handler on X when X is sent
 * SIGTERM; the handler goes on making nested requests and a send to nb-b, which X still serves:
 * they are answered (not refused because X is stopping), so the request X's drain waits for
 * completes. Calls from outside X (a client of X) are refused meanwhile.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectError } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually } from "./helpers.js";

test("cluster stop: while a stopping server drains, a handler there whose request the drain waits for makes nested requests and sends to a container the server still serves, and they are answered", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const [a, x] = cluster.standbys as [ClusterServer, ClusterServer];
  const client = createClient({ address: a.address, reconnect: false });
  const direct = createClient({ address: x.address, reconnect: false });
  const sendsSeen: string[] = [];
  const nested: Array<{ tag: string; ok: boolean; message: string }> = [];
  let stopSeen = false;
  let inHandler = false;
  const attachB = () => attach({
    address: `${x.address},${leader.address}`,
    container: "nb-b",
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        const tag = String((msg.value as { tag?: string }).tag);
        if (!msg.expectsReply) sendsSeen.push(tag);
        return `b:${tag}`;
      });
    }),
  });
  const nestedCall = async (ctx: { request(t: string, v: unknown): Promise<unknown> }, tag: string) => {
    try {
      await ctx.request("container/nb-b", { tag });
      nested.push({ tag, ok: true, message: "" });
    } catch (err) {
      nested.push({ tag, ok: false, message: ConnectError.from(err).rawMessage });
      throw err;
    }
  };
  const attachA = () => attach({
    address: `${x.address},${leader.address}`,
    container: "nb-a",
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        if ((msg.value as { tag?: string }).tag !== "outer") return "warm";
        inHandler = true;
        // Nested calls go on until the test saw X refuse an outside call (it is leaving), then once more.
        for (let i = 0; !stopSeen; i++) {
          await nestedCall(ctx, `n${i}`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await ctx.send("container/nb-b", { tag: "after-stop" });
        await nestedCall(ctx, "after-stop");
        return "done";
      });
    }),
  });
  let aw: ReturnType<typeof attach> | undefined;
  let b: ReturnType<typeof attach> | undefined;
  try {
    await a.client.apply("kind: Container\nmetadata: {name: nb-a}\nspec: {}\n");
    await a.client.apply("kind: Container\nmetadata: {name: nb-b}\nspec: {}\n");
    aw = attachA();
    b = attachB();
    await Promise.all([aw.ready, b.ready]);
    for (const name of ["nb-a", "nb-b"]) {
      await eventually(() => client.request(`container/${name}`, { tag: "warm" }, { timeoutMs: 5000 }).then(() => true), 30_000, `${name} answering through A`);
    }
    // The client of X is connected before the stop (a stopping server accepts no new connection).
    await direct.request("container/nb-b", { tag: "warm" }, { timeoutMs: 5000 });
    const outer = client.request("container/nb-a", { tag: "outer" }, { timeoutMs: 60_000 }).then(
      (value) => ({ code: 0, message: String(value) }),
      (err: unknown) => ({ code: ConnectError.from(err).code, message: ConnectError.from(err).rawMessage }),
    );
    await eventually(() => inHandler && nested.length >= 2, 30_000, "the outer request in nb-a's handler on X");
    const exited = x.proc.kill("SIGTERM");
    // X is leaving once it refuses an outside call for what it holds.
    let probes = 0;
    const seen = new Set<string>();
    for (;;) {
      probes++;
      const refused = await direct.request("container/nb-b", { tag: `probe${probes}` }, { timeoutMs: 2000 }).then(
        () => false,
        (err: unknown) => {
          if (!seen.has(ConnectError.from(err).message)) console.log(`# probe ${probes}: ${ConnectError.from(err).message}`);
          seen.add(ConnectError.from(err).message);
          return /is stopping and did not take this call/.test(ConnectError.from(err).rawMessage);
        },
      );
      if (refused) break;
      assert.ok(probes < 2000, "X refused an outside call while stopping");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    stopSeen = true;
    const got = await outer;
    const code = await exited;
    const failed = nested.filter((n) => !n.ok);
    console.log(
      `# X stopping seen after ${probes} probes; the outer request: ${got.code} ${got.message}; ${nested.length} nested requests, ${failed.length} failed ${JSON.stringify(failed.slice(0, 3))}; X exited ${code}`,
    );
    assert.deepEqual(failed, [], "no nested request of the drained handler was refused");
    assert.deepEqual(got, { code: 0, message: "done" }, "the request the drain waited for completed");
    assert.ok(sendsSeen.includes("after-stop"), "the handler's send during the drain was delivered");
  } catch (err) {
    dumpLogs({ [`leader ${leader.address}`]: leader.proc, [`A ${a.address}`]: a.proc, [`X ${x.address}`]: x.proc });
    throw err;
  } finally {
    stopSeen = true;
    await aw?.stop(1000).catch(() => {});
    await b?.stop(1000).catch(() => {});
    await client.close();
    await direct.close();
    await cluster.stop();
  }
});

test("cluster stop: requests forwarded to a stopping server and still queued there when its drain is over (behind a handler that outlasts it) go on to where the container is next, not failed", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const [a, x] = cluster.standbys as [ClusterServer, ClusterServer];
  const client = createClient({ address: a.address, reconnect: false });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let blocked = false;
  let worker: ReturnType<typeof attach> | undefined;
  try {
    await a.client.apply("kind: Container\nmetadata: {name: nq-a}\nspec: {concurrency: 1}\n");
    worker = attach({
      address: `${x.address},${leader.address}`,
      container: "nq-a",
      worker: defineWorker(async (ctx) => {
        await ctx.handle(async (msg) => {
          const tag = String((msg.value as { tag?: string }).tag);
          if (tag === "block") {
            blocked = true;
            await gate;
          }
          return tag;
        });
      }),
    });
    await worker.ready;
    await eventually(() => client.request("container/nq-a", { tag: "warm" }, { timeoutMs: 5000 }).then(() => true), 30_000, "nq-a answering through A");
    const outcome = (tag: string) =>
      client.request("container/nq-a", { tag }, { timeoutMs: 60_000 }).then(
        (value) => ({ tag, code: 0, message: String(value) }),
        (err: unknown) => ({ tag, code: ConnectError.from(err).code, message: ConnectError.from(err).rawMessage }),
      );
    const block = outcome("block");
    await eventually(() => blocked, 30_000, "the blocking request in nq-a's handler on X");
    // Queued at X behind it (concurrency 1): the drain gives up on them after its 5 s.
    const queued = ["q0", "q1", "q2", "q3", "q4"].map(outcome);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const code = await x.proc.kill("SIGTERM");
    release();
    const got = await Promise.all(queued);
    const first = await block;
    console.log(`# X exited ${code}; the blocking request: ${first.code} ${first.message.slice(0, 80)}; the queued ones: ${JSON.stringify(got.map((g) => [g.code, g.message.slice(0, 60)]))}`);
    assert.deepEqual(
      got.filter((g) => g.code !== 0),
      [],
      "every request queued at X was answered where nq-a went next",
    );
    assert.deepEqual(got.map((g) => g.message), ["q0", "q1", "q2", "q3", "q4"]);
  } catch (err) {
    dumpLogs({ [`leader ${leader.address}`]: leader.proc, [`A ${a.address}`]: a.proc, [`X ${x.address}`]: x.proc });
    throw err;
  } finally {
    release();
    await worker?.stop(1000).catch(() => {});
    await client.close();
    await cluster.stop();
  }
});
