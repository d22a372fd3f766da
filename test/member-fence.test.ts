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
