/**
 * A watch response built from the objects' stored bytes (in memory): it decodes, with
 * protobuf-es as any client would, to exactly the response protobuf-es encodes from the
 * objects: every kind, every event type, stored forms of one byte to tens of KiB (lengths of
 * one to three varint bytes), with and without the response's resourceVersion.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WatchEventSchema, WatchResponseSchema } from "../src/gen/k4s/v1/resource_service_pb.js";
import { ContainerSchema, ObjectMetaSchema, ReplicaSetSchema, ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { kindInfo, kindOf, wrap, type AnyObject } from "../src/api/kinds.js";
import type { ObjectEvent } from "../src/server/store/resource-store.js";
import { encodeWatchResponse } from "../src/server/handlers/watch-response-bytes.js";

/** An event as the store gives it: the object under `rv` and its stored bytes (stored without resourceVersion). */
function stored(type: ObjectEvent["type"], obj: AnyObject, rv: string): ObjectEvent {
  const value = toBinary(kindInfo(kindOf(obj)).schema, obj);
  if (obj.metadata) obj.metadata.resourceVersion = rv;
  return { type, object: obj, previous: undefined, revision: Number(rv || 0), size: value.byteLength, value };
}

function expected(events: readonly ObjectEvent[], resourceVersion: string) {
  return create(WatchResponseSchema, {
    events: events.map((e) => create(WatchEventSchema, { type: e.type, object: wrap(e.object) })),
    resourceVersion,
  });
}

const meta = (name: string, extra: Record<string, unknown> = {}) => ({ name, uid: `uid-${name}`, generation: 3n, labels: { app: "a" }, ...extra });

function events(): ObjectEvent[] {
  return [
    stored("ADDED", create(ContainerSchema, { apiVersion: "k4s/v1", kind: "Container", metadata: meta("c-1"), spec: { module: "workers", function: "echo_worker" }, status: { phase: "Running", host: "h", ready: true } }), "7"),
    stored("MODIFIED", create(ReplicaSetSchema, { apiVersion: "k4s/v1", kind: "ReplicaSet", metadata: meta("rs"), spec: { replicas: 1000, container: "c-1" } }), "123456789012"),
    stored("DELETED", create(ServiceSchema, { apiVersion: "k4s/v1", kind: "Service", metadata: meta("svc", { annotations: { big: "x".repeat(40_000) } }), spec: { selector: "c-*" } }), "8"),
    // An object without metadata: nothing to merge into, no revision appended.
    stored("ADDED", create(ServiceSchema, {}), ""),
    stored("MODIFIED", create(ContainerSchema, { metadata: meta("c-2", { annotations: { a: "y".repeat(150) } }) }), "99"),
  ];
}

test("a watch response from stored bytes decodes to the response encoded from the objects", () => {
  for (const rv of ["", "5", "123456789012345"]) {
    const evs = events();
    const bytes = encodeWatchResponse(evs, rv);
    assert.ok(bytes, "every event carries its stored bytes");
    const got = fromBinary(WatchResponseSchema, bytes);
    const want = expected(evs, rv);
    assert.ok(equals(WatchResponseSchema, got, want), `resourceVersion "${rv}": decoded ${JSON.stringify(got.events.map((e) => e.object?.kind.value?.metadata?.resourceVersion))}`);
    assert.equal(got.events[1]!.object!.kind.value!.metadata!.resourceVersion, "123456789012", "the revision merges into the stored metadata");
    assert.equal(got.events[1]!.object!.kind.value!.metadata!.name, "rs", "the stored metadata is kept");
  }
});

test("a bookmark (no events) and a response with one event of one byte of stored form", () => {
  assert.ok(equals(WatchResponseSchema, fromBinary(WatchResponseSchema, encodeWatchResponse([], "42")!), expected([], "42")));
  const one = [stored("ADDED", create(ContainerSchema, { kind: "C" }), "1")];
  assert.ok(equals(WatchResponseSchema, fromBinary(WatchResponseSchema, encodeWatchResponse(one, "")!), expected(one, "")));
});

test("an event without its stored bytes leaves the response to be encoded from the objects", () => {
  const evs = events();
  delete evs[2]!.value;
  assert.equal(encodeWatchResponse(evs, "3"), undefined);
});

/**
 * protobuf.js (the parser behind @grpc/proto-loader, the usual way a Node program talks to a
 * gRPC server) keeps only the last record of a message field given twice: the response must
 * carry each object's metadata as one record, or those clients see a name-less object.
 */
test("protobuf.js, as @grpc/proto-loader clients use it, reads every object's metadata whole with its revision", () => {
  const root = new protobuf.Root();
  const protoDir = fileURLToPath(new URL("../proto/", import.meta.url));
  root.resolvePath = (_origin, target) => (target.startsWith("google/protobuf/") ? target : join(protoDir, target));
  root.loadSync("k4s/v1/resource_service.proto");
  const WatchResponse = root.lookupType("k4s.v1.WatchResponse");
  const evs = events();
  const decoded = WatchResponse.toObject(WatchResponse.decode(encodeWatchResponse(evs, "5")!), { longs: String, oneofs: true }) as {
    events: { type: string; object: Record<string, { metadata?: Record<string, unknown> }> & { kind: string } }[];
    resourceVersion: string;
  };
  assert.equal(decoded.resourceVersion, "5");
  assert.equal(decoded.events.length, evs.length);
  decoded.events.forEach((got, i) => {
    const want = evs[i]!.object.metadata;
    const meta = got.object[got.object.kind]!.metadata;
    assert.equal(got.type, evs[i]!.type);
    assert.equal(meta?.name ?? "", want?.name ?? "", `event ${i}: the name kept`);
    assert.equal(meta?.uid ?? "", want?.uid ?? "", `event ${i}: the uid kept`);
    assert.deepEqual(meta?.labels ?? {}, want?.labels ?? {}, `event ${i}: the labels kept`);
    assert.equal(meta?.resourceVersion ?? "", want?.resourceVersion ?? "", `event ${i}: the revision set`);
  });
});

test("a stored form whose revision is already set, or that has no metadata record, still reads with the event's revision", () => {
  const obj = create(ContainerSchema, { metadata: meta("c-3", { resourceVersion: "1" }) });
  const value = toBinary(ContainerSchema, obj);
  obj.metadata!.resourceVersion = "77";
  const bare = create(ContainerSchema, { kind: "Container" });
  const bareValue = toBinary(ContainerSchema, bare);
  bare.metadata = create(ObjectMetaSchema, { resourceVersion: "78" });
  const evs: ObjectEvent[] = [
    { type: "MODIFIED", object: obj, previous: undefined, revision: 77, size: value.byteLength, value },
    { type: "ADDED", object: bare, previous: undefined, revision: 78, size: bareValue.byteLength, value: bareValue },
  ];
  const got = fromBinary(WatchResponseSchema, encodeWatchResponse(evs, "")!);
  assert.ok(equals(WatchResponseSchema, got, expected(evs, "")));
});
