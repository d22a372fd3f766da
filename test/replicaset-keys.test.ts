/**
 * Which changes of a replica wake its ReplicaSet (in memory): a status change that leaves the
 * replica as ready as it was does not; becoming ready or not, being marked for deletion, a
 * changed spec, labels, annotations, owner or uid, and every ADDED and DELETED event do.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { clone, create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ContainerSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { concernsOwner } from "../src/server/controllers/replicaset-controller.js";
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
