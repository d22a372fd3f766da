/**
 * Fencing of a frozen leader (the mechanism over a real etcd, then the whole through processes): a leader stopped (SIGSTOP) past its lease is replaced; when it
 * wakes up it still believes it leads for a moment, and its first acts (frames its hosts sent
 * meanwhile) lead its controllers to write. Those writes compare its election key, which etcd
 * removed with its lease: they are refused, and the new leader's state stands.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { Etcd3 } from "etcd3";
import { createClusterMember } from "../src/server/cluster/cluster-member.js";
import { createFencedStore } from "../src/server/cluster/fenced-store.js";
import { openStore } from "../src/server/store/open-store.js";
import type { Compare } from "../src/server/store/store.js";
import { isLeader, startCluster } from "./cluster-harness.js";
import { startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";
import { openRawPeer } from "./raw-peer.js";

test("cluster fencing: a leader frozen (SIGSTOP) past its lease wakes up to find its controllers' writes refused by etcd; what its host told it meanwhile is not written", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader } = cluster;
  const [b, c] = cluster.standbys;
  const ac = new AbortController();
  let beat: NodeJS.Timeout | undefined;
  try {
    // A host of the leader, played frame by frame, runs the container fc.
    const host = openRawPeer(leader.address, { case: "hello", value: { name: "fence-host", modules: ["fmod"], capacity: 10 } });
    await host.next("welcome", undefined, 30_000);
    beat = setInterval(() => host.send({ case: "heartbeat", value: {} }), 1000);
    await b!.client.apply("kind: Container\nmetadata: {name: fc}\nspec: {module: fmod, function: f}\n");
    const assign = await host.next("assign", (a) => a.container === "fc", 30_000);
    host.send({ case: "state", value: { container: "fc", uid: assign.uid, phase: "Running" } });
    await eventually(async () => (await b!.client.get("Container", "fc")).status?.phase === "Running", 30_000, "fc running");
    // Every status of fc written from now on, seen through another server.
    const messages: string[] = [];
    const watching = (async () => {
      for await (const ev of b!.client.watch({ kind: "Container", resume: { giveUpAfterMs: 60_000 }, signal: ac.signal })) messages.push(ev.object.status?.message ?? "");
    })().catch(() => {});

    const frozenAt = Date.now();
    leader.proc.child.kill("SIGSTOP");
    const next = (await eventually(() => [b!, c!].find(isLeader), 30_000, "a new leader"))!;
    const electedMs = Date.now() - frozenAt;
    // While frozen, its host reports fc failed: only the old leader hears it, and would write it into fc's status.
    host.send({ case: "state", value: { container: "fc", uid: assign.uid, phase: "Failed", message: "FENCE-PROBE" } });
    await sleep(500);
    const resumedAt = Date.now();
    leader.proc.child.kill("SIGCONT");
    // It finds out either way: its watchdog sees its lease unrenewed, or a write of its controllers is refused.
    await eventually(() => /is standing by/.test(leader.proc.stdout().split("is the leader").pop()!), 30_000, "the woken leader standing by");
    const stoodByMs = Date.now() - resumedAt;
    // Any write that went through would show on the watch by now; none carries the old leader's news.
    await eventually(async () => (await next.client.servers()).filter((s) => s.leader).length === 1, 30_000, "one leader");
    await sleep(2000);
    assert.ok(!messages.some((m) => m.includes("FENCE-PROBE")), `a status written by the frozen leader after it woke: ${messages.join(" | ")}`);
    assert.ok(!(await b!.client.get("Container", "fc")).status?.message.includes("FENCE-PROBE"));
    assert.ok(isLeader(next) && (await next.client.servers()).find((s) => s.leader)?.address === next.address, "the new leader still leads");
    const refusal = /a write was refused: [^\n]*/.exec(leader.proc.stderr())?.[0];
    console.log(
      `# leader SIGSTOPped: a new leader after ${electedMs} ms (lease TTL 2 s); woken, it stood by after ${stoodByMs} ms; ` +
        (refusal ? `its controllers' write was refused ("${refusal}")` : "its watchdog stepped down before its controllers wrote"),
    );
    ac.abort();
    await watching;
  } finally {
    clearInterval(beat);
    ac.abort();
    leader.proc.child.kill("SIGCONT");
    await cluster.stop();
  }
});

test("fenced writes: the leader's writes compare its election key; once etcd removed it they are refused FAILED_PRECONDITION and the member stops leading; a conflict of the caller's own stays a conflict", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  const raw = new Etcd3({ hosts: etcd.endpoints });
  const leadership: boolean[] = [];
  const member = createClusterMember({ endpoints: etcd.endpoints, advertise: "127.0.0.1:1", leaseTtlSeconds: 2, onLeadership: (l) => leadership.push(l), onError: () => {} });
  try {
    await member.start();
    await eventually(() => member.isLeader, 30_000, "the member leading");
    const fence = member.fence!;
    assert.match(fence.key, /^\/k4s-cluster\/election\/leader\//, "the fence is its key in the election");
    const refusals: string[] = [];
    const fenced = createFencedStore(store, { fence: () => member.fence, self: () => member.advertise, onFenced: () => member.fenced(), onError: (m) => refusals.push(m) });
    const key = "/k4s/test/fenced";
    const put = (value: string, compares: Compare[] = []) => fenced.txn(compares, [{ type: "put", key, value: Buffer.from(value) }]);
    assert.equal((await put("while leading")).succeeded, true, "a write while leading lands");
    assert.equal((await put("stale", [{ key, modRevision: 1 }])).succeeded, false, "a failed compare of the caller's is a conflict");
    assert.ok(member.isLeader, "a conflict is not a lost leadership");
    // etcd removes the key, as when the campaign's lease expires while the leader is frozen: it
    // still believes it leads (nothing told it yet), and its next write is refused.
    await raw.delete().key(fence.key);
    assert.ok(member.isLeader && member.fence === fence);
    await assert.rejects(put("after the key went"), (err: unknown) => {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.FailedPrecondition);
      assert.match(e.rawMessage, /server 127\.0\.0\.1:1 lost its leadership \(its election key \/k4s-cluster\/election\/leader\/\S+ is gone\): the controllers' writes of a server that no longer leads are refused/);
      return true;
    });
    assert.equal(Buffer.from((await store.get(key))!.value).toString(), "while leading", "the refused write left nothing");
    assert.equal(member.isLeader, false, "the member stopped leading");
    assert.deepEqual(leadership.slice(0, 2), [true, false]);
    await assert.rejects(put("not leading"), /does not lead the cluster/);
    assert.equal(refusals.length, 2);
  } finally {
    await member.stop();
    raw.close();
    await store.close();
    await etcd.stop();
  }
});
