/**
 * Which server runs and which routes each container, from its stored status and the session
 * records (here in an in-memory store, as the servers write them into etcd).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { SESSION_RECORDS_PREFIX, type SessionEntry } from "../src/server/cluster/cluster-member.js";
import { placementOf } from "../src/server/cluster/container-placement.js";
import { createSessionLocator } from "../src/server/cluster/session-locator.js";
import { openStore } from "../src/server/store/open-store.js";
import { eventually } from "./helpers.js";

const container = (name: string, spec: { module?: string; command?: string[] }, status?: { phase: string; host: string }) =>
  create(ContainerSchema, { metadata: { name, uid: `uid-${name}` }, spec, status });

test("container placement: the holder of its host runs it, the holder of its delivery session routes it, a host no server holds orphans it", async () => {
  const store = await openStore({});
  const record = (server: string, e: SessionEntry) =>
    store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}${server}/${e.kind}/${e.name}`, value: Buffer.from(JSON.stringify(e)) }]);
  await record("a:1", { kind: "host", name: "h1", sessionId: "s1" });
  await record("c:3", { kind: "attached", name: "cmd", sessionId: "s2" });
  await record("b:2", { kind: "attached", name: "ext", sessionId: "s3" });
  const sessions = createSessionLocator({ store, onError: (m) => assert.fail(m) });
  await sessions.start();
  try {
    const at = (c: ReturnType<typeof container>) => placementOf(c, sessions);
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Running", host: "h1" })), { runs: "a:1", delivers: "a:1", orphanedOn: "" });
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Pending", host: "h1" })), { runs: "a:1", delivers: "a:1", orphanedOn: "" }, "bound, starting");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Pending", host: "" })), { runs: "", delivers: "", orphanedOn: "" }, "unbound: the scheduler's");
    assert.deepEqual(at(container("m", { module: "echo" })), { runs: "", delivers: "", orphanedOn: "" }, "never scheduled");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Succeeded", host: "h1" })), { runs: "", delivers: "", orphanedOn: "" }, "ended: bound to nothing");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Running", host: "h9" })), { runs: "", delivers: "", orphanedOn: "h9" }, "its host is held by no server");
    assert.deepEqual(at(container("cmd", { command: ["x"] }, { phase: "Running", host: "h1" })), { runs: "a:1", delivers: "c:3", orphanedOn: "" }, "a command container's process attached elsewhere");
    assert.deepEqual(at(container("ext", {}, { phase: "Running", host: "p" })), { runs: "b:2", delivers: "b:2", orphanedOn: "" }, "external: its process's server");
    assert.deepEqual(at(container("ext2", {}, { phase: "Running", host: "p" })), { runs: "", delivers: "", orphanedOn: "" }, "external without a process: nobody's, never orphaned");
    // h1 moves to b:2 (a later record) while a:1's lingers.
    await record("b:2", { kind: "host", name: "h1", sessionId: "s4" });
    await eventually(() => at(container("m", { module: "echo" }, { phase: "Running", host: "h1" })).runs === "b:2", 30_000, "h1 run by b:2");
  } finally {
    sessions.stop();
    await store.close();
  }
});
