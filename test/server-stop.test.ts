/**
 * A server of a cluster (over a real etcd) stopped while it is still starting: stop() lets the
 * start finish its step, then stops whatever it started, so that nothing is left running: no port
 * taking connections, no record of it in etcd (its member record, session records, election key),
 * whichever step the start was at. In process (createServer) at several moments of the start,
 * and as a `k4s server` process sent SIGTERM while it starts: it exits, leaving no record. A
 * start stuck reaching an etcd that does not answer is given up at once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { createServer } from "../src/server/server.js";
import { openStore } from "../src/server/store/open-store.js";
import type { Store } from "../src/server/store/store.js";
import { startEtcd } from "./etcd.js";
import { eventually, spawnK4s } from "./helpers.js";

/** The keys in etcd that say a server is in the cluster: its member record, its sessions', its campaign. */
async function liveKeys(store: Store): Promise<string[]> {
  const r = await store.range("/k4s-cluster/");
  return r.kvs.map((kv) => kv.key).filter((k) => /\/servers\/|\/sessions\/|leader/.test(k));
}

/** Whether something accepts connections on a loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

test("server stop during start: whatever the start started is stopped (no listener, no record in etcd), at any moment of the start", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  const seen: string[] = [];
  try {
    for (const delayMs of [0, 5, 20, 60, 150, 400, 1000]) {
      const server = createServer({ port: 0, store: etcd.storeUrl, leaseTtlSeconds: 2, onError: () => {} });
      const start = server.start().then(
        () => "started",
        (err: unknown) => `refused: ${(err as Error).message}`,
      );
      await new Promise((r) => setTimeout(r, delayMs));
      await server.stop();
      const outcome = await start;
      seen.push(`${delayMs} ms: ${outcome}`);
      // Stopped means stopped: whatever the start reached is undone by the time stop() resolved.
      if (server.port > 0) assert.equal(await accepts(server.port), false, `stopped ${delayMs} ms into its start (${outcome}): port ${server.port} still accepts`);
      assert.deepEqual(await liveKeys(store), [], `stopped ${delayMs} ms into its start (${outcome}): its records are gone`);
    }
    console.log(`# stop() during start: ${seen.join("; ")}`);
  } finally {
    await store.close();
    await etcd.stop();
  }
});

test("server whose start fails (its plane cannot read a stored Container) stops what it started: start() rejects, no listener, no record in etcd, at once", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  try {
    // A value under a Container's key that no Container decodes from: the plane's informer fails to list.
    await store.txn([], [{ type: "put", key: "/k4s/containers/undecodable", value: new Uint8Array([0x0f, 0x01]) }]);
    // A lease of 60 s: a record gone within it was removed by the server, not expired.
    const server = createServer({ port: 0, store: etcd.storeUrl, leaseTtlSeconds: 60, onError: () => {} });
    const t0 = Date.now();
    const failed = await server.start().then(
      () => "started",
      (err: unknown) => (err as Error).message,
    );
    const ms = Date.now() - t0;
    assert.match(failed, /illegal tag|wire type/, "start() rejects with the decoding error");
    assert.ok(server.port > 0, "it had bound its port");
    assert.equal(await accepts(server.port), false, `port ${server.port} accepts nothing after the failed start`);
    assert.deepEqual(await liveKeys(store), [], "no member record or campaign left in etcd");
    await server.stop();
    console.log(`# start failed after ${ms} ms (${failed}); port closed and no record left without a stop()`);
  } finally {
    await store.close();
    await etcd.stop();
  }
});

test("k4s server sent SIGTERM while it starts: it exits 0 and leaves no record in etcd", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  try {
    const proc = spawnK4s(["server", "--port", "0", "--no-dashboard", "--no-local-worker", "--store", etcd.storeUrl, "--lease-ttl", "10"]);
    // Its member record appears in etcd before it serves (the member starts before the plane).
    const t0 = Date.now();
    while ((await liveKeys(store)).length === 0 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 5));
    const listening = /listening on/.test(proc.stdout());
    proc.child.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => (proc.child.exitCode !== null ? resolve(proc.child.exitCode) : proc.child.once("exit", (c) => resolve(c))));
    // Within the lease's 10 s TTL: the records are gone because the server left, not expired.
    const left = await liveKeys(store);
    assert.equal(code, 0, `exit code (stdout: ${proc.stdout()} stderr: ${proc.stderr()})`);
    assert.deepEqual(left, [], "no record left in etcd");
    console.log(`# SIGTERM ${listening ? "after it listened" : "while it was starting"} (${Date.now() - t0} ms after spawn): exited ${code}, no record left`);
  } finally {
    await store.close();
    await etcd.stop();
  }
});

/**
 * A TCP port that takes connections and never answers (an etcd behind a black hole, or one
 * frozen): its connections are counted, so a test knows the server is trying to reach it.
 */
async function silentPort(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server = createNetServer((s) => {
    count++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test("server stop during a start stuck reaching etcd (nothing answers at the store's address): stop() gives the start up at once and resolves, its port closed", { timeout: 60_000 }, async () => {
  const hole = await silentPort();
  try {
    const server = createServer({ port: 0, store: `etcd://127.0.0.1:${hole.port}`, leaseTtlSeconds: 2, onError: () => {} });
    const start = server.start().then(
      () => "started",
      (err: unknown) => (err as Error).message,
    );
    // The start is at its store step: it connected, and waits for an answer that never comes.
    await eventually(() => hole.connections() > 0, 30_000, "the server connecting to the silent store");
    const t0 = Date.now();
    await server.stop();
    const ms = Date.now() - t0;
    const outcome = await start;
    assert.match(outcome, /stopped while it was starting/, "the start ends because it was stopped");
    assert.equal(await accepts(server.port), false, `port ${server.port} accepts nothing after stop()`);
    console.log(`# stop() of a server stuck reaching a silent etcd resolved after ${ms} ms; start() ended: ${outcome}`);
  } finally {
    await hole.close();
  }
});

test("k4s server sent SIGTERM while it waits for an etcd that does not answer: it says so and exits 0, without waiting for its shutdown deadline", { timeout: 120_000 }, async () => {
  const hole = await silentPort();
  try {
    const proc = spawnK4s(["server", "--port", "0", "--no-dashboard", "--no-local-worker", "--store", `etcd://127.0.0.1:${hole.port}`]);
    await eventually(() => hole.connections() > 0, 30_000, "k4s server connecting to the silent store");
    const t0 = Date.now();
    proc.child.kill("SIGTERM");
    const code = await proc.exited;
    const out = `${proc.stdout()}${proc.stderr()}`;
    assert.equal(code, 0, `exit code (output: ${out})`);
    assert.match(out, /k4s server: SIGTERM while starting; shutting down/);
    assert.doesNotMatch(out, /did not finish/);
    console.log(`# SIGTERM to k4s server waiting for a silent etcd: exited ${code} ${Date.now() - t0} ms later: ${out.trim().replace(/\n/g, " | ")}`);
  } finally {
    await hole.close();
  }
});
