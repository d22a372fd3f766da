/**
 * A member's lease lapse over a real etcd (SIGSTOPped): the member is told when its lease went
 * unrenewed for three quarters of its TTL, for its server to end the sessions it holds before
 * etcd can expire their records. In a file of its own: the frozen etcd is the only one it runs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClusterMember } from "../src/server/cluster/cluster-member.js";
import { startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";

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
