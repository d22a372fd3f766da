/**
 * `k4s server --store etcd://...` as a real process over a real etcd: it serves, its state is
 * etcd's (a second server on the same etcd sees it, and it survives the server), a store it
 * cannot reach or a bad --store is one line naming it; and a store over a three-member etcd keeps
 * serving when one member is SIGKILLed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { freePorts, startEtcd } from "./etcd.js";
import { runK4s, spawnK4s, type Proc } from "./helpers.js";
import { openOnEtcd } from "./store-backends.js";

/** Starts `k4s server --store URL` on a free port; resolves once it listens. */
async function serverOn(store: string): Promise<{ proc: Proc; address: string }> {
  const proc = spawnK4s(["server", "--port", "0", "--no-local-worker", "--store", store]);
  await proc.waitFor(/listening on \S+/, 30_000);
  const address = /listening on (\S+)/.exec(proc.stdout())![1]!;
  return { proc, address };
}

test("k4s server --store etcd://: state lives in etcd, shared by two servers and kept across a restart", async () => {
  const etcd = await startEtcd();
  const started: Proc[] = [];
  try {
    const a = await serverOn(etcd.storeUrl);
    started.push(a.proc);
    const ca = createClient({ address: a.address, reconnect: false });
    await ca.apply("kind: Service\nmetadata: {name: in-etcd}\nspec: {selector: 'x-*'}\n");
    // A second server over the same etcd sees the object and its version.
    const b = await serverOn(etcd.storeUrl);
    started.push(b.proc);
    const cb = createClient({ address: b.address, reconnect: false });
    const onA = await ca.get("Service", "in-etcd");
    const onB = await cb.get("Service", "in-etcd");
    assert.equal(onB.metadata!.uid, onA.metadata!.uid);
    assert.equal(onB.metadata!.resourceVersion, onA.metadata!.resourceVersion);
    // A change through B reaches a watch on A.
    const ac = new AbortController();
    const watch = ca.watch({ kind: "Service", nameGlob: "in-etcd", resourceVersion: onA.metadata!.resourceVersion, signal: ac.signal });
    const seen = (async () => {
      for await (const ev of watch) if (ev.type === "DELETED") return ev.object.metadata!.name;
      return "";
    })();
    await cb.delete("Service", "in-etcd");
    assert.equal(await seen, "in-etcd");
    ac.abort();
    await cb.apply("kind: Service\nmetadata: {name: survives}\nspec: {selector: 'y-*'}\n");
    await ca.close();
    await cb.close();
    for (const p of started.splice(0)) await p.kill();
    // The servers are gone; a new one finds the state.
    const c = await serverOn(etcd.storeUrl);
    started.push(c.proc);
    const cc = createClient({ address: c.address, reconnect: false });
    assert.equal((await cc.get("Service", "survives")).spec?.selector, "y-*");
    await cc.close();
  } finally {
    for (const p of started) await p.kill();
    await etcd.stop();
  }
});

test("k4s server with an etcd it cannot reach, or a --store of no known form: one line naming it, exit 1", async () => {
  const [port] = await freePorts(1);
  const unreachable = await runK4s(["server", "--port", "0", "--no-local-worker", "--store", `etcd://127.0.0.1:${port}`]);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, new RegExp(`^error: cannot reach the store etcd://127\\.0\\.0\\.1:${port}: .*unavailable.*\\n$`));
  const bad = await runK4s(["server", "--port", "0", "--no-local-worker", "--store", "postgres://x"]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'error: store "postgres://x": expected sqlite:DIR or etcd://HOST:PORT[,HOST:PORT...]\n');
  const both = await runK4s(["server", "--port", "0", "--store", "sqlite:/tmp/x", "--data-dir", "/tmp/y"]);
  assert.equal(both.code, 1);
  assert.match(both.stderr, /--store goes alone: not with --data-dir/);
});

test("etcd: a store over a three-member cluster keeps serving when one member is SIGKILLed", async () => {
  const etcd = await startEtcd({ members: 3 });
  const { store, close } = openOnEtcd(etcd);
  try {
    const enc = new TextEncoder();
    const before = await store.txn([], [{ type: "put", key: "/ha/a", value: enc.encode("1") }]);
    assert.ok(before.succeeded);
    await etcd.members[0]!.kill("SIGKILL");
    // The client moves to a live member; etcd keeps quorum with two of three.
    let after;
    for (let attempt = 0; ; attempt++) {
      try {
        after = await store.txn([{ key: "/ha/a", modRevision: before.revision }], [{ type: "put", key: "/ha/a", value: enc.encode("2") }]);
        break;
      } catch (err) {
        if ((err as { code?: Code }).code !== Code.Unavailable || attempt > 20) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    assert.ok(after.succeeded, "the write after the kill landed, guarded by the version before it");
    assert.equal(new TextDecoder().decode((await store.get("/ha/a"))!.value), "2");
  } finally {
    await close();
    await etcd.stop();
  }
});
