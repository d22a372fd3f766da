/**
 * A hand-written protobuf codec for the two stream messages of WorkerService.Connect
 * (ConnectRequest and ConnectResponse), byte-for-byte the wire format protobuf-es writes.
 *
 * Why: every message of the product crosses these frames twice, and protobuf-es v2 encodes and
 * decodes by reflection, which dominated the profile of the message path. The hot frames
 * (calls, results, deliveries, cancels, heartbeats) are coded here directly; rare frames (hello,
 * attach, welcome, assign, stop, state, logs) and any frame carrying a field this codec does not
 * know fall back to protobuf-es for that one frame, so unknown fields survive and other
 * languages see exactly the same bytes. Decoded payloads are subarrays of the received buffer,
 * never copies. The decoded values are ordinary protobuf-es message shapes (with $typeName).
 *
 * The codec is tied to the schema: the tags it writes and reads are derived from the generated
 * descriptors, and a hot message whose schema holds a field the codec does not know (one added
 * to the proto since) is left to protobuf-es whole, so nothing is dropped silently; a test
 * compares the codec's fields with the schema's, to say the fast path was lost.
 */
import { isUtf8 } from "node:buffer";
import { fromBinary, ScalarType, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  CallResultSchema,
  CallSchema,
  CancelCallSchema,
  CancelDeliverySchema,
  ConnectRequestSchema,
  ConnectResponseSchema,
  DeliveryResultSchema,
  DeliverySchema,
  ErrorSchema,
  HeartbeatSchema,
  ServerFrameSchema,
  WorkerFrameSchema,
  type Call,
  type CallResult,
  type CancelCall,
  type CancelDelivery,
  type ConnectRequest,
  type ConnectResponse,
  type Delivery,
  type DeliveryResult,
  type Error as WireError,
  type Heartbeat,
  type ServerFrame,
  type WorkerFrame,
} from "../gen/k4s/v1/worker_service_pb.js";

const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------------------------
// The fields the codec knows, and their tags from the schema

/** How the codec writes one field. */
export type FieldKind = "uint64" | "int64" | "int32" | "bool" | "string" | "bytes" | "message";

const KIND_OF_SCALAR: Partial<Record<ScalarType, FieldKind>> = {
  [ScalarType.UINT64]: "uint64",
  [ScalarType.INT64]: "int64",
  [ScalarType.INT32]: "int32",
  [ScalarType.BOOL]: "bool",
  [ScalarType.STRING]: "string",
  [ScalarType.BYTES]: "bytes",
};

/** The kind of a schema field as the codec sees it (undefined: a kind it never writes). */
export function fieldKindOf(field: DescMessage["fields"][number]): FieldKind | undefined {
  if (field.fieldKind === "message") return "message";
  return field.fieldKind === "scalar" ? KIND_OF_SCALAR[field.scalar] : undefined;
}

/** The hot messages and the fields the fast path reads and writes, by local name. */
export const CODEC_FIELDS = {
  call: { schema: CallSchema, fields: { id: "uint64", target: "string", data: "bytes", contentType: "string", expectsReply: "bool", timeoutMs: "int32", sender: "string", parentDelivery: "uint64" } },
  result: { schema: DeliveryResultSchema, fields: { id: "uint64", data: "bytes", contentType: "string", error: "message" } },
  cancelCall: { schema: CancelCallSchema, fields: { id: "uint64" } },
  heartbeat: { schema: HeartbeatSchema, fields: { sentAtMs: "int64" } },
  delivery: { schema: DeliverySchema, fields: { id: "uint64", container: "string", data: "bytes", contentType: "string", expectsReply: "bool", timeoutMs: "int32", sender: "string", attempt: "int32" } },
  callResult: { schema: CallResultSchema, fields: { id: "uint64", data: "bytes", contentType: "string", error: "message", container: "string", refused: "bool" } },
  cancelDelivery: { schema: CancelDeliverySchema, fields: { id: "uint64", reason: "string" } },
  error: { schema: ErrorSchema, fields: { code: "int32", message: "string" } },
} as const satisfies Record<string, { schema: DescMessage; fields: Record<string, FieldKind> }>;

type Tags<F> = { readonly [K in keyof F]: number };

/** A field's one-byte tag: its number and wire type (varint 0, length-delimited 2). */
function tagOf(schema: DescMessage, name: string, kind: FieldKind): number {
  const f = schema.fields.find((x) => x.localName === name);
  if (!f || f.number >= 16) throw new Error(`frame-codec: ${schema.typeName}.${name} has no one-byte tag`);
  return (f.number << 3) | (kind === "string" || kind === "bytes" || kind === "message" ? 2 : 0);
}

/**
 * The tags of a hot message's fields, or undefined when its schema holds fields the codec does
 * not know (or of another kind): its frames then go through protobuf-es.
 */
function tagsOf<F extends Record<string, FieldKind>>(m: { schema: DescMessage; fields: F }): Tags<F> | undefined {
  const known = Object.entries(m.fields);
  if (m.schema.fields.length !== known.length) return undefined;
  for (const f of m.schema.fields) if (m.fields[f.localName] !== fieldKindOf(f)) return undefined;
  return Object.fromEntries(known.map(([name, kind]) => [name, tagOf(m.schema, name, kind)])) as Tags<F>;
}

const CALL = tagsOf(CODEC_FIELDS.call);
const RESULT = tagsOf(CODEC_FIELDS.result);
const CANCEL_CALL = tagsOf(CODEC_FIELDS.cancelCall);
const HEARTBEAT = tagsOf(CODEC_FIELDS.heartbeat);
const DELIVERY = tagsOf(CODEC_FIELDS.delivery);
const CALL_RESULT = tagsOf(CODEC_FIELDS.callResult);
const CANCEL_DELIVERY = tagsOf(CODEC_FIELDS.cancelDelivery);
const ERROR = tagsOf(CODEC_FIELDS.error);

/** The tag of a frame's oneof case (a length-delimited field of WorkerFrame or ServerFrame). */
const frameTag = (schema: DescMessage, name: string) => tagOf(schema, name, "message");
const W = {
  result: frameTag(WorkerFrameSchema, "result"),
  call: frameTag(WorkerFrameSchema, "call"),
  cancelCall: frameTag(WorkerFrameSchema, "cancelCall"),
  heartbeat: frameTag(WorkerFrameSchema, "heartbeat"),
};
const S = {
  delivery: frameTag(ServerFrameSchema, "delivery"),
  cancelDelivery: frameTag(ServerFrameSchema, "cancelDelivery"),
  callResult: frameTag(ServerFrameSchema, "callResult"),
  heartbeat: frameTag(ServerFrameSchema, "heartbeat"),
};
/** The tag of `repeated frames = 1` in ConnectRequest and ConnectResponse. */
const FRAMES = tagOf(ConnectRequestSchema, "frames", "message");
if (FRAMES !== tagOf(ConnectResponseSchema, "frames", "message")) throw new Error("frame-codec: frames fields differ");

/**
 * Frames this process's codec has left to protobuf-es so far, written and read: rare frames, and
 * hot frames the fast path cannot take (an id past 2^53, a negative time, unknown fields). A hot
 * frame counted here is a lost fast path (nothing else shows it: the bytes are the same).
 */
export const slowFrames = { encoded: 0, decoded: 0 };

/**
 * Whether the fast path covers every field of a hot message, named or given as a schema and the
 * fields the codec would know (false: its frames use protobuf-es). Throws, as loading the codec
 * does, for a known field without a one-byte tag (numbered 16 or more).
 */
export function fastPathCovers(message: keyof typeof CODEC_FIELDS | { schema: DescMessage; fields: Record<string, FieldKind> }): boolean {
  const m: { schema: DescMessage; fields: Record<string, FieldKind> } = typeof message === "string" ? CODEC_FIELDS[message] : message;
  return tagsOf(m) !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Bytes of a varint of a non-negative integer below 2^53. */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  if (n < 0x800000000) return 5;
  if (n < 0x40000000000) return 6;
  if (n < 0x2000000000000) return 7;
  return 8;
}

/** Bytes of an int32 field value (negative int32s take ten bytes, sign-extended). */
function int32Size(n: number): number {
  return n < 0 ? 10 : varintSize(n);
}

/** UTF-8 length of a string; ASCII strings (the usual names and content types) skip the library call. */
function utf8Size(s: string): number {
  const len = s.length;
  if (len > 64) return Buffer.byteLength(s, "utf8");
  for (let i = 0; i < len; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s, "utf8");
  return len;
}

/** Thrown while sizing a frame the fast path cannot write exactly; the frame falls back. */
const SLOW = new Error("frame-codec: slow path");

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** An id or timestamp carried as bigint by the generated types, as a number for the writer. */
function u64(v: bigint): number {
  // Ids are far below 2^53; anything else (or a negative int64) is written by protobuf-es.
  if (v < 0n || v > MAX_SAFE) throw SLOW;
  return Number(v);
}

/** Whether a decoded message carries fields this codec would not write back. */
function hasUnknown(m: { $unknown?: unknown[] }): boolean {
  return m.$unknown !== undefined && m.$unknown.length > 0;
}

/**
 * Payloads of at least this many bytes are not copied into a framed ConnectResponse's buffer:
 * they go to the stream as chunks of their own (encodeFramedConnectResponse).
 */
export const DETACH_BYTES = 16 * 1024;

/** Bytes of the gRPC length prefix before each message on an HTTP/2 stream: a flag byte and a 32-bit length. */
export const GRPC_PREFIX_BYTES = 5;

// While a framed batch is sized, the payloads it will leave out of its buffer (encoding is
// synchronous, so a module-level tally is safe).
let detaching = false;
let detached = 0;

/** Bytes of a length-delimited field of `n` bytes under a one-byte tag. */
export const messageFieldSize = (n: number) => 1 + varintSize(n) + n;

/** Encoded size of fields, 0 for a default value (which is not written). */
const varintFieldSize = (n: number) => (n === 0 ? 0 : 1 + varintSize(n));
const int32FieldSize = (n: number) => (n === 0 ? 0 : 1 + int32Size(n));
const boolFieldSize = (b: boolean) => (b ? 2 : 0);
function bytesFieldSize(b: Uint8Array): number {
  const n = b.byteLength;
  if (n === 0) return 0;
  if (detaching && n >= DETACH_BYTES) detached += n;
  return messageFieldSize(n);
}
function stringFieldSize(s: string): number {
  if (s === "") return 0;
  return messageFieldSize(utf8Size(s));
}

/** Writes protobuf-encoded values at a moving offset into a buffer sized beforehand. */
export class Writer {
  pos = 0;
  /** Where the part not yet handed to `parts` begins. */
  private start = 0;
  /** `parts`: when given, large payloads are handed over as chunks of their own instead of copied. */
  constructor(
    readonly buf: Buffer,
    private readonly parts?: Buffer[],
  ) {}

  /** Ends the writing of a buffer with parts: its tail goes after the last detached payload. */
  finish(): void {
    if (this.parts && this.pos > this.start) this.parts.push(this.buf.subarray(this.start, this.pos));
  }

  varint(n: number): void {
    const buf = this.buf;
    if (n <= 0x7fffffff) {
      while (n >= 0x80) {
        buf[this.pos++] = (n & 0x7f) | 0x80;
        n >>>= 7;
      }
      buf[this.pos++] = n;
      return;
    }
    while (n >= 0x80) {
      buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    buf[this.pos++] = n;
  }

  int32(n: number): void {
    if (n >= 0) {
      this.varint(n);
      return;
    }
    // Two's complement over 64 bits: the low 32 bits, then 0xffffffff, ten bytes in all.
    let lo = n >>> 0;
    for (let i = 0; i < 4; i++) {
      this.buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo >>>= 7;
    }
    this.buf[this.pos++] = (lo & 0x0f) | 0x70 | 0x80;
    for (let i = 0; i < 4; i++) this.buf[this.pos++] = 0xff;
    this.buf[this.pos++] = 0x01;
  }

  string(s: string, size: number): void {
    this.varint(size);
    if (size === s.length) {
      const buf = this.buf;
      for (let i = 0; i < size; i++) buf[this.pos + i] = s.charCodeAt(i);
    } else {
      this.buf.write(s, this.pos, size, "utf8");
    }
    this.pos += size;
  }

  bytes(b: Uint8Array): void {
    const n = b.byteLength;
    this.varint(n);
    if (this.parts && n >= DETACH_BYTES) {
      this.parts.push(this.buf.subarray(this.start, this.pos), Buffer.from(b.buffer, b.byteOffset, n));
      this.start = this.pos;
      return;
    }
    this.raw(b);
  }

  /** Copies bytes as they are (already encoded), with no length before them. */
  raw(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }

  /** The tag and length of a length-delimited field whose `len` bytes are written next. */
  head(tag: number, len: number): void {
    this.buf[this.pos++] = tag;
    this.varint(len);
  }

  // One call per field, skipping default values as protobuf does; tags are single bytes
  // (every hot field number is below 16, which the tables check).
  varintField(tag: number, n: number): void {
    if (n === 0) return;
    this.buf[this.pos++] = tag;
    this.varint(n);
  }

  int32Field(tag: number, n: number): void {
    if (n === 0) return;
    this.buf[this.pos++] = tag;
    this.int32(n);
  }

  boolField(tag: number, b: boolean): void {
    if (!b) return;
    this.buf[this.pos++] = tag;
    this.buf[this.pos++] = 1;
  }

  stringField(tag: number, s: string): void {
    if (s === "") return;
    this.buf[this.pos++] = tag;
    this.string(s, utf8Size(s));
  }

  bytesField(tag: number, b: Uint8Array): void {
    if (b.byteLength === 0) return;
    this.buf[this.pos++] = tag;
    this.bytes(b);
  }
}

// Per-frame sizes are computed once and kept in these scratch arrays between the sizing pass
// and the writing pass (encoding is synchronous, so sharing them is safe).
let scratch: Int32Array = new Int32Array(256);
let fallback: (Uint8Array | undefined)[] = [];

function ensureScratch(n: number): void {
  if (scratch.length < n) scratch = new Int32Array(Math.max(n, scratch.length * 2));
}

function errorSize(e: WireError): number {
  if (hasUnknown(e) || !ERROR) throw SLOW;
  return int32FieldSize(e.code) + stringFieldSize(e.message);
}

/** The fields a call and a delivery share (data, content type, reply expected, timeout). */
interface Payload {
  data: Uint8Array;
  contentType: string;
  expectsReply: boolean;
  timeoutMs: number;
}
type PayloadTags = { readonly data: number; readonly contentType: number; readonly expectsReply: number; readonly timeoutMs: number };

/** The fields a delivery's result and a call's result share (id, data, content type, error). */
interface Outcome {
  id: bigint;
  data: Uint8Array;
  contentType: string;
  error?: WireError;
}
type OutcomeTags = { readonly id: number; readonly data: number; readonly contentType: number; readonly error: number };

const payloadSize = (v: Payload) => bytesFieldSize(v.data) + stringFieldSize(v.contentType) + boolFieldSize(v.expectsReply) + int32FieldSize(v.timeoutMs);
const outcomeSize = (v: Outcome) =>
  varintFieldSize(u64(v.id)) + bytesFieldSize(v.data) + stringFieldSize(v.contentType) + (v.error ? messageFieldSize(errorSize(v.error)) : 0);

function writePayload(w: Writer, t: PayloadTags, v: Payload): void {
  w.bytesField(t.data, v.data);
  w.stringField(t.contentType, v.contentType);
  w.boolField(t.expectsReply, v.expectsReply);
  w.int32Field(t.timeoutMs, v.timeoutMs);
}

function writeOutcome(w: Writer, t: OutcomeTags, v: Outcome): void {
  w.varintField(t.id, u64(v.id));
  w.bytesField(t.data, v.data);
  w.stringField(t.contentType, v.contentType);
  const e = v.error;
  if (!e) return;
  w.head(t.error, errorSize(e));
  w.int32Field(ERROR!.code, e.code);
  w.stringField(ERROR!.message, e.message);
}

/** Size of a heartbeat's one field; SLOW for a time the fast path does not write (negative). */
const heartbeatSize = (h: Heartbeat) => (HEARTBEAT ? varintFieldSize(u64(h.sentAtMs)) : -1);

/** Size of a hot WorkerFrame's message (without its oneof tag and length), or -1 to fall back. */
function workerFrameSize(f: WorkerFrame): number {
  const fr = f.frame;
  if (hasUnknown(f) || (fr.case !== undefined && hasUnknown(fr.value))) return -1;
  switch (fr.case) {
    case "call": {
      const v = fr.value;
      if (!CALL) return -1;
      return varintFieldSize(u64(v.id)) + stringFieldSize(v.target) + payloadSize(v) + stringFieldSize(v.sender) + varintFieldSize(u64(v.parentDelivery));
    }
    case "result":
      return RESULT ? outcomeSize(fr.value) : -1;
    case "cancelCall":
      return CANCEL_CALL ? varintFieldSize(u64(fr.value.id)) : -1;
    case "heartbeat":
      return heartbeatSize(fr.value);
    default:
      return -1;
  }
}

function writeWorkerFrame(w: Writer, f: WorkerFrame, size: number): void {
  const fr = f.frame;
  switch (fr.case) {
    case "call": {
      const v = fr.value as Call;
      const t = CALL!;
      w.head(W.call, size);
      w.varintField(t.id, u64(v.id));
      w.stringField(t.target, v.target);
      writePayload(w, t, v);
      w.stringField(t.sender, v.sender);
      w.varintField(t.parentDelivery, u64(v.parentDelivery));
      return;
    }
    case "result":
      w.head(W.result, size);
      writeOutcome(w, RESULT!, fr.value as DeliveryResult);
      return;
    case "cancelCall":
      w.head(W.cancelCall, size);
      w.varintField(CANCEL_CALL!.id, u64((fr.value as CancelCall).id));
      return;
    case "heartbeat":
      w.head(W.heartbeat, size);
      w.varintField(HEARTBEAT!.sentAtMs, Number((fr.value as Heartbeat).sentAtMs));
      return;
  }
}

/** Size of a hot ServerFrame's message (without its oneof tag and length), or -1 to fall back. */
function serverFrameSize(f: ServerFrame): number {
  const fr = f.frame;
  if (hasUnknown(f) || (fr.case !== undefined && hasUnknown(fr.value))) return -1;
  switch (fr.case) {
    case "delivery": {
      const v = fr.value;
      if (!DELIVERY) return -1;
      return varintFieldSize(u64(v.id)) + stringFieldSize(v.container) + payloadSize(v) + stringFieldSize(v.sender) + int32FieldSize(v.attempt);
    }
    case "callResult":
      return CALL_RESULT ? outcomeSize(fr.value) + stringFieldSize(fr.value.container) + boolFieldSize(fr.value.refused) : -1;
    case "cancelDelivery":
      return CANCEL_DELIVERY ? varintFieldSize(u64(fr.value.id)) + stringFieldSize(fr.value.reason) : -1;
    case "heartbeat":
      return heartbeatSize(fr.value);
    default:
      return -1;
  }
}

function writeServerFrame(w: Writer, f: ServerFrame, size: number): void {
  const fr = f.frame;
  switch (fr.case) {
    case "delivery": {
      const v = fr.value as Delivery;
      const t = DELIVERY!;
      w.head(S.delivery, size);
      w.varintField(t.id, u64(v.id));
      w.stringField(t.container, v.container);
      writePayload(w, t, v);
      w.stringField(t.sender, v.sender);
      w.int32Field(t.attempt, v.attempt);
      return;
    }
    case "callResult": {
      const v = fr.value as CallResult;
      w.head(S.callResult, size);
      writeOutcome(w, CALL_RESULT!, v);
      w.stringField(CALL_RESULT!.container, v.container);
      w.boolField(CALL_RESULT!.refused, v.refused);
      return;
    }
    case "cancelDelivery": {
      const v = fr.value as CancelDelivery;
      w.head(S.cancelDelivery, size);
      w.varintField(CANCEL_DELIVERY!.id, u64(v.id));
      w.stringField(CANCEL_DELIVERY!.reason, v.reason);
      return;
    }
    case "heartbeat":
      w.head(S.heartbeat, size);
      w.varintField(HEARTBEAT!.sentAtMs, Number((fr.value as Heartbeat).sentAtMs));
      return;
  }
}

function encodeBatch<F>(
  frames: readonly F[],
  sizeOf: (f: F) => number,
  write: (w: Writer, f: F, size: number) => void,
  slow: (f: F) => Uint8Array,
  parts?: Buffer[],
): Buffer {
  const count = frames.length;
  ensureScratch(count);
  if (fallback.length < count) fallback = new Array(count);
  let total = 0;
  detaching = parts !== undefined;
  detached = 0;
  // Sizing counts detachable payloads only while it sizes this batch, however it ends.
  try {
    for (let i = 0; i < count; i++) {
      const f = frames[i]!;
      const before = detached;
      let inner: number;
      try {
        inner = sizeOf(f);
      } catch (err) {
        detached = before;
        if (err !== SLOW) throw err;
        inner = -1;
      }
      let body: number;
      if (inner < 0) {
        slowFrames.encoded++;
        const bytes = slow(f);
        fallback[i] = bytes;
        body = bytes.byteLength;
      } else {
        fallback[i] = undefined;
        scratch[i] = inner;
        // The frame is its one oneof field: tag byte, length, message.
        body = messageFieldSize(inner);
      }
      total += messageFieldSize(body);
    }
  } finally {
    detaching = false;
  }
  // A framed batch starts with its gRPC length prefix (uncompressed, big-endian length).
  const prefix = parts ? GRPC_PREFIX_BYTES : 0;
  const w = new Writer(Buffer.allocUnsafe(prefix + total - detached), parts);
  if (prefix) {
    w.buf[0] = 0;
    w.buf.writeUInt32BE(total, 1);
    w.pos = prefix;
  }
  for (let i = 0; i < count; i++) {
    const slowBytes = fallback[i];
    if (slowBytes) {
      w.head(FRAMES, slowBytes.byteLength);
      w.raw(slowBytes);
      fallback[i] = undefined;
    } else {
      const inner = scratch[i]!;
      w.head(FRAMES, messageFieldSize(inner));
      write(w, frames[i]!, inner);
    }
  }
  w.finish();
  return w.buf;
}

/** Encodes a ConnectRequest (a batch of WorkerFrames) as protobuf-es's toBinary would. */
export function encodeConnectRequest(req: Pick<ConnectRequest, "frames">): Buffer {
  return encodeBatch(req.frames, workerFrameSize, writeWorkerFrame, (f) => toBinary(WorkerFrameSchema, f));
}

/** Encodes a ConnectResponse (a batch of ServerFrames) as protobuf-es's toBinary would. */
export function encodeConnectResponse(res: Pick<ConnectResponse, "frames">): Buffer {
  return encodeBatch(res.frames, serverFrameSize, writeServerFrame, (f) => toBinary(ServerFrameSchema, f));
}

/**
 * Encodes a ConnectRequest as the chunks a gRPC stream writes for it, as
 * encodeFramedConnectResponse does for a response: the worker's end of the stream writes its
 * results' payloads without copying them.
 */
export function encodeFramedConnectRequest(req: Pick<ConnectRequest, "frames">): Buffer[] {
  const parts: Buffer[] = [];
  encodeBatch(req.frames, workerFrameSize, writeWorkerFrame, (f) => toBinary(WorkerFrameSchema, f), parts);
  return parts;
}

/**
 * Encodes a ConnectResponse as the chunks a gRPC stream writes for it: its length prefix and
 * encodeConnectResponse's bytes, with every payload of at least DETACH_BYTES a chunk of its
 * own (a view of the payload, not a copy). Written in order, the chunks are exactly the framed
 * message; a payload is so never copied on its way out of the server.
 */
export function encodeFramedConnectResponse(res: Pick<ConnectResponse, "frames">): Buffer[] {
  const parts: Buffer[] = [];
  encodeBatch(res.frames, serverFrameSize, writeServerFrame, (f) => toBinary(ServerFrameSchema, f), parts);
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Thrown for bytes that are not a valid message; mapped to a decode failure by the caller. */
class DecodeError extends Error {}

/** Signals a frame this codec leaves to protobuf-es (unknown field or wire type). */
const FALLBACK = Symbol("fallback");

/** Strings shorter than this are looked up in recentStrings before they are made. */
const RECENT_STRING_LENGTHS = 48;
/** The last ASCII string decoded of each length below RECENT_STRING_LENGTHS. */
const recentStrings: (string | undefined)[] = new Array<string | undefined>(RECENT_STRING_LENGTHS).fill(undefined);

class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    public end: number,
  ) {
    this.pos = start;
  }

  varint(): number {
    const buf = this.buf;
    if (this.pos >= this.end) throw new DecodeError("truncated varint");
    let b = buf[this.pos++]!;
    if (b < 0x80) return b;
    let n = b & 0x7f;
    let mul = 0x80;
    for (let i = 1; i < 10; i++) {
      if (this.pos >= this.end) throw new DecodeError("truncated varint");
      b = buf[this.pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
    }
    throw new DecodeError("varint longer than 10 bytes");
  }

  /** An int32 field: varints of negative numbers are 64-bit two's complement. */
  int32(): number {
    // The low 32 bits, whatever the varint's length (negative numbers take ten bytes).
    const buf = this.buf;
    let lo = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) throw new DecodeError("truncated varint");
      const b = buf[this.pos++]!;
      if (shift < 32) lo |= (b & 0x7f) << shift;
      if (b < 0x80) return lo | 0;
    }
    throw new DecodeError("varint longer than 10 bytes");
  }

  /** A uint64 id as the bigint the generated types hold; ids are far below 2^53. */
  u64(): bigint {
    const start = this.pos;
    const n = this.varint();
    if (n <= Number.MAX_SAFE_INTEGER) return BigInt(n);
    return this.bigVarint(start);
  }

  private bigVarint(start: number): bigint {
    let n = 0n;
    let shift = 0n;
    for (let p = start; p < this.pos; p++) {
      n |= BigInt(this.buf[p]! & 0x7f) << shift;
      shift += 7n;
    }
    return BigInt.asUintN(64, n);
  }

  length(): number {
    const n = this.varint();
    if (n > this.end - this.pos) throw new DecodeError("length beyond the end of the message");
    return n;
  }

  string(): string {
    const n = this.length();
    const start = this.pos;
    this.pos += n;
    const buf = this.buf;
    if (n < RECENT_STRING_LENGTHS) {
      if (n === 0) return "";
      // The same few names and content types come on every frame: the last ASCII string of
      // each length is reused when its bytes are these, with no new string to make and collect.
      const recent = recentStrings[n];
      if (recent !== undefined) {
        let same = true;
        for (let i = 0; i < n; i++) {
          if (recent.charCodeAt(i) !== buf[start + i]) {
            same = false;
            break;
          }
        }
        if (same) return recent;
      }
      let ascii = true;
      for (let i = start; i < start + n; i++) {
        if (buf[i]! >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) return (recentStrings[n] = buf.latin1Slice(start, start + n));
    }
    // protobuf-es refuses invalid UTF-8; so does the codec (the frame then fails there too).
    if (!isUtf8(buf.subarray(start, start + n))) throw new DecodeError("invalid UTF-8 in a string field");
    return buf.utf8Slice(start, start + n);
  }

  bytes(): Uint8Array {
    const n = this.length();
    const start = this.pos;
    this.pos += n;
    // A plain Uint8Array view (not a Buffer), as protobuf-es would hand out, without a copy.
    return n === 0 ? EMPTY : new Uint8Array(this.buf.buffer, this.buf.byteOffset + start, n);
  }
}

declare global {
  interface Buffer {
    latin1Slice(start: number, end: number): string;
    utf8Slice(start: number, end: number): string;
  }
}

function readError(r: Reader): WireError | typeof FALLBACK {
  const t = ERROR!;
  const e: WireError = { $typeName: "k4s.v1.Error", code: 0, message: "" };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === t.code) e.code = r.int32();
    else if (tag === t.message) e.message = r.string();
    else return FALLBACK;
  }
  return e;
}

/** Reads an Error sub-message into its holder; false to fall back (a repeated one merges in protobuf). */
function readErrorField(r: Reader, holder: { error?: WireError }): boolean {
  if (holder.error || !ERROR) return false;
  const e = sub(r, readError);
  if (e === FALLBACK) return false;
  holder.error = e;
  return true;
}

/** Runs `read` over the sub-message at the reader's position, then moves past it. */
function sub<T>(r: Reader, read: (r: Reader) => T): T {
  const n = r.length();
  const end = r.end;
  r.end = r.pos + n;
  const v = read(r);
  r.pos = r.end;
  r.end = end;
  return v;
}

// The readers below are written out per message, not driven by a table: a table-driven reader
// is what protobuf-es does, and what this codec exists to avoid. Their tags come from the schema.

/** Reads a field of the payload a call and a delivery share; false when the tag is none of them. */
function readPayloadField(r: Reader, tag: number, t: PayloadTags, v: Payload): boolean {
  if (tag === t.data) v.data = r.bytes();
  else if (tag === t.contentType) v.contentType = r.string();
  else if (tag === t.expectsReply) v.expectsReply = r.varint() !== 0;
  else if (tag === t.timeoutMs) v.timeoutMs = r.int32();
  else return false;
  return true;
}

/** Reads a field of the outcome both results share; false when the tag is none of them (or to fall back). */
function readOutcomeField(r: Reader, tag: number, t: OutcomeTags, v: Outcome): boolean {
  if (tag === t.id) v.id = r.u64();
  else if (tag === t.data) v.data = r.bytes();
  else if (tag === t.contentType) v.contentType = r.string();
  else if (tag === t.error) return readErrorField(r, v);
  else return false;
  return true;
}

function readCall(r: Reader): Call | typeof FALLBACK {
  const t = CALL!;
  const v: Call = {
    $typeName: "k4s.v1.Call",
    id: 0n,
    target: "",
    data: EMPTY,
    contentType: "",
    expectsReply: false,
    timeoutMs: 0,
    sender: "",
    parentDelivery: 0n,
  };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === t.id) v.id = r.u64();
    else if (tag === t.target) v.target = r.string();
    else if (tag === t.sender) v.sender = r.string();
    else if (tag === t.parentDelivery) v.parentDelivery = r.u64();
    else if (!readPayloadField(r, tag, t, v)) return FALLBACK;
  }
  return v;
}

function readDeliveryResult(r: Reader): DeliveryResult | typeof FALLBACK {
  const v: DeliveryResult = { $typeName: "k4s.v1.DeliveryResult", id: 0n, data: EMPTY, contentType: "", error: undefined };
  while (r.pos < r.end) if (!readOutcomeField(r, r.varint(), RESULT!, v)) return FALLBACK;
  return v;
}

function readCancelCall(r: Reader): CancelCall | typeof FALLBACK {
  const v: CancelCall = { $typeName: "k4s.v1.CancelCall", id: 0n };
  while (r.pos < r.end) {
    if (r.varint() !== CANCEL_CALL!.id) return FALLBACK;
    v.id = r.u64();
  }
  return v;
}

function readHeartbeat(r: Reader): Heartbeat | typeof FALLBACK {
  const v: Heartbeat = { $typeName: "k4s.v1.Heartbeat", sentAtMs: 0n };
  while (r.pos < r.end) {
    if (r.varint() !== HEARTBEAT!.sentAtMs) return FALLBACK;
    const n = r.varint();
    // Negative int64s (ten-byte varints) are left to protobuf-es.
    if (n > Number.MAX_SAFE_INTEGER) return FALLBACK;
    v.sentAtMs = BigInt(n);
  }
  return v;
}

function readDelivery(r: Reader): Delivery | typeof FALLBACK {
  const t = DELIVERY!;
  const v: Delivery = {
    $typeName: "k4s.v1.Delivery",
    id: 0n,
    container: "",
    data: EMPTY,
    contentType: "",
    expectsReply: false,
    timeoutMs: 0,
    sender: "",
    attempt: 0,
  };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === t.id) v.id = r.u64();
    else if (tag === t.container) v.container = r.string();
    else if (tag === t.sender) v.sender = r.string();
    else if (tag === t.attempt) v.attempt = r.int32();
    else if (!readPayloadField(r, tag, t, v)) return FALLBACK;
  }
  return v;
}

function readCallResult(r: Reader): CallResult | typeof FALLBACK {
  const t = CALL_RESULT!;
  const v: CallResult = { $typeName: "k4s.v1.CallResult", id: 0n, data: EMPTY, contentType: "", error: undefined, container: "", refused: false };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === t.container) v.container = r.string();
    else if (tag === t.refused) v.refused = r.varint() !== 0;
    else if (!readOutcomeField(r, tag, t, v)) return FALLBACK;
  }
  return v;
}

function readCancelDelivery(r: Reader): CancelDelivery | typeof FALLBACK {
  const t = CANCEL_DELIVERY!;
  const v: CancelDelivery = { $typeName: "k4s.v1.CancelDelivery", id: 0n, reason: "" };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === t.id) v.id = r.u64();
    else if (tag === t.reason) v.reason = r.string();
    else return FALLBACK;
  }
  return v;
}

/** A oneof case of a frame the fast path reads: its tag, name, and reader (undefined: off the fast path). */
interface FrameCase {
  tag: number;
  name: string;
  read: ((r: Reader) => unknown) | undefined;
}

const WORKER_CASES: readonly FrameCase[] = [
  { tag: W.result, name: "result", read: RESULT && readDeliveryResult },
  { tag: W.call, name: "call", read: CALL && readCall },
  { tag: W.cancelCall, name: "cancelCall", read: CANCEL_CALL && readCancelCall },
  { tag: W.heartbeat, name: "heartbeat", read: HEARTBEAT && readHeartbeat },
];

const SERVER_CASES: readonly FrameCase[] = [
  { tag: S.delivery, name: "delivery", read: DELIVERY && readDelivery },
  { tag: S.cancelDelivery, name: "cancelDelivery", read: CANCEL_DELIVERY && readCancelDelivery },
  { tag: S.callResult, name: "callResult", read: CALL_RESULT && readCallResult },
  { tag: S.heartbeat, name: "heartbeat", read: HEARTBEAT && readHeartbeat },
];

/**
 * Decodes one frame occupying [r.pos, r.end): a hot frame is exactly one length-delimited oneof
 * field of a case the fast path reads; undefined leaves the frame to protobuf-es.
 */
function readFrame<F>(r: Reader, typeName: string, cases: readonly FrameCase[]): F | undefined {
  const tag = r.varint();
  for (const c of cases) {
    if (c.tag !== tag) continue;
    if (!c.read) return undefined;
    const value = sub(r, c.read);
    if (value === FALLBACK || r.pos !== r.end) return undefined;
    return { $typeName: typeName, frame: { case: c.name, value } } as F;
  }
  return undefined;
}

function decodeBatch<F, M extends { frames: F[] }>(
  buf: Buffer,
  typeName: string,
  readFrame: (r: Reader) => F | undefined,
  slow: (bytes: Uint8Array) => F,
  slowAll: (bytes: Uint8Array) => M,
): M {
  const frames: F[] = [];
  const r = new Reader(buf, 0, buf.byteLength);
  while (r.pos < r.end) {
    let tag: number;
    let n: number;
    try {
      tag = r.varint();
      n = tag === FRAMES ? r.length() : -1;
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      n = -1;
    }
    // Anything but a well-formed frames field (unknown fields, bad bytes): protobuf-es decides.
    if (n < 0) {
      const all = slowAll(buf);
      slowFrames.decoded += all.frames.length;
      return all;
    }
    const start = r.pos;
    const end = start + n;
    const outer = r.end;
    r.end = end;
    let f: F | undefined;
    try {
      f = n > 0 ? readFrame(r) : undefined;
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      f = undefined;
    }
    // protobuf-es decides (and reports) whatever the fast path did not take, including errors.
    if (f === undefined) {
      slowFrames.decoded++;
      f = slow(buf.subarray(start, end));
    }
    frames.push(f);
    r.pos = end;
    r.end = outer;
  }
  return { $typeName: typeName, frames } as unknown as M;
}

/** Decodes a ConnectRequest as protobuf-es's fromBinary would; payloads are subarrays of `buf`. */
export function decodeConnectRequest(buf: Buffer): ConnectRequest {
  return decodeBatch(
    buf,
    "k4s.v1.ConnectRequest",
    (r) => readFrame<WorkerFrame>(r, WorkerFrameSchema.typeName, WORKER_CASES),
    (b) => fromBinary(WorkerFrameSchema, b),
    (b) => fromBinary(ConnectRequestSchema, b),
  );
}

/** Decodes a ConnectResponse as protobuf-es's fromBinary would; payloads are subarrays of `buf`. */
export function decodeConnectResponse(buf: Buffer): ConnectResponse {
  return decodeBatch(
    buf,
    "k4s.v1.ConnectResponse",
    (r) => readFrame<ServerFrame>(r, ServerFrameSchema.typeName, SERVER_CASES),
    (b) => fromBinary(ServerFrameSchema, b),
    (b) => fromBinary(ConnectResponseSchema, b),
  );
}
