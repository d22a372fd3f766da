/**
 * The hand-written ConnectRequest/ConnectResponse codec against protobuf-es: the same bytes
 * out, the same messages back, for hot frames, rare frames (which fall back) and odd input.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { create, fromBinary, toBinary, equals } from "@bufbuild/protobuf";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  type ConnectRequest,
  type ConnectResponse,
} from "../src/gen/k4s/v1/worker_service_pb.js";
import {
  decodeConnectRequest,
  decodeConnectResponse,
  encodeConnectRequest,
  encodeConnectResponse,
} from "../src/transport/frame-codec.js";

const u64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 2n ** 32n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const i32 = fc.oneof(fc.constant(0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
const str = fc.oneof(fc.constant(""), fc.string({ maxLength: 20 }), fc.string({ unit: "binary", maxLength: 80 }));
const bytes = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 300 }));
const err = fc.option(fc.record({ code: i32, message: str }), { nil: undefined });

const workerFrame = fc.oneof(
  fc.record({ case: fc.constant("call" as const), value: fc.record({ id: u64, target: str, data: bytes, contentType: str, expectsReply: fc.boolean(), timeoutMs: i32, from: str, parentDelivery: u64 }) }),
  fc.record({ case: fc.constant("result" as const), value: fc.record({ id: u64, data: bytes, contentType: str, error: err }) }),
  fc.record({ case: fc.constant("cancelCall" as const), value: fc.record({ id: u64 }) }),
  fc.record({ case: fc.constant("heartbeat" as const), value: fc.record({ sentAtMs: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }) }),
  fc.record({ case: fc.constant("hello" as const), value: fc.record({ name: str, role: str, labels: fc.dictionary(fc.string({ maxLength: 5 }), str, { maxKeys: 3 }), modules: fc.array(str, { maxLength: 3 }) }) }),
  fc.record({ case: fc.constant("log" as const), value: fc.record({ container: str, lines: fc.array(str, { maxLength: 3 }), stream: str }) }),
  fc.constant(undefined),
);

const serverFrame = fc.oneof(
  fc.record({ case: fc.constant("delivery" as const), value: fc.record({ id: u64, container: str, data: bytes, contentType: str, expectsReply: fc.boolean(), timeoutMs: i32, sender: str, attempt: i32 }) }),
  fc.record({ case: fc.constant("callResult" as const), value: fc.record({ id: u64, data: bytes, contentType: str, error: err, container: str }) }),
  fc.record({ case: fc.constant("cancelDelivery" as const), value: fc.record({ id: u64, reason: str }) }),
  fc.record({ case: fc.constant("heartbeat" as const), value: fc.record({ sentAtMs: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }) }),
  fc.record({ case: fc.constant("welcome" as const), value: fc.record({ sessionId: str, name: str, heartbeatIntervalMs: i32 }) }),
  fc.constant(undefined),
);

function req(frames: unknown[]): ConnectRequest {
  return create(ConnectRequestSchema, { frames: frames.map((frame) => ({ frame: frame ?? { case: undefined } })) } as never);
}

function res(frames: unknown[]): ConnectResponse {
  return create(ConnectResponseSchema, { frames: frames.map((frame) => ({ frame: frame ?? { case: undefined } })) } as never);
}

test("ConnectRequest: the codec writes protobuf-es's bytes and reads back an equal message", () => {
  fc.assert(
    fc.property(fc.array(workerFrame, { maxLength: 8 }), (frames) => {
      const msg = req(frames);
      const ours = encodeConnectRequest(msg);
      const theirs = toBinary(ConnectRequestSchema, msg);
      assert.deepEqual(new Uint8Array(ours), theirs);
      const back = decodeConnectRequest(Buffer.from(theirs));
      assert.ok(equals(ConnectRequestSchema, back, msg), "decoded message differs");
      assert.ok(equals(ConnectRequestSchema, back, fromBinary(ConnectRequestSchema, theirs)));
    }),
    { numRuns: 500 },
  );
});

test("ConnectResponse: the codec writes protobuf-es's bytes and reads back an equal message", () => {
  fc.assert(
    fc.property(fc.array(serverFrame, { maxLength: 8 }), (frames) => {
      const msg = res(frames);
      const ours = encodeConnectResponse(msg);
      const theirs = toBinary(ConnectResponseSchema, msg);
      assert.deepEqual(new Uint8Array(ours), theirs);
      const back = decodeConnectResponse(Buffer.from(theirs));
      assert.ok(equals(ConnectResponseSchema, back, msg), "decoded message differs");
    }),
    { numRuns: 500 },
  );
});

test("payloads are decoded as views of the received buffer, not copies", () => {
  const msg = req([{ case: "call", value: { id: 7n, target: "svc/a", data: new Uint8Array([1, 2, 3]), contentType: "x" } }]);
  const buf = Buffer.from(toBinary(ConnectRequestSchema, msg));
  const back = decodeConnectRequest(buf);
  const f = back.frames[0]!.frame;
  assert.equal(f.case, "call");
  if (f.case !== "call") return;
  assert.equal(f.value.data.buffer, buf.buffer);
  assert.deepEqual([...f.value.data], [1, 2, 3]);
});

test("a hot frame with a field the codec does not know keeps it (protobuf-es fallback)", () => {
  // Call { id = 5, target = "a", field 99 = varint 1 } inside WorkerFrame.call (field 5).
  const call = Buffer.from([0x08, 0x05, 0x12, 0x01, 0x61, 0x98, 0x06, 0x01]);
  const frame = Buffer.concat([Buffer.from([0x2a, call.length]), call]);
  const buf = Buffer.concat([Buffer.from([0x0a, frame.length]), frame]);
  const ours = decodeConnectRequest(buf);
  const theirs = fromBinary(ConnectRequestSchema, buf);
  assert.ok(equals(ConnectRequestSchema, ours, theirs));
  assert.deepEqual(new Uint8Array(encodeConnectRequest(ours)), new Uint8Array(buf));
});

test("random and truncated bytes never decode where protobuf-es fails, and decode equally where both succeed", () => {
  fc.assert(
    fc.property(fc.array(workerFrame, { minLength: 1, maxLength: 3 }), fc.nat(), fc.uint8Array({ maxLength: 4 }), (frames, cut, junk) => {
      const good = toBinary(ConnectRequestSchema, req(frames));
      const bad = Buffer.concat([good.subarray(0, cut % (good.length + 1)), junk]);
      let theirs: ConnectRequest | undefined;
      let theirErr = false;
      try {
        theirs = fromBinary(ConnectRequestSchema, bad);
      } catch {
        theirErr = true;
      }
      let ours: ConnectRequest | undefined;
      let ourErr = false;
      try {
        ours = decodeConnectRequest(bad);
      } catch {
        ourErr = true;
      }
      // The codec may be stricter: protobuf-es lets a varint at the end of a sub-message run on
      // into the bytes after it, which the codec (bounded by the sub-message) refuses.
      if (theirErr) assert.ok(ourErr, "the codec decoded bytes protobuf-es refuses");
      if (theirs && ours) assert.ok(equals(ConnectRequestSchema, ours, theirs));
    }),
    { numRuns: 1000 },
  );
});
