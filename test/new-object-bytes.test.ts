/**
 * New objects stored from one template (a ReplicaSet's replicas): the spliced stored form is
 * byte for byte what protobuf-es encodes for each whole object, for every kind, for names and
 * uids of any length (metadata lengths of one and two varint bytes), and through createAll over
 * a real store (SQLite in memory): batches mixing copies of several templates and other
 * objects, names taken, the stored objects independent of the caller's template afterwards.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { ContainerSchema, ReplicaSetSchema, ServiceSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import type { AnyObject } from "../src/api/kinds.js";
import { newObjectBytes, newObjectParts, sameTemplate } from "../src/server/store/new-object-bytes.js";
import { createResourceStore, objectKey } from "../src/server/store/create-resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";

const kinds: { kind: string; schema: DescMessage; spec: Record<string, unknown>; status: Record<string, unknown> }[] = [
  { kind: "Container", schema: ContainerSchema, spec: { module: "workers", function: "echo_worker", parameters: { n: 1, s: "v" } }, status: { phase: "Pending" } },
  { kind: "ReplicaSet", schema: ReplicaSetSchema, spec: { replicas: 3, container: "t" }, status: {} },
  { kind: "Service", schema: ServiceSchema, spec: { selector: "x-*" }, status: {} },
];

test("a copy's spliced bytes are exactly the whole copy encoded, for every kind and any name length", () => {
  for (const k of kinds) {
    // Metadata from ~40 to ~300 bytes: its length takes one varint byte, then two.
    for (const labelBytes of [0, 60, 100, 200]) {
      const template = create(k.schema, {
        apiVersion: "k4s/v1",
        kind: k.kind,
        metadata: {
          name: "tmpl",
          uid: "00000000-0000-0000-0000-000000000000",
          generation: 1n,
          labels: labelBytes ? { l: "v".repeat(labelBytes) } : {},
          ownerReference: { kind: "ReplicaSet", name: "rs", uid: "o" },
          creationTimestamp: { seconds: 1n, nanos: 2 },
        },
        spec: k.spec,
        status: k.status,
      } as never) as AnyObject;
      const parts = newObjectParts(toBinary(k.schema, template as never));
      assert.ok(parts, `${k.kind}: the layout holds`);
      for (const name of ["a", "rs-1", "rs-12345", "n".repeat(63), "x".repeat(200), ""]) {
        for (const uid of ["1b4e28ba-2fa1-11d2-883f-0016d3cca427", "u", ""]) {
          const copy = { ...template, metadata: { ...template.metadata!, name, uid } } as AnyObject;
          assert.deepEqual(newObjectBytes(parts, name, uid), toBinary(k.schema, copy as never), `${k.kind} labels ${labelBytes} name ${name.length} uid ${uid.length}`);
        }
      }
    }
  }
});

test("copies of one template are told from other objects", () => {
  const spec = create(ContainerSchema, { spec: { module: "m" } }).spec!;
  const labels = { a: "1" };
  const a = create(ContainerSchema, { metadata: { name: "a", labels }, spec });
  const b = { ...a, metadata: { ...a.metadata!, name: "b", uid: "x" } };
  assert.equal(sameTemplate(a, b), true, "name and uid differ");
  assert.equal(sameTemplate(a, { ...b, spec: create(ContainerSchema, { spec: { module: "m" } }).spec! }), false, "an equal spec, another object");
  assert.equal(sameTemplate(a, { ...b, metadata: { ...b.metadata, labels: { a: "1" } } }), false, "equal labels, another map");
  assert.equal(sameTemplate(a, { ...b, metadata: { ...b.metadata, generation: 2n } }), false, "generation");
  assert.equal(sameTemplate(a, { ...b, kind: "Other" }), false, "kind");
  assert.equal(sameTemplate(a, create(ReplicaSetSchema, { metadata: { name: "b", labels } }) as AnyObject), false, "another kind");
});

test("createAll stores each copy of a template exactly as its object encodes, independent of the caller's template", async () => {
  const store = openSqliteStore({});
  try {
    const resources = createResourceStore(store);
    const template = (labels: Record<string, string>) =>
      create(ContainerSchema, {
        metadata: { name: "t", labels, ownerReference: { kind: "ReplicaSet", name: "rs", uid: "o" } },
        spec: { module: "workers", function: "echo_worker", parameters: { p: "q" } },
      });
    const one = template({ t: "one", l1: "v".repeat(60), l2: "w".repeat(60) });
    const two = template({ t: "two" });
    const copy = (t: Container, name: string): Container => ({ ...t, metadata: { ...t.metadata!, name } });
    await resources.create(copy(one, "r-2"));
    // Copies of `one`, a name taken, copies of `two`, an unrelated object, `one` again; names of 1-3 digits.
    const inputs = [
      ...[0, 1, 2, 3, 10, 100].map((i) => copy(one, `r-${i}`)),
      ...[4, 5, 6].map((i) => copy(two, `r-${i}`)),
      template({ t: "alone" }),
      copy(one, "r-7"),
      copy(one, "r-8"),
    ];
    inputs[9]!.metadata!.name = "r-alone";
    const results = await resources.createAll(inputs);
    assert.equal(results[2]!.error?.rawMessage, `Container "r-2" already exists`);
    assert.equal(results.filter((r) => r.object).length, inputs.length - 1);
    // The caller's template changes afterwards: nothing stored or returned changes with it.
    one.metadata!.labels.t = "changed";
    one.spec!.function = "changed";
    const uids = new Set<string>();
    for (const [i, r] of results.entries()) {
      if (!r.object) continue;
      const obj = r.object;
      assert.equal(obj.metadata!.name, inputs[i]!.metadata!.name);
      assert.equal(obj.metadata!.labels.t, i < 9 ? (i < 6 ? "one" : "two") : i === 9 ? "alone" : "one");
      assert.equal((obj as Container).spec!.function, "echo_worker");
      uids.add(obj.metadata!.uid);
      const kv = (await store.get(objectKey("Container", obj.metadata!.name)))!;
      const whole = toBinary(ContainerSchema, { ...obj, metadata: { ...obj.metadata!, resourceVersion: "" } } as never);
      assert.ok(Buffer.from(kv.value).equals(whole), `${obj.metadata!.name}: stored bytes are its encoding`);
      const read = await resources.get("Container", obj.metadata!.name);
      assert.equal(read!.metadata!.uid, obj.metadata!.uid);
      assert.equal(read!.metadata!.resourceVersion, obj.metadata!.resourceVersion);
    }
    assert.equal(uids.size, inputs.length - 1, "every object has its own uid");
  } finally {
    store.close();
  }
});
