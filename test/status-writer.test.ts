/**
 * The container status writer over a real resource store (SQLite in memory): it writes what
 * the record says, skips the store round trip when the informer's copy already says it, and
 * sets right a status someone else overwrote (it compares with the stored object, not with what
 * it wrote last).
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
