/**
 * The stored form of a status change made from the stored form before it (in memory): byte for
 * byte what protobuf-es encodes for the whole object, for every kind, with a status before or
 * not, a status removed, and lengths of one or two varint bytes; a stored form with a field
 * after its status, or numbered after it, is left to the caller.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  ContainerSchema,
  ContainerStatusSchema,
  ReplicaSetSchema,
  ReplicaSetStatusSchema,
  ServiceSchema,
  ServiceStatusSchema,
} from "../src/gen/k4s/v1/resources_pb.js";
import { withStatusBytes } from "../src/server/store/status-bytes.js";

const meta = { name: "x", uid: "u", generation: 2n, labels: { b: "2", a: "1" }, annotations: { note: "n".repeat(200) }, ownerReference: { kind: "ReplicaSet", name: "rs", uid: "o" } };

const cases: { kind: string; schema: DescMessage; statusSchema: DescMessage; obj: Record<string, unknown>; statuses: Record<string, unknown>[] }[] = [
  {
    kind: "Container",
    schema: ContainerSchema,
    statusSchema: ContainerStatusSchema,
    obj: { apiVersion: "k4s/v1", kind: "Container", metadata: meta, spec: { module: "workers", function: "echo_worker", parameters: { n: 1, s: "v" } } },
    statuses: [{ phase: "Pending" }, { phase: "Running", ready: true, host: "h1", restarts: 3, message: "m".repeat(300) }, {}],
  },
  {
    kind: "ReplicaSet",
    schema: ReplicaSetSchema,
    statusSchema: ReplicaSetStatusSchema,
    obj: { apiVersion: "k4s/v1", kind: "ReplicaSet", metadata: meta, spec: { replicas: 1000, container: "tmpl" } },
    statuses: [{ replicas: 1000, readyReplicas: 999, observedGeneration: 2n }, {}],
  },
  {
    kind: "Service",
    schema: ServiceSchema,
    statusSchema: ServiceStatusSchema,
    obj: { apiVersion: "k4s/v1", kind: "Service", metadata: meta, spec: { selector: "x-*" } },
    statuses: [{}],
  },
];

const show = (v: unknown) => JSON.stringify(v, (_, x: unknown) => (typeof x === "bigint" ? String(x) : x));

test("a status change spliced into the stored form is exactly the whole object encoded", () => {
  for (const c of cases) {
    for (const before of [undefined, ...c.statuses]) {
      const stored = toBinary(c.schema, create(c.schema, { ...c.obj, ...(before ? { status: before } : {}) } as never));
      for (const after of [undefined, ...c.statuses]) {
        const status = after === undefined ? undefined : create(c.statusSchema, after as never);
        const whole = toBinary(c.schema, create(c.schema, { ...c.obj, ...(status ? { status } : {}) } as never));
        const spliced = withStatusBytes(stored, c.statusSchema, status);
        assert.deepEqual(spliced, whole, `${c.kind}: ${show(before)} -> ${show(after)}`);
      }
    }
  }
});

test("a stored form with a field after its status is left to the caller", () => {
  const stored = toBinary(ContainerSchema, create(ContainerSchema, { metadata: { name: "x" }, status: { phase: "Running" } }));
  const withLater = new Uint8Array([...stored, 0x30, 0x01]); // field 6, varint 1
  assert.equal(withStatusBytes(withLater, ContainerStatusSchema, create(ContainerStatusSchema, { phase: "Failed" })), undefined);
});

test("a stored form without a status but with a field numbered after it (unknown here) is left to the caller", () => {
  // protobuf-es writes a status before such a field, so a splice at the end would not be its encoding.
  const stored = toBinary(ContainerSchema, create(ContainerSchema, { metadata: { name: "x" } }));
  const withLater = new Uint8Array([...stored, 0x30, 0x01]); // field 6, varint 1
  assert.equal(withStatusBytes(withLater, ContainerStatusSchema, create(ContainerStatusSchema, { phase: "Failed" })), undefined);
});
