/**
 * The hand-written ConnectRequest/ConnectResponse codec against protobuf-es: the same bytes
 * out, the same messages back, for hot frames, rare frames (which fall back) and odd input.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { create, fromBinary, toBinary, equals, ScalarType, type DescMessage } from "@bufbuild/protobuf";
import {
  CancelCallSchema,
  ConnectRequestSchema,
  ConnectResponseSchema,
  HeartbeatSchema,
  HelloSchema,
  ServerFrameSchema,
  WorkerFrameSchema,
  type ConnectRequest,
  type ConnectResponse,
} from "../src/gen/k4s/v1/worker_service_pb.js";
import {
  CODEC_FIELDS,
  decodeConnectRequest,
  decodeConnectResponse,
  encodeConnectRequest,
  encodeConnectResponse,
  encodeFramedConnectResponse,
  DETACH_BYTES,
  GRPC_PREFIX_BYTES,
  fastPathCovers,
  fieldKindOf,
  slowFrames,
} from "../src/transport/frame-codec.js";

const u64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 2n ** 32n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const i64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const i32 = fc.oneof(fc.constant(0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
// Not starting with U+FEFF: protobuf-es (and so the codec, which matches it) drops a leading byte
// order mark when it decodes a string (TextDecoder's default), so such a string does not
// round-trip in either; a seed found it (labels {"": "\uFEFF"}).
const str = fc.oneof(fc.constant(""), fc.string({ maxLength: 20 }), fc.string({ unit: "binary", maxLength: 80 })).filter((s) => !s.startsWith("\uFEFF"));
const bytes = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 300 }));

/**
 * Random values of a message, field by field from its schema: a field added to the proto is
 * generated (and so checked byte for byte) without anyone listing it here.
 */
function valuesOf(schema: DescMessage): fc.Arbitrary<Record<string, unknown>> {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of schema.fields) {
    if (f.fieldKind === "message") fields[f.localName] = fc.option(valuesOf(f.message), { nil: undefined });
    else if (f.fieldKind === "scalar") fields[f.localName] = scalarValues(f.scalar, `${schema.typeName}.${f.name}`);
    else throw new Error(`no values for ${schema.typeName}.${f.name} (${f.fieldKind}): teach this test`);
  }
  return fc.record(fields);
}

function scalarValues(t: ScalarType, name: string): fc.Arbitrary<unknown> {
  switch (t) {
    case ScalarType.UINT64:
      return u64;
    case ScalarType.INT64:
      return i64;
    case ScalarType.INT32:
      return i32;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.STRING:
      return str;
    case ScalarType.BYTES:
      return bytes;
    default:
      throw new Error(`no values for ${name} (scalar ${ScalarType[t]}): teach this test`);
  }
}

/** Random frames of the given oneof cases of a frame message, each value from its schema. */
function framesOf(frame: DescMessage, cases: readonly string[]): fc.Arbitrary<unknown>[] {
  return cases.map((c) => {
    const f = frame.fields.find((x) => x.localName === c);
    if (f?.fieldKind !== "message") throw new Error(`${frame.typeName} has no message case ${c}`);
    return fc.record({ case: fc.constant(c), value: valuesOf(f.message) });
  });
}

const workerFrame = fc.oneof(
  ...framesOf(WorkerFrameSchema, ["call", "result", "cancelCall", "heartbeat"]),
  // Rare frames: protobuf-es writes them, the codec only passes them through.
  fc.record({ case: fc.constant("hello" as const), value: fc.record({ name: str, role: str, labels: fc.dictionary(fc.string({ maxLength: 5 }), str, { maxKeys: 3 }), modules: fc.array(str, { maxLength: 3 }) }) }),
  fc.record({ case: fc.constant("log" as const), value: fc.record({ container: str, lines: fc.array(str, { maxLength: 3 }), stream: str }) }),
  fc.constant(undefined),
);

const serverFrame = fc.oneof(
  ...framesOf(ServerFrameSchema, ["delivery", "callResult", "cancelDelivery", "heartbeat"]),
  fc.record({ case: fc.constant("welcome" as const), value: fc.record({ sessionId: str, name: str, heartbeatIntervalMs: i32 }) }),
  fc.constant(undefined),
);

function req(frames: unknown[]): ConnectRequest {
  return create(ConnectRequestSchema, { frames: frames.map((frame) => ({ frame: frame ?? { case: undefined } })) } as never);
}

function res(frames: unknown[]): ConnectResponse {
  return create(ConnectResponseSchema, { frames: frames.map((frame) => ({ frame: frame ?? { case: undefined } })) } as never);
}

type AnyFrame = { case: string; value: Record<string, unknown> } | undefined;
const HOT = new Set(["call", "result", "cancelCall", "heartbeat", "delivery", "callResult", "cancelDelivery"]);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const unsafe = (v: unknown) => typeof v === "bigint" && (v < 0n || v > MAX_SAFE);

/** Whether the codec leaves a frame to protobuf-es when writing it: rare frames, and ids or times past 2^53 or negative. */
const slowToWrite = (f: AnyFrame) => !f || !HOT.has(f.case) || Object.values(f.value).some(unsafe);
/** Whether it does when reading it: rare frames and heartbeats past 2^53 or negative (ids of any size are read). */
const slowToRead = (f: AnyFrame) => !f || !HOT.has(f.case) || (f.case === "heartbeat" && unsafe(f.value.sentAtMs));

/**
 * Checks the codec against protobuf-es on one batch both ways: the same bytes, an equal message
 * back, and the hot frames on the fast path (the frames left to protobuf-es counted).
 */
function checkBatch(kind: "request" | "response", frames: AnyFrame[]): void {
  const [schema, encode, decode, msg] =
    kind === "request"
      ? ([ConnectRequestSchema, encodeConnectRequest, decodeConnectRequest, req(frames)] as const)
      : ([ConnectResponseSchema, encodeConnectResponse, decodeConnectResponse, res(frames)] as const);
  const before = { ...slowFrames };
  const ours = encode(msg as never);
  const theirs = toBinary(schema as typeof ConnectRequestSchema, msg as ConnectRequest);
  assert.deepEqual(new Uint8Array(ours), theirs);
  assert.equal(slowFrames.encoded - before.encoded, frames.filter(slowToWrite).length, "frames written by protobuf-es");
  const back = decode(Buffer.from(theirs));
  assert.equal(slowFrames.decoded - before.decoded, frames.filter(slowToRead).length, "frames read by protobuf-es");
  assert.ok(equals(schema as typeof ConnectRequestSchema, back as ConnectRequest, msg as ConnectRequest), "decoded message differs");
  assert.ok(equals(schema as typeof ConnectRequestSchema, back as ConnectRequest, fromBinary(schema as typeof ConnectRequestSchema, theirs)));
}

test("ConnectRequest: the codec writes protobuf-es's bytes and reads back an equal message, hot frames on the fast path", () => {
  fc.assert(
    fc.property(fc.array(workerFrame, { maxLength: 8 }), (frames) => checkBatch("request", frames as AnyFrame[])),
    { numRuns: 300 },
  );
});

test("ConnectResponse: the codec writes protobuf-es's bytes and reads back an equal message, hot frames on the fast path", () => {
  fc.assert(
    fc.property(fc.array(serverFrame, { maxLength: 8 }), (frames) => checkBatch("response", frames as AnyFrame[])),
    { numRuns: 300 },
  );
});

// Payloads around the size from which a framed response leaves them uncopied.
const bigBytes = fc.integer({ min: DETACH_BYTES - 2, max: DETACH_BYTES + 2 }).chain((n) => fc.integer({ min: 0, max: 255 }).map((b) => new Uint8Array(n).fill(b)));
const bigServerFrame = fc.oneof(
  serverFrame,
  fc.record({ case: fc.constant("delivery"), value: fc.record({ id: u64, container: str, data: bigBytes, contentType: str, expectsReply: fc.boolean(), sender: str }) }),
  // An id past 2^53 sends the frame to protobuf-es after its payload was sized.
  fc.record({ case: fc.constant("callResult"), value: fc.record({ id: u64, data: bigBytes, contentType: str, error: fc.option(fc.record({ code: i32, message: str }), { nil: undefined }) }) }),
);

test("a framed ConnectResponse is the gRPC length prefix then protobuf-es's bytes, each large payload a chunk of its own, not copied", () => {
  fc.assert(
    fc.property(fc.array(bigServerFrame, { maxLength: 6 }), (frames) => {
      const msg = res(frames);
      const theirs = toBinary(ConnectResponseSchema, msg);
      const parts = encodeFramedConnectResponse(msg);
      const framed = Buffer.concat(parts);
      assert.equal(framed.byteLength, GRPC_PREFIX_BYTES + theirs.byteLength);
      assert.equal(framed[0], 0, "not compressed");
      assert.equal(framed.readUInt32BE(1), theirs.byteLength);
      assert.deepEqual(new Uint8Array(framed.subarray(GRPC_PREFIX_BYTES)), theirs);
      // Every fast-path payload of DETACH_BYTES or more is its own chunk, a view of the payload;
      // everything else shares one buffer written by the codec.
      const payloads = frames
        .filter((f): f is NonNullable<AnyFrame> => !slowToWrite(f as AnyFrame))
        .map((f) => (f.value as { data?: Uint8Array }).data)
        .filter((d): d is Uint8Array => d !== undefined && d.byteLength >= DETACH_BYTES);
      const views = parts.filter((p) => payloads.some((d) => p.buffer === d.buffer && p.byteOffset === d.byteOffset && p.byteLength === d.byteLength));
      assert.equal(views.length, payloads.length, "large payloads as views");
      const written = parts.filter((p) => !views.includes(p));
      assert.ok(written.every((p) => p.buffer === written[0]!.buffer), "the rest in one buffer");
      const writtenBytes = written.reduce((n, p) => n + p.byteLength, 0);
      assert.equal(writtenBytes, framed.byteLength - payloads.reduce((n, d) => n + d.byteLength, 0));
      // Nor does that buffer keep room for them (a small one comes from Node's shared pool), and
      // no chunk is empty (each is a write to the stream).
      assert.ok(written[0]!.buffer.byteLength <= Math.max(Buffer.poolSize, writtenBytes), `a ${written[0]!.buffer.byteLength}-byte buffer for ${writtenBytes} bytes`);
      assert.ok(parts.every((p) => p.byteLength > 0), "an empty chunk");
    }),
    { numRuns: 200 },
  );
});

// Every value at the edges of its encoding: each varint length, int32 signs, the 2^31 and 2^53
// limits, strings around the codec's ASCII shortcuts (48 and 64 characters) and multi-byte
// characters, lengths whose own varint grows.
const U64_EDGES = [0n, ...Array.from({ length: 64 }, (_, k) => [2n ** BigInt(k) - 1n, 2n ** BigInt(k)]).flat(), MAX_SAFE - 1n, MAX_SAFE, MAX_SAFE + 1n, 2n ** 64n - 1n].filter(
  (v, i, all) => v < 2n ** 64n && all.indexOf(v) === i,
);
const I64_EDGES = [...U64_EDGES.filter((v) => v < 2n ** 63n), -1n, -2n, -(2n ** 31n), -MAX_SAFE, -(2n ** 63n)];
const I32_EDGES = [0, 1, -1, 127, 128, -128, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, -(2 ** 31), -(2 ** 31) + 1, -(2 ** 28), -16384];
const STRING_EDGES = [
  ...[1, 47, 48, 49, 63, 64, 65, 127, 128, 129, 16383, 16384].map((n) => "a".repeat(n)),
  ...[1, 46, 47, 48, 63, 64, 65, 126, 127].flatMap((n) => ["\u007f", "\u0080", "é", "\u07ff", "\u0800", "€", "\u{10348}"].flatMap((c) => ["a".repeat(n) + c, c + "a".repeat(n)])),
  "\u{10348}".repeat(40),
];
const BYTES_EDGES = [1, 127, 128, 16383, 16384, 2 ** 21].map((n) => new Uint8Array(n).fill(n % 251));

test("every value at the edges of its encoding is written as protobuf-es writes it and read back, on the fast path", () => {
  const frames: AnyFrame[] = [];
  for (const id of U64_EDGES) {
    frames.push({ case: "call", value: { id, parentDelivery: id, target: "t" } });
    frames.push({ case: "result", value: { id } }, { case: "cancelCall", value: { id } });
  }
  for (const sentAtMs of I64_EDGES) frames.push({ case: "heartbeat", value: { sentAtMs } });
  for (const n of I32_EDGES) {
    frames.push({ case: "call", value: { id: 1n, timeoutMs: n } });
    frames.push({ case: "result", value: { id: 1n, error: { code: n, message: "m" } } });
  }
  for (const str of STRING_EDGES) {
    frames.push({ case: "call", value: { target: str, contentType: str, sender: str } });
    frames.push({ case: "result", value: { contentType: str, error: { code: 0, message: str } } });
  }
  for (const data of BYTES_EDGES) frames.push({ case: "call", value: { data, expectsReply: true } }, { case: "result", value: { data } });
  for (const f of frames) checkBatch("request", [f]);
  // One batch of them all: more frames than the codec's first scratch space, hot and rare mixed.
  checkBatch("request", [...frames, { case: "hello", value: { name: "h" } }, undefined, ...frames.slice(0, 300)]);

  const server: AnyFrame[] = [];
  for (const id of U64_EDGES) server.push({ case: "delivery", value: { id } }, { case: "callResult", value: { id } }, { case: "cancelDelivery", value: { id, reason: "r" } });
  for (const sentAtMs of I64_EDGES) server.push({ case: "heartbeat", value: { sentAtMs } });
  for (const n of I32_EDGES) server.push({ case: "delivery", value: { timeoutMs: n, attempt: n } }, { case: "callResult", value: { error: { code: n, message: "" } } });
  for (const str of STRING_EDGES) server.push({ case: "delivery", value: { container: str, contentType: str, sender: str } }, { case: "callResult", value: { container: str, contentType: str } }, { case: "cancelDelivery", value: { reason: str } });
  for (const data of BYTES_EDGES) server.push({ case: "delivery", value: { data } }, { case: "callResult", value: { data, container: "c" } });
  for (const f of server) checkBatch("response", [f]);
  checkBatch("response", [...server, { case: "welcome", value: { name: "w" } }, ...server.slice(0, 300)]);
});

test("the codec knows every field of every hot message, as the schema declares them", () => {
  for (const [name, m] of Object.entries(CODEC_FIELDS)) {
    const declared = Object.fromEntries(m.schema.fields.map((f) => [f.localName, fieldKindOf(f)]));
    // A field added to the proto: the codec leaves these frames to protobuf-es (nothing is lost,
    // but the fast path is): add the field to CODEC_FIELDS and to its size, writer and reader.
    assert.deepEqual(declared, { ...m.fields }, `${m.schema.typeName}: the codec's fields differ from the schema's`);
    assert.ok(fastPathCovers(name as keyof typeof CODEC_FIELDS), `${m.schema.typeName} is off the fast path`);
  }
  // Every hot frame case has its message in the table.
  for (const [frame, cases] of [
    [WorkerFrameSchema, ["call", "result", "cancelCall", "heartbeat"]],
    [ServerFrameSchema, ["delivery", "callResult", "cancelDelivery", "heartbeat"]],
  ] as const) {
    for (const c of cases) {
      const f = frame.fields.find((x) => x.localName === c);
      assert.ok(f?.fieldKind === "message" && Object.values(CODEC_FIELDS).some((m) => m.schema.typeName === f.message.typeName), `${frame.typeName}.${c}`);
    }
  }
});

test("a hot message is on the fast path only while the codec knows each of its fields with its kind; a field without a one-byte tag is refused", () => {
  // Repeated and map fields are no scalar to the codec, whatever their elements are.
  assert.equal(fieldKindOf(HelloSchema.field.modules!), undefined, "repeated string");
  assert.equal(fieldKindOf(HelloSchema.field.labels!), undefined, "map<string, string>");
  assert.equal(fieldKindOf(HelloSchema.field.name!), "string");
  assert.equal(fastPathCovers({ schema: HeartbeatSchema, fields: { sentAtMs: "int64" } }), true);
  // The schema changed under the codec: a field's kind, a field removed, a field added.
  assert.equal(fastPathCovers({ schema: HeartbeatSchema, fields: { sentAtMs: "uint64" } }), false, "kind changed");
  assert.equal(fastPathCovers({ schema: HeartbeatSchema, fields: { sentAtMs: "int64", gone: "string" } }), false, "field removed from the schema");
  assert.equal(fastPathCovers({ schema: CancelCallSchema, fields: {} }), false, "field added to the schema");
  // Field numbers from 16 on take a two-byte tag, which the codec does not write.
  const numbered = (n: number) => ({ ...HeartbeatSchema, typeName: "test.Numbered", fields: [{ ...HeartbeatSchema.fields[0]!, number: n }] }) as unknown as DescMessage;
  assert.equal(fastPathCovers({ schema: numbered(15), fields: { sentAtMs: "int64" } }), true);
  assert.throws(() => fastPathCovers({ schema: numbered(16), fields: { sentAtMs: "int64" } }), /frame-codec: test\.Numbered\.sentAtMs has no one-byte tag/);
});

test("strings decoded one after another are each their own, whether their length and bytes repeat or not", () => {
  // The reader reuses the last ASCII string of each length when the bytes are the same: names of
  // one length that differ, repeat, or are not ASCII must still come back as written.
  // "aXc" after "abc" differs in a middle byte only; "abcd" then "äbc" have the same byte length
  // (4), one of them not ASCII.
  const names = ["abc", "abd", "abc", "aXc", "xbc", "abcd", "äbc", "abcd", "ab\u00e9", "abc", "", "a".repeat(47), "a".repeat(23) + "b" + "a".repeat(23), "b".repeat(47), "a".repeat(48), "a".repeat(47)];
  const frames = names.map((sender, i) => ({
    case: "delivery",
    value: { id: BigInt(i + 1), container: names[(i + 1) % names.length]!, sender, contentType: names[(i + 2) % names.length]! },
  }));
  for (const batch of [frames, frames.slice().reverse()]) {
    const decoded = decodeConnectResponse(encodeConnectResponse(res(batch)));
    assert.deepEqual(
      decoded.frames.map((f) => (f.frame.case === "delivery" ? [f.frame.value.sender, f.frame.value.container, f.frame.value.contentType] : undefined)),
      batch.map((f) => [f.value.sender, f.value.container, f.value.contentType]),
    );
  }
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

/** Protobuf wire bytes by hand: a varint, and a field of a tag number and wire type. */
function varint(n: bigint): number[] {
  const out: number[] = [];
  do {
    out.push(Number(n & 0x7fn) | (n >= 0x80n ? 0x80 : 0));
    n >>= 7n;
  } while (n > 0n);
  return out;
}
const vfield = (no: number, n: bigint | number) => [...varint(BigInt(no << 3)), ...varint(BigInt(n))];
const lfield = (no: number, body: number[]) => [...varint(BigInt((no << 3) | 2)), ...varint(BigInt(body.length)), ...body];
const ascii = (s: string) => [...Buffer.from(s)];
/** A ConnectRequest of frames given as WorkerFrame bodies. */
const request = (...frames: number[][]) => Buffer.from(frames.flatMap((f) => lfield(1, f)));

test("frames written another way than protobuf-es writes them are read as protobuf-es reads them", () => {
  const CALL = 5;
  const RESULT = 3;
  const CANCEL = 6;
  const HEARTBEAT = 7;
  const cases: { name: string; bytes: Buffer; slow: number }[] = [
    // Fields in reverse order, a repeated one (the last wins), a bool written as 2, an int32 in ten bytes.
    { name: "reordered and repeated fields", bytes: request(lfield(CALL, [...vfield(6, 2n ** 64n - 5n), ...vfield(5, 2), ...lfield(2, ascii("b")), ...vfield(1, 7), ...lfield(2, ascii("target")), ...vfield(1, 9)])), slow: 0 },
    { name: "an empty hot frame", bytes: request(lfield(CANCEL, [])), slow: 0 },
    { name: "a ten-byte id", bytes: request(lfield(RESULT, vfield(1, 2n ** 64n - 1n))), slow: 0 },
    { name: "an error with every field", bytes: request(lfield(RESULT, [...vfield(1, 3), ...lfield(4, [...vfield(1, 2n ** 64n - 13n), ...lfield(2, ascii("boom"))])])), slow: 0 },
    // Left to protobuf-es: two cases of the oneof in one frame (the last wins), two errors in one
    // result (protobuf merges them), a field the codec does not know inside an error, a
    // heartbeat past 2^53, an empty frame, a field of ConnectRequest the codec does not know.
    { name: "two oneof cases in one frame", bytes: request([...lfield(CALL, vfield(1, 1)), ...lfield(CANCEL, vfield(1, 2))]), slow: 1 },
    { name: "two errors in one result", bytes: request(lfield(RESULT, [...lfield(4, vfield(1, 5)), ...lfield(4, lfield(2, ascii("second")))])), slow: 1 },
    { name: "an unknown field in an error", bytes: request(lfield(RESULT, lfield(4, [...vfield(1, 5), ...vfield(9, 1)]))), slow: 1 },
    { name: "an unknown fixed32 field in a hot frame", bytes: request(lfield(CALL, [...vfield(1, 1), 0x4d, 1, 2, 3, 4])), slow: 1 },
    { name: "a heartbeat past 2^53", bytes: request(lfield(HEARTBEAT, vfield(1, 2n ** 53n))), slow: 1 },
    { name: "a heartbeat at 2^53 - 1 and a hot frame after an empty one", bytes: request(lfield(HEARTBEAT, vfield(1, 2n ** 53n - 1n)), [], lfield(CANCEL, vfield(1, 4))), slow: 1 },
    { name: "an unknown field of ConnectRequest", bytes: Buffer.concat([request(lfield(CANCEL, vfield(1, 4)), lfield(CANCEL, vfield(1, 5))), Buffer.from(vfield(2, 1))]), slow: 2 },
  ];
  for (const c of cases) {
    const before = slowFrames.decoded;
    const theirs = fromBinary(ConnectRequestSchema, c.bytes);
    const ours = decodeConnectRequest(c.bytes);
    assert.ok(equals(ConnectRequestSchema, ours, theirs), c.name);
    assert.equal(slowFrames.decoded - before, c.slow, `${c.name}: frames read by protobuf-es`);
  }
  // Bytes protobuf-es refuses, the codec refuses too.
  const bad: [string, Buffer][] = [
    ["an eleven-byte varint", request(lfield(CALL, [0x08, ...Array(10).fill(0xff), 0x01]))],
    ["invalid UTF-8 in a string", request(lfield(CALL, lfield(2, [0x61, 0xc3, 0x28])))],
    ["invalid UTF-8 in a long string", request(lfield(CALL, lfield(2, [...ascii("a".repeat(60)), 0xff])))],
    ["a lone continuation byte 0x80 in a short string", request(lfield(CALL, lfield(2, [0x61, 0x80, 0x62])))],
    ["a short string ending in half a character", request(lfield(CALL, lfield(2, [0x61, 0x62, 0xc3])))],
    ["a length past the frame's end", request(lfield(CALL, [0x12, 0x05, 0x61]))],
    ["a truncated int32", request(lfield(CALL, [0x30, 0xff, 0xff]))],
    ["a known field of the wrong wire type", request(lfield(CALL, [...vfield(1, 1), 0x15, 1, 2, 3, 4]))],
  ];
  for (const [name, bytes] of bad) {
    assert.throws(() => fromBinary(ConnectRequestSchema, bytes), Error, `protobuf-es reads ${name}`);
    assert.throws(() => decodeConnectRequest(bytes), Error, `the codec reads ${name}`);
  }
});

test("fields the fast path does not know and a repeated error are left to protobuf-es; empty fields written out are read", () => {
  const CALL = 5;
  const RESULT = 3;
  const x17 = Array(17).fill(0x78);
  const requests: { name: string; bytes: Buffer; slow: number }[] = [
    { name: "a string and bytes written out though empty", bytes: request(lfield(CALL, [...vfield(1, 3), ...lfield(2, []), ...lfield(3, []), ...lfield(4, [])])), slow: 0 },
    { name: "an unknown length-delimited field in an error", bytes: request(lfield(RESULT, lfield(4, [...vfield(1, 5), ...lfield(9, ascii("x"))]))), slow: 1 },
    { name: "an unknown field in a result", bytes: request(lfield(RESULT, [...vfield(1, 5), ...lfield(9, [0x08, 0x05])])), slow: 1 },
    { name: "an unknown field in a result, read as fields", bytes: request(lfield(RESULT, [...vfield(1, 5), ...lfield(9, ascii("ab"))])), slow: 1 },
    // Read on without it, the second error's length (26 = a contentType tag) and its bytes would
    // be taken as fields of the result.
    { name: "two errors, the second one's bytes readable as fields of the result", bytes: request(lfield(RESULT, [...lfield(4, vfield(1, 5)), ...lfield(4, [0x12, 24, ...x17, 0x1a, 5, ...ascii("abcde")])])), slow: 1 },
  ];
  for (const c of requests) {
    const before = slowFrames.decoded;
    const ours = decodeConnectRequest(c.bytes);
    const theirs = fromBinary(ConnectRequestSchema, c.bytes);
    assert.ok(equals(ConnectRequestSchema, ours, theirs), c.name);
    assert.equal(slowFrames.decoded - before, c.slow, `${c.name}: frames read by protobuf-es`);
    // Written back, the fields the fast path does not know are kept, as protobuf-es keeps them.
    assert.deepEqual(new Uint8Array(encodeConnectRequest(ours)), toBinary(ConnectRequestSchema, theirs), `${c.name}: written back`);
  }
  const DELIVERY = 4;
  const CANCEL_DELIVERY = 5;
  const CALL_RESULT = 6;
  const responses: { name: string; bytes: Buffer; slow: number }[] = [
    { name: "an unknown field in a cancelled delivery", bytes: request(lfield(CANCEL_DELIVERY, [...vfield(1, 5), ...lfield(9, ascii("x"))])), slow: 1 },
    { name: "an unknown field of ConnectResponse", bytes: Buffer.concat([request(lfield(CANCEL_DELIVERY, vfield(1, 4))), Buffer.from(vfield(2, 1))]), slow: 1 },
    { name: "an unknown field in a ServerFrame beside its case", bytes: request([...lfield(CANCEL_DELIVERY, vfield(1, 4)), ...vfield(99, 1)]), slow: 1 },
    { name: "an unknown field in a delivery", bytes: request(lfield(DELIVERY, [...vfield(1, 5), ...lfield(2, ascii("c")), ...vfield(99, 2)])), slow: 1 },
    { name: "an unknown field in a call's result's error", bytes: request(lfield(CALL_RESULT, [...vfield(1, 5), ...lfield(4, [...vfield(1, 3), ...vfield(9, 1)])])), slow: 1 },
  ];
  for (const c of responses) {
    const before = slowFrames.decoded;
    const ours = decodeConnectResponse(c.bytes);
    const theirs = fromBinary(ConnectResponseSchema, c.bytes);
    assert.ok(equals(ConnectResponseSchema, ours, theirs), c.name);
    assert.equal(slowFrames.decoded - before, c.slow, `${c.name}: frames read by protobuf-es`);
    // Written back, the fields the fast path does not know are kept, as protobuf-es keeps them;
    // but for those of ConnectResponse itself: the codec writes its frames only.
    assert.deepEqual(new Uint8Array(encodeConnectResponse(ours)), toBinary(ConnectResponseSchema, { ...theirs, $unknown: undefined }), `${c.name}: written back`);
  }
});

test("bad bytes fail with protobuf-es's own error, and a varint cut at its frame's end is not read on into the next frame", () => {
  const CALL = 5;
  const CANCEL = 6;
  // The error the caller sees is protobuf-es's, whether the batch or a frame in it is bad.
  const bad: [string, Buffer][] = [
    ["a frames field longer than the batch", Buffer.from([0x0a, 0x05, 0x01])],
    ["a frames field with a truncated length", Buffer.from([0x0a, 0x80])],
    ["a length past the frame's end", request(lfield(CALL, [0x12, 0x05, 0x61]))],
    ["an eleven-byte int32", request(lfield(CALL, [0x30, ...Array(10).fill(0xff), 0x01]))],
  ];
  for (const [name, bytes] of bad) {
    let theirs = "";
    try {
      fromBinary(ConnectRequestSchema, bytes);
    } catch (e) {
      theirs = String(e);
    }
    assert.notEqual(theirs, "", `protobuf-es reads ${name}`);
    assert.throws(() => decodeConnectRequest(bytes), (e: unknown) => String(e) === theirs, `${name}: the codec's error is not protobuf-es's (${theirs})`);
  }
  // The codec reads each frame within its own bounds: a value cut at the frame's end is refused
  // (protobuf-es would read on into the next frame's bytes), however the varint is cut.
  const next = lfield(CANCEL, vfield(1, 4));
  const cut: [string, number[]][] = [
    ["an id with no varint", lfield(CANCEL, [0x08])],
    ["an id cut after one byte", lfield(CANCEL, [0x08, 0x80])],
    ["an int32 with no varint", lfield(CALL, [...vfield(1, 1), 0x30])],
    ["an int32 cut after one byte", lfield(CALL, [...vfield(1, 1), 0x30, 0x80])],
  ];
  for (const [name, frame] of cut) {
    assert.throws(() => decodeConnectRequest(request(frame, next)), Error, `the codec read ${name} on into the next frame`);
  }
});
