/**
 * Which changes of a replica wake its ReplicaSet (in memory): a status change that leaves the
 * replica as ready as it was does not; becoming ready or not, being marked for deletion, a
 * changed spec, labels, annotations, owner or uid, and every ADDED and DELETED event do. And the
 * index a ReplicaSet lists its candidate replicas from stays in step with the cache it is fed from.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { clone, create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ContainerSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { concernsOwner, createPrefixIndex } from "../src/server/controllers/replicaset-controller.js";
import type { ObjectCache } from "../src/server/controllers/informer.js";
import type { ObjectEvent } from "../src/server/store/resource-store.js";

const replica = create(ContainerSchema, {
  metadata: { name: "rs-1", uid: "u1", labels: { a: "1" }, annotations: { n: "1" }, ownerReference: { kind: "ReplicaSet", name: "rs", uid: "o1" } },
  spec: { module: "workers", function: "echo_worker" },
  status: { phase: "Pending", ready: false },
});

function modified(change: (c: Container) => void, previous: Container = replica): ObjectEvent {
  const object = clone(ContainerSchema, previous);
  change(object);
  return { type: "MODIFIED", object, previous, revision: 2 };
}

test("a status change that keeps readiness does not wake the owner; every other change does", () => {
  assert.equal(concernsOwner(modified((c) => (c.status!.phase = "Starting"))), false, "Pending -> Starting");
  assert.equal(concernsOwner(modified((c) => (c.status!.host = "h1"))), false);
  assert.equal(concernsOwner(modified((c) => (c.status!.ready = true))), true, "became ready");
  const ready = modified((c) => (c.status!.ready = true)).object as Container;
  assert.equal(concernsOwner(modified((c) => (c.status!.ready = false), ready)), true, "no longer ready");
  assert.equal(concernsOwner(modified((c) => (c.status!.restarts = 1), ready)), false, "ready before and after");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.deletionTimestamp = timestampNow()))), true, "marked for deletion");
  assert.equal(concernsOwner(modified((c) => (c.spec!.function = "other"))), true, "spec");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.labels = { a: "2" }))), true, "labels");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.annotations = {}))), true, "annotations");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.ownerReference!.uid = "o2"))), true, "owner uid");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.ownerReference!.name = "rs2"))), true, "owner name");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.ownerReference = undefined))), true, "owner dropped");
  assert.equal(concernsOwner(modified((c) => (c.metadata!.uid = "u2"))), true, "re-created");
});

test("ADDED, DELETED and a MODIFIED without its previous version always wake the owner", () => {
  assert.equal(concernsOwner({ type: "ADDED", object: replica, previous: undefined, revision: 1 }), true);
  assert.equal(concernsOwner({ type: "DELETED", object: replica, previous: replica, revision: 3 }), true);
  assert.equal(concernsOwner({ type: "MODIFIED", object: replica, previous: undefined, revision: 3 }), true);
});

test("the prefix index lists the same Containers as a scan of the cache, through adds, changes and deletes", () => {
  const cached = new Map<string, Container>();
  const cache: ObjectCache = {
    get: (_kind, name) => cached.get(name) as never,
    list: () => cached.values() as never,
  };
  const index = createPrefixIndex();
  const scan = (prefix: string) => [...cached.values()].filter((c) => c.metadata!.name.startsWith(`${prefix}-`));
  const names = (cs: Container[]) => cs.map((c) => c.metadata!.name).sort();
  const prefixes = ["a", "a-b", "b", "a-b-1", "x", "-", ""];
  const check = (when: string) => {
    for (const p of prefixes) {
      assert.deepEqual(names(index.candidates(cache, p)), names(scan(p)), `${when}: prefix "${p}"`);
      // The very objects the cache holds, not older versions.
      for (const c of index.candidates(cache, p)) assert.equal(c, cached.get(c.metadata!.name), `${when}: ${c.metadata!.name} current`);
    }
  };
  const container = (name: string, phase = "Pending") => create(ContainerSchema, { metadata: { name }, status: { phase } });
  const put = (name: string, phase?: string) => {
    const previous = cached.get(name);
    const object = container(name, phase);
    cached.set(name, object);
    index.observe({ type: previous ? "MODIFIED" : "ADDED", object, previous, revision: 1 });
  };
  const remove = (name: string) => {
    const previous = cached.get(name)!;
    cached.delete(name);
    index.observe({ type: "DELETED", object: previous, previous, revision: 1 });
  };
  // Events before the first listing are the cache's, not the index's: it is built from the cache then.
  put("a-0");
  put("a-b-0");
  check("built");
  put("a-1");
  put("a-b-1-2");
  put("b-0");
  put("ab-0");
  put("a--0");
  put("-x");
  check("added");
  put("a-1", "Running");
  put("a-b-0", "Running");
  check("modified");
  remove("a-0");
  remove("a-b-1-2");
  remove("-x");
  check("deleted");
  put("a-0");
  check("re-created");
});

test("the prefix index never hands out a Container the cache no longer holds (a relist changes the cache before its events come)", () => {
  const cached = new Map<string, Container>();
  const cache: ObjectCache = { get: (_kind, name) => cached.get(name) as never, list: () => cached.values() as never };
  const index = createPrefixIndex();
  const a0 = create(ContainerSchema, { metadata: { name: "a-0" } });
  const a1 = create(ContainerSchema, { metadata: { name: "a-1" } });
  cached.set("a-0", a0);
  cached.set("a-1", a1);
  assert.deepEqual(index.candidates(cache, "a").map((c) => c.metadata!.name).sort(), ["a-0", "a-1"]);
  // A relist: a-0 is gone and a-1 was re-created, in the cache, before either event is observed.
  cached.delete("a-0");
  const a1again = create(ContainerSchema, { metadata: { name: "a-1", uid: "new" } });
  cached.set("a-1", a1again);
  assert.deepEqual(index.candidates(cache, "a"), [], "neither the deleted a-0 nor the replaced a-1 is handed out");
  index.observe({ type: "DELETED", object: a0, previous: a0, revision: 2 });
  index.observe({ type: "MODIFIED", object: a1again, previous: a1, revision: 2 });
  assert.deepEqual(index.candidates(cache, "a"), [a1again]);
});
