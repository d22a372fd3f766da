/**
 * The container status writer over a real resource store (SQLite in memory): it writes what
 * the record says, skips the store round trip when the informer's copy already says it, and
 * sets right a status someone else overwrote (it compares with the stored object, not with what
 * it wrote last), and writes the changes of many records in batches: a few store revisions,
 * not one per container.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { clone, create, equals } from "@bufbuild/protobuf";
import { ContainerSchema, ContainerStatusSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { ContainerRecord } from "../src/server/controllers/container-record.js";
import { containerStatus, createStatusWriter } from "../src/server/controllers/status-writer.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import type { ResourceStore } from "../src/server/store/resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";

/** A real resource store that counts the status writes asked of it. */
function countingStore(): { resources: ResourceStore; calls: () => number; close: () => Promise<void> } {
  const store = openSqliteStore();
  const real = createResourceStore(store);
  let calls = 0;
  const resources: ResourceStore = Object.create(real);
  resources.updateStatus = (kind, name, mutate) => {
    calls++;
    return real.updateStatus(kind, name, mutate);
  };
  resources.updateStatuses = (kind, updates) => {
    calls += updates.length;
    return real.updateStatuses(kind, updates);
  };
  return { resources, calls: () => calls, close: () => store.close() };
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.fail(`timed out waiting until ${what}`);
}

test("status writer: writes what the record says, skips what the stored copy already says, repairs an overwrite", async () => {
  const { resources, calls, close } = countingStore();
  const errors: string[] = [];
  const writer = createStatusWriter({ resources, onError: (m) => errors.push(m) });
  try {
    const created = await resources.create(create(ContainerSchema, { metadata: { name: "c1" }, spec: { module: "m", function: "f" } }));
    const rec = new ContainerRecord("c1", created.metadata!.uid, created);
    rec.restarts = 2;
    rec.message = "waiting for a host";
    const stored = () => resources.get("Container", "c1") as Promise<Container>;
    const says = (obj: Container) => obj.status !== undefined && equals(ContainerStatusSchema, obj.status, containerStatus(rec, obj));

    writer.write(rec, created);
    await until("the record's status is stored", async () => says(await stored()));
    assert.equal(calls(), 1);

    // Nothing changed: the informer's copy says it already, so no store round trip at all.
    const current = await stored();
    for (let i = 0; i < 5; i++) writer.write(rec, current);
    await new Promise((r) => setImmediate(r));
    assert.equal(calls(), 1, "no write asked for a status the stored copy already has");

    // A change of the record is written, several changes of one turn in one write.
    rec.message = "";
    writer.write(rec, current);
    rec.restarts = 3;
    writer.write(rec, current);
    await until("the changed status is stored", async () => says(await stored()));
    assert.equal(calls(), 2);
    assert.equal((await stored()).status!.restarts, 3);

    // Someone else overwrote the status: the next look at it (with the copy that says so) repairs it.
    await resources.updateStatus("Container", "c1", (cur) => {
      const bogus = clone(ContainerStatusSchema, cur.status!);
      bogus.phase = "Bogus";
      bogus.restarts = 0;
      return bogus;
    });
    const overwritten = await stored();
    assert.equal(overwritten.status!.phase, "Bogus");
    writer.write(rec, overwritten);
    await until("the overwritten status is set right", async () => says(await stored()));
    assert.equal((await stored()).status!.restarts, 3);

    // A stored copy of another object under the name (re-created) is never taken as this one's.
    const other = clone(ContainerSchema, overwritten);
    other.metadata!.uid = "another-uid";
    const before = calls();
    writer.write(rec, other);
    await until("a write was asked for", async () => calls() > before);
    assert.deepEqual(errors, []);
  } finally {
    await writer.stop();
    await close();
  }
});

test("status writer: the changes of 300 records in one turn are written in 3 transactions of at most 128, each record's own status", async () => {
  const store = openSqliteStore();
  const resources = createResourceStore(store);
  const errors: string[] = [];
  const writer = createStatusWriter({ resources, onError: (m) => errors.push(m) });
  try {
    const n = 300;
    const created = await resources.createAll(Array.from({ length: n }, (_, i) => create(ContainerSchema, { metadata: { name: `b-${i}` }, spec: { module: "m", function: "f" } })));
    const records = created.map((r, i) => {
      assert.ok(r.object, `b-${i} created: ${r.error?.message}`);
      const rec = new ContainerRecord(r.object.metadata!.name, r.object.metadata!.uid, r.object);
      rec.restarts = i + 1;
      return rec;
    });
    const from = await resources.revision();
    for (const [i, rec] of records.entries()) writer.write(rec, created[i]!.object);
    await until("every record's status is stored", async () => {
      const { items } = await resources.list("Container", { nameGlob: "b-*" });
      return items.length === n && items.every((c) => c.status?.restarts === Number(c.metadata!.name.slice(2)) + 1);
    });
    // Seen through a watch: which revisions carried the writes.
    const abort = new AbortController();
    const revisions = new Map<number, number>();
    let seen = 0;
    for await (const batch of resources.watch({ kind: "Container", fromRevision: from }, abort.signal)) {
      for (const e of batch.events) {
        revisions.set(e.revision, (revisions.get(e.revision) ?? 0) + 1);
        seen++;
      }
      if (seen >= n) abort.abort();
    }
    assert.equal(seen, n);
    assert.deepEqual([...revisions.values()], [128, 128, 44], "one transaction per 128 containers");
    assert.deepEqual(errors, []);
  } finally {
    await writer.stop();
    await store.close();
  }
});
