/**
 * The held versions of a store in memory: a version is found for exactly its revision, the
 * newest two of a key are kept (an event names the version before a write and the one after),
 * an older one never displaces a newer, pins last until a watch delivers that version (or a
 * newer one) and are bounded, only while a watch runs, and a deleted key keeps nothing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { ContainerSchema, ContainerStatusSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { HeldVersions, heldVersionsOf } from "../src/server/store/held-versions.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import { container } from "./resource-store-contract.js";

const version = (rv: number): Container => create(ContainerSchema, { metadata: { name: "c", resourceVersion: String(rv) } });

test("a key's newest two versions are found by exact revision; an older one displaces nothing", () => {
  const h = new HeldVersions();
  const v5 = version(5);
  const v7 = version(7);
  const v9 = version(9);
  h.hold("k", v5);
  assert.equal(h.get("k", 5), v5);
  assert.equal(h.get("k", 6), undefined);
  assert.equal(h.get("other", 5), undefined);
  h.hold("k", v7);
  assert.equal(h.get("k", 7), v7);
  assert.equal(h.get("k", 5), v5, "the version before the newest is kept");
  h.hold("k", version(6));
  assert.equal(h.get("k", 6), undefined, "an older version than the newest is not held");
  assert.equal(h.get("k", 5), v5);
  h.hold("k", v9);
  assert.deepEqual([h.get("k", 9), h.get("k", 7), h.get("k", 5)], [v9, v7, undefined]);
  h.forget("k");
  assert.equal(h.get("k", 9), undefined);
});

test("a pin lasts until that version or a newer one is delivered, and a deleted key's pin goes", () => {
  const h = new HeldVersions();
  h.watchStarted();
  h.hold("a", version(3), true);
  h.hold("b", version(3), true);
  h.hold("c", version(4));
  assert.equal(h.pinnedCount, 2, "only batched writes pin");
  h.delivered("a", 2);
  assert.equal(h.pinnedCount, 2, "an older revision of the key does not end the pin");
  h.delivered("a", 3);
  assert.equal(h.pinnedCount, 1);
  h.delivered("b", 8);
  assert.equal(h.pinnedCount, 0);
  h.hold("d", version(5), true);
  h.forget("d");
  assert.equal(h.pinnedCount, 0);
});

test("pins are bounded: past the bound the oldest pin goes", () => {
  const h = new HeldVersions();
  h.watchStarted();
  for (let i = 0; i < 20_001; i++) h.hold(`k${i}`, version(i + 1), true);
  assert.equal(h.pinnedCount, 20_000);
  h.delivered("k0", 1);
  h.delivered("k1", 2);
  assert.equal(h.pinnedCount, 19_999, "k0's pin was the one dropped");
});

test("with no watch running nothing is pinned, and the last watch to end ends every pin", () => {
  const h = new HeldVersions();
  const v = version(3);
  h.hold("a", v, true);
  assert.equal(h.pinnedCount, 0, "no watch would ever deliver it");
  assert.equal(h.get("a", 3), v, "still held weakly");
  const first = h.watchStarted();
  const second = h.watchStarted();
  h.hold("b", version(4), true);
  h.hold("c", version(5), true);
  first();
  first();
  assert.equal(h.pinnedCount, 2, "a watch is still running (ending one twice counts once)");
  second();
  assert.equal(h.pinnedCount, 0);
  h.hold("d", version(6), true);
  assert.equal(h.pinnedCount, 0);
});

test("a typed store pins its batched writes only while a watch of it runs, until the watch delivers them", async () => {
  const store = openSqliteStore();
  try {
    const rs = createResourceStore(store);
    const held = heldVersionsOf(store);
    const names = (prefix: string) => Array.from({ length: 40 }, (_, i) => `${prefix}-${i}`);
    await rs.createAll(names("quiet").map((name) => container(name)));
    assert.equal(held.pinnedCount, 0, "nobody watches: nothing pinned");

    const abort = new AbortController();
    const batches = rs.watch({ kind: "Container" }, abort.signal)[Symbol.asyncIterator]();
    const listing = await batches.next();
    assert.equal(listing.value!.events.length, 40);
    const created = await rs.createAll(names("watched").map((name) => container(name)));
    assert.equal(held.pinnedCount, 40, "written while a watch runs: pinned until delivered");
    const revision = Number(created[0]!.object!.metadata!.resourceVersion);
    const next = await batches.next();
    assert.equal(next.value!.revision, revision);
    assert.equal(next.value!.events.length, 40);
    assert.equal(held.pinnedCount, 0, "delivered: no pin left");

    await rs.createAll(names("left").map((name) => container(name)));
    assert.equal(held.pinnedCount, 40);
    abort.abort();
    await batches.return?.(undefined);
    assert.equal(held.pinnedCount, 0, "the last watch ended: its pins went with it");
  } finally {
    await store.close();
  }
});

test("a batch of status writes from versions this process wrote reads nothing first, and a version changed since is written against the stored one", async () => {
  const inner = openSqliteStore();
  let reads = 0;
  const store = { ...inner, get: (key: string) => (reads++, inner.get(key)) };
  try {
    const rs = createResourceStore(store);
    const created = (await rs.createAll(["a", "b", "c"].map((name) => container(name)))).map((r) => r.object!);
    const status = (phase: string) => create(ContainerStatusSchema, { phase });
    const write = (known: readonly Container[], phase: (c: Container) => string) =>
      rs.updateStatuses(
        "Container",
        known.map((c) => ({ name: c.metadata!.name, known: c, mutate: (cur: Container) => (cur.status?.phase === phase(cur) ? undefined : status(phase(cur))) })),
      );
    reads = 0;
    const first = (await write(created, () => "Pending")).map((r) => r.object!);
    assert.equal(reads, 0, "written from the versions it created: no read");
    assert.deepEqual(first.map((c) => c.status?.phase), ["Pending", "Pending", "Pending"]);
    const second = (await write(first, () => "Running")).map((r) => r.object!);
    assert.equal(reads, 0, "and from the versions it wrote: no read");

    // b changes behind the writer's back (labels, then its status): its known version is stale.
    const b = (await rs.get("Container", "b"))!;
    b.metadata!.labels = { changed: "yes" };
    await rs.update(b);
    await rs.updateStatus("Container", "b", () => status("Failed"));
    reads = 0;
    // Wanted "Running" everywhere: as of the stale known b nothing changes, yet b is stored Failed.
    const third = await write(second, () => "Running");
    assert.ok(reads > 0, "the stale version was found out and the chunk read");
    const storedB = (await rs.get("Container", "b"))!;
    assert.equal(storedB.status?.phase, "Running", "b written against its stored version");
    assert.equal(storedB.metadata!.labels.changed, "yes", "the change behind its back is kept");
    assert.equal(third[1]!.object!.metadata!.resourceVersion, storedB.metadata!.resourceVersion);
    for (const name of ["a", "c"]) assert.equal((await rs.get("Container", name))!.status?.phase, "Running");
    // Bytes as stored: the status spliced into the stored bytes of versions taken as known.
    for (const name of ["a", "b", "c"]) {
      const kv = (await inner.get(`/k4s/containers/${name}`))!;
      const obj = (await rs.get("Container", name))!;
      assert.deepEqual(Buffer.from(kv.value), Buffer.from(toBinary(ContainerSchema, { ...obj, metadata: { ...obj.metadata!, resourceVersion: "" } })));
    }
  } finally {
    await inner.close();
  }
});

test("getShared reads a held version without decoding it again; updateStatus writes from it and hands out copies of its own", async () => {
  const store = openSqliteStore();
  try {
    const rs = createResourceStore(store);
    await rs.create(container("s"));
    const first = (await rs.getShared("Container", "s"))!;
    assert.equal(await rs.getShared("Container", "s"), first, "the same version: the same (held) object");
    assert.deepEqual(first, await rs.get("Container", "s"), "as get reads it");
    assert.notEqual(await rs.get("Container", "s"), first, "get still gives a fresh copy");

    const written = (await rs.updateStatus("Container", "s", () => create(ContainerStatusSchema, { phase: "Running" })))!;
    const shared = (await rs.getShared("Container", "s"))!;
    assert.equal(shared.status?.phase, "Running");
    assert.equal(shared.metadata!.resourceVersion, written.metadata!.resourceVersion);
    assert.notEqual(shared, written, "the caller's result is its own");
    written.status!.phase = "Changed by the caller";
    assert.equal((await rs.getShared("Container", "s"))!.status?.phase, "Running", "changing it changes nothing held");
    const unchanged = (await rs.updateStatus("Container", "s", () => undefined))!;
    assert.notEqual(unchanged, shared, "an update that changes nothing also hands out a copy");
    assert.equal(first.status?.phase, "", "the version read before is left as it was");
    const kv = (await store.get("/k4s/containers/s"))!;
    assert.deepEqual(Buffer.from(kv.value), Buffer.from(toBinary(ContainerSchema, { ...shared, metadata: { ...shared.metadata!, resourceVersion: "" } })));
  } finally {
    await store.close();
  }
});

test("stored bytes that are a view into a larger buffer (an etcd watch response) are kept as a copy of their own", () => {
  const versions = new HeldVersions();
  const response = new Uint8Array(1 << 20).fill(7);
  const view = response.subarray(100, 164);
  const obj = create(ContainerSchema, { metadata: { name: "v" } });
  versions.storedAs(obj, view);
  const kept = versions.bytesOf(obj)!;
  assert.deepEqual(kept, view, "the same bytes");
  assert.equal(kept.buffer.byteLength, 64, "not the whole response's buffer");
  // Bytes with a buffer of their own (what this process encoded) are kept as they are.
  const own = new Uint8Array(10);
  const other = create(ContainerSchema, { metadata: { name: "w" } });
  versions.storedAs(other, own);
  assert.equal(versions.bytesOf(other), own);
});
