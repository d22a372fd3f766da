/**
 * A server of a cluster that stops gracefully while other servers forward calls to it: three
 * `k4s server` processes over one real etcd, a container's process attached to standby X (with
 * the leader next in its list), and a client speaking only to standby A, whose peer link carries
 * its calls to X. X is sent SIGTERM under a steady load of requests and sends: a call X refuses
 * because it is stopping, before any worker had it, goes on to wherever the container is next,
 * so only a request a worker had in hand may fail, none runs twice, and every accepted send is
 * delivered.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectError } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually } from "./helpers.js";

/**
 * How long each request may take (ms): long enough that none times out while it waits for the
 * container's next place on a slow machine (a timed-out request never reached a worker, and
 * would read as one that failed without being in a worker's hands).
 */
const REQUEST_TIMEOUT_MS = 60_000;

/** One call's outcome as its caller saw it. */
interface Outcome {
  tag: string;
  code: number;
  message: string;
  ms: number;
}

test("cluster stop: calls forwarded to a server while it stops gracefully go on to where the container is next; only requests a worker had in hand may fail, none runs twice, every accepted send is delivered", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const [a, x] = cluster.standbys as [ClusterServer, ClusterServer];
  const client = createClient({ address: a.address, reconnect: false });
  const started: string[] = [];
  const sendsSeen: string[] = [];
  const serve = () => attach({
    address: `${x.address},${leader.address}`,
    container: "cs-a",
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        const tag = String((msg.value as { tag?: string }).tag);
        if (!msg.expectsReply) {
          sendsSeen.push(tag);
          return undefined;
        }
        started.push(tag);
        await new Promise((resolve) => setTimeout(resolve, 5));
        return tag;
      });
    }),
  });
  let worker: ReturnType<typeof attach> | undefined;
  const requests: Outcome[] = [];
  const sends: Outcome[] = [];
  let running = true;
  try {
    await a.client.apply("kind: Container\nmetadata: {name: cs-a}\nspec: {}\n");
    worker = serve();
    await worker.ready;
    const holds = async (s: ClusterServer) => (await a.client.servers()).find((m) => m.address === s.address)?.sessions.some((x) => x.name.includes("cs-a")) ?? false;
    await eventually(() => holds(x), 30_000, "the process of cs-a held by X");
    await eventually(() => client.request("container/cs-a", { tag: "warm" }, { timeoutMs: 5000 }).then(() => true), 30_000, "cs-a answering through A");
    const call = async (into: Outcome[], tag: string, go: () => Promise<unknown>) => {
      const t0 = Date.now();
      try {
        await go();
        into.push({ tag, code: 0, message: "", ms: Date.now() - t0 });
      } catch (err) {
        const e = ConnectError.from(err);
        into.push({ tag, code: e.code, message: e.rawMessage, ms: Date.now() - t0 });
      }
    };
    let n = 0;
    const requestLoop = async () => {
      while (running) {
        const tag = `r${n++}`;
        await call(requests, tag, () => client.request("container/cs-a", { tag }, { timeoutMs: REQUEST_TIMEOUT_MS }));
      }
    };
    const sendLoop = async () => {
      while (running) {
        const tag = `s${n++}`;
        await call(sends, tag, () => client.send("container/cs-a", { tag }, { timeoutMs: REQUEST_TIMEOUT_MS }));
        // Paced, so that the inbox never fills.
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    };
    const loops = [requestLoop(), requestLoop(), requestLoop(), sendLoop()];
    const answered = () => requests.filter((r) => r.code === 0).length;
    await eventually(() => answered() >= 100, 60_000, "100 requests answered before the stop");
    const before = { requests: requests.length, sends: sends.length };
    const stoppedAt = Date.now();
    const exited = await x.proc.kill("SIGTERM");
    const stopMs = Date.now() - stoppedAt;
    // Load goes on until the container answers from the leader.
    const atExit = answered();
    await eventually(async () => answered() >= atExit + 100 && (await holds(leader)), 60_000, "100 more requests answered, cs-a held by the leader");
    running = false;
    await Promise.all(loops);
    const accepted = sends.filter((s) => s.code === 0).map((s) => s.tag);
    const undelivered = () => accepted.filter((t) => !sendsSeen.includes(t));
    await eventually(() => undelivered().length === 0, 30_000, "every accepted send delivered").catch(() => {});
    const failed = requests.filter((r) => r.code !== 0);
    const sendsFailed = sends.filter((s) => s.code !== 0);
    const twice = started.filter((t, i) => started.indexOf(t) !== i);
    const slowest = Math.max(...requests.map((r) => r.ms));
    const codes = (os: Outcome[]) => {
      const by = new Map<string, number>();
      for (const o of os) by.set(`${o.code} ${o.message.slice(0, 70)}`, (by.get(`${o.code} ${o.message.slice(0, 70)}`) ?? 0) + 1);
      return JSON.stringify([...by].map(([k, v]) => `${v}x ${k}`));
    };
    console.log(
      `# X (SIGTERM, exit ${exited}) stopped in ${stopMs} ms under load through A: ${requests.length} requests (${before.requests} before the stop), ${failed.length} failed ${codes(failed)}, slowest ${slowest} ms; ` +
        `${sends.length} sends (${before.sends} before), ${accepted.length} accepted, ${undelivered().length} not delivered ${JSON.stringify(undelivered().slice(0, 10))}, ${sendsFailed.length} refused ${codes(sendsFailed)}; ${twice.length} requests ran twice`,
    );
    assert.deepEqual(twice, [], "no request ran twice");
    assert.deepEqual(undelivered(), [], "every accepted send delivered");
    // A request that failed was in a worker's hands (it may have run): one that never reached
    // a worker went on to the leader.
    assert.deepEqual(
      failed.filter((r) => !started.includes(r.tag)),
      [],
      "only requests a worker had in hand failed",
    );
    // A send the stopping server refused (it took no call any more) went on.
    assert.deepEqual(
      sendsFailed.filter((s) => /did not take this call/.test(s.message)),
      [],
      "no send refused because X was stopping",
    );
  } catch (err) {
    dumpLogs({ [`leader ${leader.address}`]: leader.proc, [`A ${a.address}`]: a.proc, [`X ${x.address}`]: x.proc });
    throw err;
  } finally {
    running = false;
    await worker?.stop(1000).catch(() => {});
    await client.close();
    await cluster.stop();
  }
});
