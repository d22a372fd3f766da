/**
 * The held versions of a store in memory: a version is found for exactly its revision, the
 * newest two of a key are kept (an event names the version before a write and the one after),
 * an older one never displaces a newer, pins last until a watch delivers that version (or a
 * newer one) and are bounded, and a deleted key keeps nothing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { HeldVersions } from "../src/server/store/held-versions.js";

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
  for (let i = 0; i < 20_001; i++) h.hold(`k${i}`, version(i + 1), true);
  assert.equal(h.pinnedCount, 20_000);
  h.delivered("k0", 1);
  h.delivered("k1", 2);
  assert.equal(h.pinnedCount, 19_999, "k0's pin was the one dropped");
});
