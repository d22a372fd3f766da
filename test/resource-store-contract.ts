/**
 * What the typed ResourceStore promises on every Store backend, as tests run on a fresh store of
 * one backend: server fields stamped, generation and status rules, optimistic concurrency, batch
 * deletes and finalizes, cascading deletes, all-or-nothing apply, and watches that list first and
 * filter by labels. store.test.ts runs them on etcd, resource-store.test.ts on SQLite in memory
 * (fast enough to run once per mutant).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, equals, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import type { ObjectBatch, ObjectEvent } from "../src/server/store/resource-store.js";
import { ContainerSchema, ReplicaSetSchema, ServiceSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import type { StoreBackend } from "./store-backends.js";
import { collect, expectCode } from "./store-contract.js";

/** The event lists of the batches that carry events, and the listing's (even empty, when keepListing). */
export async function* objectEventsOf(source: AsyncIterable<ObjectBatch>, keepListing = true): AsyncGenerator<ObjectEvent[]> {
  for await (const b of source) if (b.events.length > 0 || (keepListing && b.listing)) yield b.events;
}

export const container = (name: string, extra: MessageInitShape<typeof ContainerSchema> = {}) =>
  create(ContainerSchema, { metadata: { name }, spec: { module: "workers", function: "echo" }, ...extra } as MessageInitShape<typeof ContainerSchema>);

/** The typed ResourceStore rules, each test on a fresh store of the backend. */
export function resourceStoreContract(backend: StoreBackend): void {
  /** A test of the typed layer on a fresh store of this backend. */
  const typedTest = (name: string, fn: (rs: ReturnType<typeof createResourceStore>, base: number) => Promise<void>) =>
    test(`${backend.name}: ResourceStore: ${name}`, async () => {
      const opened = await backend.open();
      try {
        const rs = createResourceStore(opened.store);
        await fn(rs, await rs.revision());
      } finally {
        await opened.close();
      }
    });

typedTest("create stamps server fields; update bumps generation on spec change and keeps status", async (rs, base) => {
  const input = container("echo", { status: { phase: "Running" } });
  const c = await rs.create(input);
  assert.equal(input.metadata!.uid, "", "the input is not mutated");
  assert.equal(c.apiVersion, "k4s/v1");
  assert.equal(c.kind, "Container");
  assert.match(c.metadata!.uid, /^[0-9a-f-]{36}$/);
  assert.equal(c.metadata!.generation, 1n);
  assert.equal(c.metadata!.resourceVersion, String(base + 1));
  assert.ok(c.metadata!.creationTimestamp);
  assert.equal(c.status!.phase, "", "status is not settable through create");
  await expectCode(rs.create(container("echo")), Code.AlreadyExists, /Container "echo" already exists/);

  const st = await rs.updateStatus("Container", "echo", (cur) => ({ ...cur.status!, phase: "Running", ready: true }));
  assert.equal(st!.status!.phase, "Running");
  const same = await rs.updateStatus("Container", "echo", (cur) => cur.status);
  assert.equal(same!.metadata!.resourceVersion, st!.metadata!.resourceVersion, "an unchanged status writes nothing");

  const labelsOnly = await rs.update(container("echo", { metadata: { name: "echo", labels: { app: "x" } } }));
  assert.equal(labelsOnly.metadata!.generation, 1n, "labels do not bump generation");
  assert.equal(labelsOnly.status!.phase, "Running", "status kept");
  const specChange = await rs.update(create(ContainerSchema, { metadata: { name: "echo", labels: { app: "x" } }, spec: { command: ["python3"] } }));
  assert.equal(specChange.metadata!.generation, 2n);
  assert.equal(specChange.metadata!.uid, c.metadata!.uid);
  const noop = await rs.update(specChange);
  assert.equal(noop.metadata!.resourceVersion, specChange.metadata!.resourceVersion, "a no-change update writes nothing");
  await expectCode(
    rs.update(create(ContainerSchema, { metadata: { name: "echo", resourceVersion: String(base + 1) }, spec: {} })),
    Code.Aborted,
    new RegExp(`Container "echo" was modified meanwhile: resourceVersion is \\d+, not ${base + 1}`),
  );
  await expectCode(rs.update(container("nope")), Code.NotFound, /Container "nope" not found/);
  await rs.create(container("gone"));
  await expectCode(rs.delete("Container", "gone", { resourceVersion: String(base + 1) }), Code.Aborted, /Container "gone" was modified meanwhile/);
  const gone = (await rs.get("Container", "gone"))!;
  await rs.delete("Container", "gone", { resourceVersion: gone.metadata!.resourceVersion });
  assert.equal(await rs.get("Container", "gone"), undefined);
  await expectCode(
    rs.create(create(ContainerSchema, { metadata: { name: "Bad" }, spec: { concurrency: 5000 } })),
    Code.InvalidArgument,
    /metadata\.name: .*not a valid name.*; spec\.concurrency: must be between 0 and 1000, got 5000/,
  );
  assert.equal((await rs.get("Container", "echo"))!.metadata!.resourceVersion, specChange.metadata!.resourceVersion);
});

typedTest("deleteAll and finalizeAll: 128 to a transaction; pending ones removed, running ones marked (by the stored status, not a stale copy), marked ones left, missing ones NOT_FOUND", async (rs) => {
  const n = 200;
  const names = Array.from({ length: n }, (_, i) => `d-${i}`);
  const created = await rs.createAll(names.map((name) => container(name)));
  assert.ok(created.every((r) => r.object));
  await rs.create(container("bystander"));
  await rs.updateStatus("Container", "d-2", (c) => ({ ...c.status!, host: "h1", phase: "Running", ready: true }));
  await rs.delete("Container", "d-2");
  const marked = (await rs.get("Container", "d-2"))!;
  assert.ok(marked.metadata!.deletionTimestamp, "d-2 marked by delete()");
  // The caller's copies are read before d-1 is bound: for d-1 it is stale and must not be used.
  const known = new Map((await rs.list("Container", { nameGlob: "d-*" })).items.map((c) => [c.metadata!.name, c]));
  await rs.updateStatus("Container", "d-1", (c) => ({ ...c.status!, host: "h1", phase: "Running", ready: true }));
  const from = await rs.revision();
  const results = await rs.deleteAll("Container", [...names.map((name) => ({ name, known: known.get(name) })), { name: "nope" }]);
  assert.equal(results.length, n + 1);
  assert.equal(results[n]!.error?.code, Code.NotFound);
  assert.match(results[n]!.error!.message, /Container "nope" not found/);
  assert.ok(results.slice(0, n).every((r) => r.object && !r.error));
  const d1 = (await rs.get("Container", "d-1"))!;
  assert.ok(d1.metadata!.deletionTimestamp, "d-1 (Running on a host) is marked, not removed");
  assert.equal(d1.status!.phase, "Terminating");
  assert.equal(results[1]!.object!.metadata!.resourceVersion, d1.metadata!.resourceVersion);
  assert.equal((await rs.get("Container", "d-2"))!.metadata!.resourceVersion, marked.metadata!.resourceVersion, "a marked one is not written again");
  const left = (await rs.list("Container")).items.map((c) => c.metadata!.name).sort();
  assert.deepEqual(left, ["bystander", "d-1", "d-2"]);
  // Seen through a watch: one revision per 128 targets (d-2 needed no write).
  const abort = new AbortController();
  const revisions = new Map<number, number>();
  let seen = 0;
  for await (const events of objectEventsOf(rs.watch({ kind: "Container", fromRevision: from }, abort.signal), false)) {
    for (const e of events) revisions.set(e.revision, (revisions.get(e.revision) ?? 0) + 1);
    seen += events.length;
    if (seen >= n - 1) abort.abort();
  }
  assert.deepEqual([...revisions.values()], [127, 72]);

  // finalizeAll removes the marked ones in one transaction, and leaves an unmarked one alone.
  const beforeFinalize = await rs.revision();
  assert.deepEqual(await rs.finalizeAll(["d-1", "d-2", "bystander", "nope", "d-1"]), [undefined, undefined, undefined, undefined, undefined], "a name twice removed once (etcd refuses a key twice in one transaction)");
  assert.deepEqual((await rs.list("Container")).items.map((c) => c.metadata!.name), ["bystander"]);
  assert.equal(await rs.revision(), beforeFinalize + 1);
});

typedTest("a watch event's previous version is the object the watch delivered before, not a second decode; a deleted object keeps its last version's content", async (rs, base) => {
  const abort = new AbortController();
  const events = rs.watch({ kind: "Container", fromRevision: base }, abort.signal)[Symbol.asyncIterator]();
  const next = async () => {
    for (;;) {
      const b = await events.next();
      assert.ok(!b.done);
      if (b.value.events.length > 0) return b.value.events[0]!;
    }
  };
  try {
    await rs.create(container("v", { metadata: { name: "v", labels: { step: "1" } } }));
    const added = await next();
    assert.equal(added.type, "ADDED");
    await rs.update(container("v", { metadata: { name: "v", labels: { step: "2" } } }));
    const modified = await next();
    assert.equal(modified.type, "MODIFIED");
    assert.equal(modified.previous, added.object, "the previous version is the object already delivered");
    assert.equal(modified.object.metadata!.labels.step, "2");
    assert.ok(equals(ContainerSchema, modified.object as Container, (await rs.get("Container", "v"))!), "the same as a fresh read");
    await rs.delete("Container", "v");
    const deleted = await next();
    assert.equal(deleted.type, "DELETED");
    assert.equal(deleted.previous, modified.object);
    assert.equal(deleted.object.metadata!.labels.step, "2");
    assert.equal(deleted.object.metadata!.resourceVersion, String(deleted.revision));
    assert.equal(modified.object.metadata!.resourceVersion, String(modified.revision), "the delivered object is not changed");
  } finally {
    abort.abort();
  }
});

typedTest("ReplicaSet delete cascades to owned Containers in one txn; running ones are marked", async (rs) => {
  const set = await rs.create(create(ReplicaSetSchema, { metadata: { name: "calc" }, spec: { replicas: 3, container: "tmpl" } }));
  const owner = { kind: "ReplicaSet", name: "calc", uid: set.metadata!.uid };
  for (const i of [0, 1, 2]) await rs.create(container(`calc-${i}`, { metadata: { name: `calc-${i}`, ownerReference: owner } }));
  await rs.create(container("calc-other", { metadata: { name: "calc-other", ownerReference: { ...owner, uid: "someone-else" } } }));
  await rs.create(container("tmpl"));
  await rs.updateStatus("Container", "calc-1", (c) => ({ ...c.status!, host: "h1", phase: "Running", ready: true }));
  await rs.updateStatus("Container", "calc-2", (c) => ({ ...c.status!, host: "h1", phase: "Succeeded" }));
  const before = await rs.revision();
  const ac = new AbortController();
  const w = collect(objectEventsOf(rs.watch({ fromRevision: before }, ac.signal)));

  const deleted = await rs.delete("ReplicaSet", "calc");
  assert.equal(deleted.metadata!.name, "calc");
  assert.equal(await rs.revision(), before + 1, "one transaction");
  const [batch] = await w.waitFor(1);
  assert.deepEqual(
    batch!.map((e: ObjectEvent) => `${e.type} ${e.object.metadata!.name}`).sort(),
    ["DELETED calc", "DELETED calc-0", "DELETED calc-2", "MODIFIED calc-1"],
  );
  const left = (await rs.list("Container")).items.map((c) => c.metadata!.name);
  assert.deepEqual(left, ["calc-1", "calc-other", "tmpl"]);
  const marked = (await rs.get("Container", "calc-1"))!;
  assert.ok(marked.metadata!.deletionTimestamp);
  assert.equal(marked.status!.phase, "Terminating");
  // Deleting a marked container again changes nothing; finalize removes it.
  const again = await rs.delete("Container", "calc-1");
  assert.equal(again.metadata!.resourceVersion, marked.metadata!.resourceVersion);
  await rs.finalize("tmpl"); // not marked: untouched
  assert.ok(await rs.get("Container", "tmpl"));
  await rs.finalize("calc-1");
  assert.equal(await rs.get("Container", "calc-1"), undefined);
  ac.abort();
});

typedTest("apply is all or nothing and reports created/configured/unchanged", async (rs, base) => {
  const svc = create(ServiceSchema, { metadata: { name: "svc" }, spec: { selector: "calc-*" } });
  let out = await rs.apply([container("a"), svc]);
  assert.deepEqual(
    out.map((o) => o.action),
    ["created", "created"],
  );
  assert.equal(await rs.revision(), base + 1, "one transaction for the whole apply");
  out = await rs.apply([container("a", { metadata: { name: "a", labels: { v: "2" } } }), svc, container("b")]);
  assert.deepEqual(
    out.map((o) => o.action),
    ["configured", "unchanged", "created"],
  );
  assert.equal(out[0]!.object.metadata!.generation, 1n, "a label change is no spec change");
  const rev = await rs.revision();
  out = await rs.apply([container("c")], { dryRun: true });
  assert.deepEqual(
    out.map((o) => o.action),
    ["created"],
  );
  assert.equal(await rs.revision(), rev, "dry run writes nothing");
  await expectCode(
    rs.apply([container("d"), create(ContainerSchema, { metadata: { name: "e" }, spec: { module: "m" } })]),
    Code.InvalidArgument,
    /object 2 \(Container "e"\): spec\.function: required when module is set/,
  );
  await expectCode(rs.apply([container("d"), container("d")]), Code.InvalidArgument, /object 2 \(Container "d"\): duplicate of object 1/);
  assert.equal(await rs.get("Container", "d"), undefined, "nothing of a rejected apply is stored");
  assert.equal(await rs.revision(), rev);
});

typedTest("watch lists first (one batch, even empty), filters by labels with ADDED/DELETED transitions", async (rs) => {
  const ac = new AbortController();
  const empty = collect(objectEventsOf(rs.watch({ kind: "Service" }, ac.signal), true));
  assert.deepEqual((await empty.waitFor(1))[0], [], "the initial listing is yielded even when empty");
  await rs.create(container("x", { metadata: { name: "x", labels: { app: "a" } } }));
  await rs.create(container("y"));
  const w = collect(objectEventsOf(rs.watch({ kind: "Container", labels: { app: "a" } }, ac.signal)));
  const [initial] = await w.waitFor(1);
  assert.deepEqual(
    initial!.map((e) => `${e.type} ${e.object.metadata!.name}`),
    ["ADDED x"],
  );
  await rs.update(container("y", { metadata: { name: "y", labels: { app: "a" } } }));
  await rs.update(container("x", { metadata: { name: "x", labels: { app: "b" } } }));
  await rs.delete("Container", "y");
  const got = await w.waitFor(4);
  assert.deepEqual(
    got.slice(1).map((b) => b.map((e) => `${e.type} ${e.object.metadata!.name}`).join()),
    ["ADDED y", "DELETED x", "DELETED y"],
  );
  const deletedY = got[3]![0]!;
  assert.equal(deletedY.object.metadata!.resourceVersion, String(deletedY.revision), "a DELETED object carries the delete's revision");
  assert.equal(empty.items.length, 1, "the Service watch saw no Container events");
  ac.abort();
});
}
