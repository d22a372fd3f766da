/**
 * A call another server refused because it does not hold the container is routed again after
 * a back-off, also when nothing changes in between (no wake): two real `k4s server` processes
 * over a real etcd, and this process playing the forwarding server (its router, its real peer
 * links, showing the peer credential of the first server, read from the cluster's store).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Envelope, type CallAnswer } from "../src/server/messaging/envelope.js";
import type { Letter } from "../src/server/messaging/mailbox.js";
import type { Target } from "../src/api/target.js";
import { backoffDelay } from "../src/api/backoff.js";
import { createClusterRouter, REFUSED_RETRY } from "../src/server/cluster/cluster-router.js";
import { createPeerLinks, type PeerLinks } from "../src/server/cluster/peer-links.js";
import { createEventRecorder } from "../src/server/event-recorder.js";
import { createHostCredentials } from "../src/server/messaging/host-credentials.js";
import { createRouter } from "../src/server/messaging/router.js";
import { openStore } from "../src/server/store/open-store.js";
import { attach, type Attached } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { startCluster } from "./cluster-harness.js";
import { eventually } from "./helpers.js";

/**
 * This process as server A of a two-server cluster, forwarding one request for `target` to X, which
 * A believes delivers `container` (X holds no process of it yet, so it refuses): the call must be
 * forwarded again with no wake, then answered once a process of `container` attaches to X.
 */
async function refusedThenAnswered(o: { container: string; labels: string; target: Target; endpoints?: string[]; value: string }): Promise<{ triedBefore: number; forwards: number }> {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const [a, x] = cluster.servers as [(typeof cluster.servers)[0], (typeof cluster.servers)[0]];
  const store = await openStore({ url: cluster.etcd.storeUrl });
  const credentials = createHostCredentials(store);
  await credentials.load();
  const links = createPeerLinks({ self: () => a.address, peerCredential: () => credentials.issuePeer(a.address) });
  let forwards = 0;
  const counted: PeerLinks = {
    ...links,
    forward(...args) {
      forwards++;
      links.forward(...args);
    },
  };
  // This server's own router knows no process of the container (nor an endpoint of the service).
  const local = createRouter({ events: createEventRecorder() });
  const endpoints = o.endpoints;
  const router = createClusterRouter({ local, links: counted, self: () => a.address, deliveredBy: () => x.address, awaited: () => true, ...(endpoints ? { endpoints: () => endpoints } : {}) });
  let worker: Attached | undefined;
  try {
    await a.client.apply(`kind: Container\nmetadata: {name: ${o.container}${o.labels}}\nspec: {}\n`);
    let answer: CallAnswer | undefined;
    const env: Letter = new Envelope({
      data: Buffer.from(JSON.stringify(o.value)),
      contentType: "application/json",
      expectsReply: true,
      deadline: Date.now() + 120_000,
      onAnswer: (got) => (answer = got),
    });
    router.route(env, o.target);
    // Refused by X each time, and forwarded again with no wake.
    await eventually(() => forwards >= 4 || answer !== undefined, 30_000, "the refused call forwarded again without a wake");
    assert.equal(answer, undefined, "still waiting for a place that takes it");
    const triedBefore = forwards;
    worker = attach({ address: x.address, container: o.container, worker: defineWorker(async (ctx) => ctx.handle(async (msg) => `got ${String(msg.value)}`)) });
    await worker.ready;
    const got = (await eventually(() => answer, 60_000, `the call answered once X holds ${o.container}`))!;
    assert.equal(got.code, 0, got.message);
    assert.equal(JSON.parse(Buffer.from(got.data).toString()), `got ${o.value}`);
    return { triedBefore, forwards };
  } finally {
    await worker?.stop(0).catch(() => {});
    local.stop("done");
    await links.stop("done");
    await store.close();
    await cluster.stop();
  }
}

test("cluster router: a call the server it was forwarded to refused (it does not hold the container) is routed there again after a back-off, with no change seen here, and answered once that server holds the container", async () => {
  const { triedBefore, forwards } = await refusedThenAnswered({ container: "rr-a", labels: "", target: { kind: "container", name: "rr-a" }, value: "x" });
  console.log(`# refused by X ${triedBefore} times before its process attached (back-off 50 ms doubling to 1 s); ${forwards} forwards in all, answered with no wake`);
});

test("cluster router: a service's call that every endpoint refused (none of them this server's) waits in the cluster and is routed again after a back-off, with no change seen here, and answered once an endpoint takes it", async () => {
  const { triedBefore, forwards } = await refusedThenAnswered({ container: "sr-a", labels: ", labels: {app: sr}", target: { kind: "service", name: "sr" }, endpoints: ["sr-a"], value: "y" });
  console.log(`# the service's call refused by its one endpoint's server ${triedBefore} times before its process attached; ${forwards} forwards in all, answered with no wake`);
});

test("cluster router: the back-off of refused calls is spread, so that calls refused together (a server stopping under load) are not routed again in step", () => {
  for (const attempt of [0, 3, 10]) {
    const base = Math.min(REFUSED_RETRY.maxMs, REFUSED_RETRY.initialMs * 2 ** attempt);
    const delays = Array.from({ length: 50 }, () => backoffDelay(REFUSED_RETRY, attempt));
    assert.ok(new Set(delays).size > 1, `retry ${attempt}: 50 delays not all equal (${delays[0]} ms)`);
    for (const d of delays) assert.ok(d >= base * 0.5 && d <= base * 1.5, `retry ${attempt}: ${d} ms near ${base} ms`);
  }
});
