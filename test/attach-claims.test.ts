/**
 * Attach claims over a real etcd: a container is attached on one server of the cluster at a
 * time, by an etcd transaction on its claim under the server's lease.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClusterMember } from "../src/server/cluster/cluster-member.js";
import { startEtcd } from "./etcd.js";

test("attach claims: a container is attached on one server of the cluster at a time (an etcd transaction on its claim); the claim goes with its release", async () => {
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
    // b's claim is under b's lease: it goes with b (revoked on stop, expired after a SIGKILL).
  } finally {
    await a.stop();
    await b.stop();
    await etcd.stop();
  }
});
