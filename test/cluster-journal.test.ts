/**
 * Messages that wait for a container when it moves between the servers of a cluster, through
 * real parts: two `k4s server` processes over one real etcd, a real `k4s worker` host given both
 * servers, the SDK as the sender. The worker writes a line when it starts and when it is done with
 * a message, so "handled" means handled. A server that starts holding a container (its host moved
 * there) reads back what the container's old holder journaled and did not settle; a server that
 * lets go of a container sends what waited there on to the server holding it now.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { unlinkSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { JOURNAL_PREFIX } from "../src/server/messaging/send-journal.js";
import { openStore } from "../src/server/store/open-store.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";
import { counts, journalKeys, lines, recorderDir } from "./journal-recorder.js";

const at = recorderDir("k4s-cluster-journal-");

test("takeover reads the journal back: durable sends journaled by a server SIGKILLed while its worker was blocked are all handled on the server the host moved to", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  // A holds the host's session; B leads, and the client sends through B (over its peer link to A).
  const b = cluster.leader;
  const a = cluster.standbys[0] as ClusterServer;
  const file = join(at.dir, "takeover.jsonl");
  const gate = join(at.dir, "takeover.gate");
  writeFileSync(gate, "");
  let host: Proc | undefined;
  try {
    host = spawnK4s(["worker", "--server", `${a.address},${b.address}`, "--name", "mover", "--module", `dur=${at.modulePath}`]);
    await eventually(async () => (await b.client.servers()).find((s) => s.address === a.address)?.sessions.some((x) => x.name === "mover"), 30_000, "host mover held by A");
    await b.client.apply(`kind: Container\nmetadata: {name: keeper}\nspec: {module: dur, function: recorder, delivery: durable, parameters: ${JSON.stringify({ file, gate })}}\n`);
    await eventually(async () => (await b.client.get("Container", "keeper")).status?.ready === true, 60_000, "keeper ready");

    // Handled and acknowledged before the kill: removed from the journal, never handled again.
    const early = 10;
    for (let i = 0; i < early; i++) await b.client.send("container/keeper", { i });
    await eventually(() => lines(file).length >= early, 30_000, "the early sends handled");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the early sends settled in the journal");

    // The worker blocks on the first of these; the rest wait in A's inbox, journaled by A.
    unlinkSync(gate);
    const acked: number[] = [];
    for (let i = early; i < early + 60; i++) {
      await b.client.send("container/keeper", { i });
      acked.push(i);
    }
    await eventually(() => lines(file, "start").length > early, 30_000, "the worker holds a message");
    const journaled = (await journalKeys(cluster.etcd.storeUrl)).length;
    assert.equal(journaled, acked.length, "every accepted send is in the journal before the kill");
    const store = await openStore({ url: cluster.etcd.storeUrl });
    const last = (await store.range(JOURNAL_PREFIX)).kvs.at(-1)!;
    await store.close();
    const t0 = Date.now();
    await a.proc.kill("SIGKILL");
    await eventually(async () => (await b.client.servers()).find((s) => s.address === b.address)?.sessions.some((x) => x.name === "mover"), 30_000, "host mover held by B");
    const movedMs = Date.now() - t0;
    writeFileSync(gate, "");

    const want = new Set(acked);
    await eventually(
      () => {
        const c = counts(file);
        return [...want].every((i) => c.has(i));
      },
      90_000,
      "every send accepted before the kill handled on B",
    );
    const handledMs = Date.now() - t0;
    const c = counts(file);
    const duplicates = [...c.values()].reduce((n, k) => n + k - 1, 0);
    for (let i = 0; i < early; i++) assert.equal(c.get(i), 1, `send ${i}, acknowledged before the kill, was handled once`);
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");

    // A send the old holder journals late (it saw the move late), past B's first read again:
    // B, still holding the container, reads it back on its next read.
    await new Promise((r) => setTimeout(r, Math.max(0, 4000 - (Date.now() - t0))));
    const lateI = acked.at(-1)!;
    const before = counts(file).get(lateI) ?? 0;
    const late = await openStore({ url: cluster.etcd.storeUrl });
    await late.txn([], [{ type: "put", key: `${last.key}-late`, value: last.value }]);
    await late.close();
    await eventually(() => (counts(file).get(lateI) ?? 0) > before, 30_000, "the send journaled late handled on B");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty again");
    console.log(
      `# takeover: ${acked.length} sends journaled by A, A SIGKILLed; host on B after ${movedMs} ms, all handled after ${handledMs} ms; ` +
        `handled ${acked.filter((i) => c.has(i)).length}, duplicates ${duplicates}, lost 0`,
    );
  } catch (err) {
    dumpLogs({ "server A": a.proc, "server B (leader)": b.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

/**
 * A TCP proxy to a server: the host reaches A through it, so that the test can break the host's
 * connection (and refuse it again) while A keeps running. `cut(true)` breaks only the host's side:
 * A's side stays open, silent, so A sees its link to the host as open until its heartbeat misses.
 */
async function tcpProxy(to: string): Promise<{ address: string; cut(halfOpen?: boolean): void }> {
  const colon = to.lastIndexOf(":");
  const sockets = new Set<Socket>();
  const pairs = new Map<Socket, Socket>();
  const { connect } = await import("node:net");
  const server = createServer((inbound) => {
    const outbound = connect(Number(to.slice(colon + 1)), to.slice(0, colon));
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    pairs.set(inbound, outbound);
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    cut(halfOpen = false) {
      server.close();
      if (halfOpen) {
        for (const [inbound, outbound] of pairs) {
          inbound.unpipe(outbound);
          outbound.unpipe(inbound);
          inbound.destroy();
        }
        return;
      }
      for (const s of sockets) s.destroy();
    },
  };
}

/**
 * A host on A (reached through a proxy) and B leading; a worker holding a request, 40 sends and a
 * second request waiting on A; the proxy cut, so the host moves to B while A runs on.
 */
async function letGo(delivery: "memory" | "durable", halfOpen = false): Promise<void> {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const b = cluster.leader;
  const a = cluster.standbys[0] as ClusterServer;
  const tag = halfOpen ? `${delivery}-open` : delivery;
  const file = join(at.dir, `let-go-${tag}.jsonl`);
  const gate = join(at.dir, `let-go-${tag}.gate`);
  const proxy = await tcpProxy(a.address);
  let host: Proc | undefined;
  try {
    host = spawnK4s(["worker", "--server", `${proxy.address},${b.address}`, "--name", `roamer-${tag}`, "--module", `mem=${at.modulePath}`]);
    const heldBy = async (s: ClusterServer) => (await b.client.servers()).find((x) => x.address === s.address)?.sessions.some((x) => x.name === `roamer-${tag}`);
    await eventually(() => heldBy(a), 30_000, "host roamer held by A");
    await b.client.apply(`kind: Container\nmetadata: {name: relay}\nspec: {module: mem, function: recorder, concurrency: 1, delivery: ${delivery}, parameters: ${JSON.stringify({ file, gate })}}\n`);
    await eventually(async () => (await b.client.get("Container", "relay")).status?.ready === true, 60_000, "relay ready");

    // The worker holds a request (gate closed); sends and a second request wait in A's inbox.
    const first = b.client.request("container/relay", { r: 1 }, { timeoutMs: 60_000 }).then(
      () => "ok",
      (err: unknown) => ConnectError.from(err).code,
    );
    await eventually(() => lines(file, "start").some((l) => l.v.r === 1), 30_000, "the worker holds the first request");
    const acked: number[] = [];
    for (let i = 0; i < 40; i++) {
      await b.client.send("container/relay", { i });
      acked.push(i);
    }
    const second = b.client.request("container/relay", { r: 2 }, { timeoutMs: 60_000 }).then(
      () => "ok",
      (err: unknown) => ConnectError.from(err).code,
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(lines(file, "start").length, 1, "only the first request reached the worker before the move");

    const t0 = Date.now();
    proxy.cut(halfOpen);
    await eventually(() => heldBy(b), 30_000, "host roamer held by B");
    const movedMs = Date.now() - t0;
    assert.equal(await first, Code.Unavailable, "the request in the worker's hands when its session moved fails UNAVAILABLE");
    writeFileSync(gate, "");
    assert.equal(await second, "ok", "the request that waited on A is answered through B");
    await eventually(
      () => {
        const c = counts(file);
        return acked.every((i) => c.has(i));
      },
      60_000,
      "every send accepted on A handled after the move",
    );
    const handledMs = Date.now() - t0;
    const starts = lines(file, "start");
    assert.equal(starts.filter((l) => l.v.r === 1).length, 1, "the first request ran once");
    assert.equal(starts.filter((l) => l.v.r === 2).length, 1, "the second request ran once");
    const c = counts(file);
    const duplicates = [...c.values()].reduce((n, k) => n + k - 1, 0);
    if (delivery === "durable") await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(
      `# let go (${delivery}${halfOpen ? ", A's link still open" : ""}): host moved from A (still running) to B after ${movedMs} ms; ${acked.length} sends and 1 request that waited on A handled ` +
        `after ${handledMs} ms; duplicates ${duplicates}, lost 0`,
    );
  } catch (err) {
    dumpLogs({ "server A": a.proc, "server B (leader)": b.proc, host });
    throw err;
  } finally {
    proxy.cut();
    await host?.kill();
    await cluster.stop();
  }
}

test("let go: sends and a request queued on a server whose host moved to another server (that server still running) are handled there; the request its worker had in hand fails UNAVAILABLE and never runs twice", async () => {
  await letGo("memory");
});

test("let go, A's link to the host still open: what its worker had in hand and what waited is not delivered on the old link again but handled through the server holding the container now", async () => {
  await letGo("memory", true);
});

test("let go, durable: the sends journaled by the server whose host moved (still running) are read back and handled by the server holding the container now; the journal ends empty", async () => {
  await letGo("durable");
});

test("bound here: durable sends the leader journaled while no host served the container are handled once a host on another server serves it", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const leader = cluster.leader;
  const a = cluster.standbys[0] as ClusterServer;
  const file = join(at.dir, "bound.jsonl");
  let host: Proc | undefined;
  try {
    await leader.client.apply(`kind: Container\nmetadata: {name: waiter}\nspec: {module: later, function: recorder, delivery: durable, parameters: ${JSON.stringify({ file })}}\n`);
    // No host serves module "later": the leader accepts and journals them.
    const acked: number[] = [];
    for (let i = 0; i < 30; i++) {
      await a.client.send("container/waiter", { i });
      acked.push(i);
    }
    assert.equal((await journalKeys(cluster.etcd.storeUrl)).length, acked.length, "every accepted send is journaled");
    const t0 = Date.now();
    host = spawnK4s(["worker", "--server", a.address, "--name", "late-host", "--module", `later=${at.modulePath}`]);
    await eventually(
      () => {
        const c = counts(file);
        return acked.every((i) => c.has(i));
      },
      60_000,
      "every send the leader journaled handled on A's host",
    );
    const handledMs = Date.now() - t0;
    assert.equal((await leader.client.get("Container", "waiter")).status?.host, "late-host");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    const duplicates = [...counts(file).values()].reduce((n, k) => n + k - 1, 0);
    console.log(`# bound here: ${acked.length} sends journaled by the leader, handled on A's host ${handledMs} ms after it started; duplicates ${duplicates}, lost 0`);
  } catch (err) {
    dumpLogs({ "server A": a.proc, "leader": leader.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});
