/**
 * The member fence over a real etcd: the writes of what a server holds compare its own record
 * under its lease; once etcd removed the record (the lease expired) they are refused.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { Etcd3 } from "etcd3";
import { createClusterMember } from "../src/server/cluster/cluster-member.js";
import { createFencedStore } from "../src/server/cluster/fenced-store.js";
import { openStore } from "../src/server/store/open-store.js";
import { startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";

test("member fence: a member's writes compare its record under its lease; a write after the record went is refused FAILED_PRECONDITION naming it", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  const raw = new Etcd3({ hosts: etcd.endpoints });
  const member = createClusterMember({ endpoints: etcd.endpoints, advertise: "127.0.0.1:7", leaseTtlSeconds: 2, onLeadership: () => {}, onError: () => {} });
  try {
    assert.equal(member.memberFence, undefined, "no fence before joining");
    await member.start();
    const fence = member.memberFence!;
    assert.equal(fence.key, "/k4s-cluster/servers/127.0.0.1:7");
    assert.equal((await store.get(fence.key))?.modRevision, fence.modRevision, "the revision that wrote the record");
    const refusals: string[] = [];
    const fenced = createFencedStore(store, { fence: () => member.memberFence, self: () => member.advertise, onFenced: () => {}, onError: (m) => refusals.push(m), fencedBy: "membership" });
    const key = "/k4s/test/held";
    const put = (value: string) => fenced.txn([], [{ type: "put", key, value: Buffer.from(value) }]);
    assert.equal((await put("while a member")).succeeded, true);
    // As when its lease expires while it is cut off from etcd.
    await raw.delete().key(fence.key);
    await assert.rejects(put("after the record went"), (err: unknown) => {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.FailedPrecondition);
      assert.equal(e.rawMessage, "server 127.0.0.1:7 lost its membership (its record /k4s-cluster/servers/127.0.0.1:7 is gone with its lease): the writes of a server that is no longer a member are refused");
      return true;
    });
    assert.equal(Buffer.from((await store.get(key))!.value).toString(), "while a member");
    assert.equal(refusals.length, 1);
  } finally {
    await member.stop();
    raw.close();
    await store.close();
    await etcd.stop();
  }
});

test("attach claims: a container is attached on one server of the cluster at a time (an etcd transaction on its claim); the claim goes with its release or its server's lease", async () => {
  const etcd = await startEtcd();
  const member = (advertise: string) => createClusterMember({ endpoints: etcd.endpoints, advertise, leaseTtlSeconds: 2, onLeadership: () => {}, onError: () => {} });
  const a = member("127.0.0.1:1");
  const b = member("127.0.0.1:2");
  try {
    await Promise.all([a.start(), b.start()]);
    assert.equal(await a.claimAttach("ext", "s1"), "", "the first claim is taken");
    assert.equal(await b.claimAttach("ext", "s2"), "127.0.0.1:1", "a second server is told who holds it");
    assert.equal(await a.claimAttach("ext", "s3"), "", "the same server's later session takes its own claim over");
    await a.releaseAttach("ext", "s1");
    assert.equal(await b.claimAttach("ext", "s4"), "127.0.0.1:1", "releasing an older session's claim leaves the later one");
    await a.releaseAttach("ext", "s3");
    assert.equal(await b.claimAttach("ext", "s4"), "", "released: another server may claim it");
    // b's claim goes with b (its lease revoked on stop, or expired after a SIGKILL).
    await b.stop();
    assert.equal(await a.claimAttach("ext", "s5"), "", "the claim went with its server");
  } finally {
    await a.stop();
    await b.stop();
    await etcd.stop();
  }
});

test("lease lapse: a member whose lease goes unrenewed for three quarters of its TTL is told (to end the sessions it holds) before etcd can expire it, and told again once it renewed or joined again", async () => {
  const etcd = await startEtcd();
  const lapses: { lapsed: boolean; at: number }[] = [];
  const errors: string[] = [];
  const m = createClusterMember({ endpoints: etcd.endpoints, advertise: "127.0.0.1:3", leaseTtlSeconds: 2, onLeadership: () => {}, onLapse: (lapsed) => lapses.push({ lapsed, at: Date.now() }), onError: (msg) => errors.push(msg) });
  const etcdProcess = etcd.members[0]!.process;
  try {
    await m.start();
    assert.equal(m.lapsed, false);
    const frozenAt = Date.now();
    etcdProcess.kill("SIGSTOP");
    await eventually(() => m.lapsed, 30_000, "the lapse seen");
    const lapsedMs = lapses[0]!.at - frozenAt;
    etcdProcess.kill("SIGCONT");
    await eventually(() => !m.lapsed, 30_000, "renewed or joined again");
    assert.deepEqual(lapses.map((l) => l.lapsed), [true, false]);
    assert.ok(errors.some((e) => /could not renew its lease for \d+ ms; it ends the sessions it holds/.test(e)), errors.join("\n"));
    // Before etcd could expire the lease (2 s after its last renewal; renewals go every 2/3 s).
    console.log(`# etcd frozen: the member saw its lease lapse after ${lapsedMs} ms (lease TTL 2 s, told at 1.5 s unrenewed)`);
  } finally {
    etcdProcess.kill("SIGCONT");
    await m.stop();
    await etcd.stop();
  }
});
