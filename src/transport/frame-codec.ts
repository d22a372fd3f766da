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
 */
import { isUtf8 } from "node:buffer";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
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
// Writing

/** Bytes of a varint of a non-negative integer below 2^53. */
function varintSize(n: number): number {
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

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

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
    this.varint(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
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
  if (hasUnknown(e)) throw SLOW;
  let n = 0;
  if (e.code !== 0) n += 1 + int32Size(e.code);
  if (e.message !== "") {
    const m = utf8Size(e.message);
    n += 1 + varintSize(m) + m;
  }
  return n;
}

function writeError(w: Writer, e: WireError): void {
  if (e.code !== 0) {
    w.buf[w.pos++] = 0x08;
    w.int32(e.code);
  }
  if (e.message !== "") {
    w.buf[w.pos++] = 0x12;
    w.string(e.message, utf8Size(e.message));
  }
}

function heartbeatSize(h: Heartbeat): number {
  const t = h.sentAtMs;
  if (t === 0n) return 0;
  return 1 + varintSize(u64(t));
}

/** Size of a hot WorkerFrame's body (the oneof field, tag included), or -1 to fall back. */
function workerFrameSize(f: WorkerFrame): number {
  const fr = f.frame;
  if (hasUnknown(f) || (fr.case !== undefined && hasUnknown(fr.value))) return -1;
  switch (fr.case) {
    case "call": {
      const v = fr.value as Call;
      let n = 0;
      const id = u64(v.id);
      if (id !== 0) n += 1 + varintSize(id);
      if (v.target !== "") {
        const s = utf8Size(v.target);
        n += 1 + varintSize(s) + s;
      }
      if (v.data.byteLength > 0) n += 1 + varintSize(v.data.byteLength) + v.data.byteLength;
      if (v.contentType !== "") {
        const s = utf8Size(v.contentType);
        n += 1 + varintSize(s) + s;
      }
      if (v.expectsReply) n += 2;
      if (v.timeoutMs !== 0) n += 1 + int32Size(v.timeoutMs);
      if (v.from !== "") {
        const s = utf8Size(v.from);
        n += 1 + varintSize(s) + s;
      }
      const p = u64(v.parentDelivery);
      if (p !== 0) n += 1 + varintSize(p);
      return n;
    }
    case "result": {
      const v = fr.value as DeliveryResult;
      let n = 0;
      const id = u64(v.id);
      if (id !== 0) n += 1 + varintSize(id);
      if (v.data.byteLength > 0) n += 1 + varintSize(v.data.byteLength) + v.data.byteLength;
      if (v.contentType !== "") {
        const s = utf8Size(v.contentType);
        n += 1 + varintSize(s) + s;
      }
      if (v.error) {
        const e = errorSize(v.error);
        n += 1 + varintSize(e) + e;
      }
      return n;
    }
    case "cancelCall": {
      const id = u64((fr.value as CancelCall).id);
      const n = id !== 0 ? 1 + varintSize(id) : 0;
      return n;
    }
    case "heartbeat": {
      const n = heartbeatSize(fr.value as Heartbeat);
      return n;
    }
    default:
      return -1;
  }
}

function writeWorkerFrame(w: Writer, f: WorkerFrame, size: number): void {
  const fr = f.frame;
  const buf = w.buf;
  switch (fr.case) {
    case "call": {
      const v = fr.value as Call;
      buf[w.pos++] = 0x2a; // field 5, length-delimited
      w.varint(size);
      const id = u64(v.id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      if (v.target !== "") {
        buf[w.pos++] = 0x12;
        w.string(v.target, utf8Size(v.target));
      }
      if (v.data.byteLength > 0) {
        buf[w.pos++] = 0x1a;
        w.bytes(v.data);
      }
      if (v.contentType !== "") {
        buf[w.pos++] = 0x22;
        w.string(v.contentType, utf8Size(v.contentType));
      }
      if (v.expectsReply) {
        buf[w.pos++] = 0x28;
        buf[w.pos++] = 0x01;
      }
      if (v.timeoutMs !== 0) {
        buf[w.pos++] = 0x30;
        w.int32(v.timeoutMs);
      }
      if (v.from !== "") {
        buf[w.pos++] = 0x3a;
        w.string(v.from, utf8Size(v.from));
      }
      const p = u64(v.parentDelivery);
      if (p !== 0) {
        buf[w.pos++] = 0x40;
        w.varint(p);
      }
      return;
    }
    case "result": {
      const v = fr.value as DeliveryResult;
      buf[w.pos++] = 0x1a; // field 3
      w.varint(size);
      const id = u64(v.id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      if (v.data.byteLength > 0) {
        buf[w.pos++] = 0x12;
        w.bytes(v.data);
      }
      if (v.contentType !== "") {
        buf[w.pos++] = 0x1a;
        w.string(v.contentType, utf8Size(v.contentType));
      }
      if (v.error) {
        buf[w.pos++] = 0x22;
        w.varint(errorSize(v.error));
        writeError(w, v.error);
      }
      return;
    }
    case "cancelCall": {
      buf[w.pos++] = 0x32; // field 6
      w.varint(size);
      const id = u64((fr.value as CancelCall).id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      return;
    }
    case "heartbeat": {
      buf[w.pos++] = 0x3a; // field 7
      w.varint(size);
      const t = (fr.value as Heartbeat).sentAtMs;
      if (t !== 0n) {
        buf[w.pos++] = 0x08;
        w.varint(Number(t));
      }
      return;
    }
  }
}

/** Size of a hot ServerFrame's body (the oneof field, tag included), or -1 to fall back. */
function serverFrameSize(f: ServerFrame): number {
  const fr = f.frame;
  if (hasUnknown(f) || (fr.case !== undefined && hasUnknown(fr.value))) return -1;
  switch (fr.case) {
    case "delivery": {
      const v = fr.value as Delivery;
      let n = 0;
      const id = u64(v.id);
      if (id !== 0) n += 1 + varintSize(id);
      if (v.container !== "") {
        const s = utf8Size(v.container);
        n += 1 + varintSize(s) + s;
      }
      if (v.data.byteLength > 0) n += 1 + varintSize(v.data.byteLength) + v.data.byteLength;
      if (v.contentType !== "") {
        const s = utf8Size(v.contentType);
        n += 1 + varintSize(s) + s;
      }
      if (v.expectsReply) n += 2;
      if (v.timeoutMs !== 0) n += 1 + int32Size(v.timeoutMs);
      if (v.sender !== "") {
        const s = utf8Size(v.sender);
        n += 1 + varintSize(s) + s;
      }
      if (v.attempt !== 0) n += 1 + int32Size(v.attempt);
      return n;
    }
    case "callResult": {
      const v = fr.value as CallResult;
      let n = 0;
      const id = u64(v.id);
      if (id !== 0) n += 1 + varintSize(id);
      if (v.data.byteLength > 0) n += 1 + varintSize(v.data.byteLength) + v.data.byteLength;
      if (v.contentType !== "") {
        const s = utf8Size(v.contentType);
        n += 1 + varintSize(s) + s;
      }
      if (v.error) {
        const e = errorSize(v.error);
        n += 1 + varintSize(e) + e;
      }
      if (v.container !== "") {
        const s = utf8Size(v.container);
        n += 1 + varintSize(s) + s;
      }
      return n;
    }
    case "cancelDelivery": {
      const v = fr.value as CancelDelivery;
      let n = 0;
      const id = u64(v.id);
      if (id !== 0) n += 1 + varintSize(id);
      if (v.reason !== "") {
        const s = utf8Size(v.reason);
        n += 1 + varintSize(s) + s;
      }
      return n;
    }
    case "heartbeat": {
      const n = heartbeatSize(fr.value as Heartbeat);
      return n;
    }
    default:
      return -1;
  }
}

function writeServerFrame(w: Writer, f: ServerFrame, size: number): void {
  const fr = f.frame;
  const buf = w.buf;
  switch (fr.case) {
    case "delivery": {
      const v = fr.value as Delivery;
      buf[w.pos++] = 0x22; // field 4
      w.varint(size);
      const id = u64(v.id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      if (v.container !== "") {
        buf[w.pos++] = 0x12;
        w.string(v.container, utf8Size(v.container));
      }
      if (v.data.byteLength > 0) {
        buf[w.pos++] = 0x1a;
        w.bytes(v.data);
      }
      if (v.contentType !== "") {
        buf[w.pos++] = 0x22;
        w.string(v.contentType, utf8Size(v.contentType));
      }
      if (v.expectsReply) {
        buf[w.pos++] = 0x28;
        buf[w.pos++] = 0x01;
      }
      if (v.timeoutMs !== 0) {
        buf[w.pos++] = 0x30;
        w.int32(v.timeoutMs);
      }
      if (v.sender !== "") {
        buf[w.pos++] = 0x3a;
        w.string(v.sender, utf8Size(v.sender));
      }
      if (v.attempt !== 0) {
        buf[w.pos++] = 0x40;
        w.int32(v.attempt);
      }
      return;
    }
    case "callResult": {
      const v = fr.value as CallResult;
      buf[w.pos++] = 0x32; // field 6
      w.varint(size);
      const id = u64(v.id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      if (v.data.byteLength > 0) {
        buf[w.pos++] = 0x12;
        w.bytes(v.data);
      }
      if (v.contentType !== "") {
        buf[w.pos++] = 0x1a;
        w.string(v.contentType, utf8Size(v.contentType));
      }
      if (v.error) {
        buf[w.pos++] = 0x22;
        w.varint(errorSize(v.error));
        writeError(w, v.error);
      }
      if (v.container !== "") {
        buf[w.pos++] = 0x2a;
        w.string(v.container, utf8Size(v.container));
      }
      return;
    }
    case "cancelDelivery": {
      const v = fr.value as CancelDelivery;
      buf[w.pos++] = 0x2a; // field 5
      w.varint(size);
      const id = u64(v.id);
      if (id !== 0) {
        buf[w.pos++] = 0x08;
        w.varint(id);
      }
      if (v.reason !== "") {
        buf[w.pos++] = 0x12;
        w.string(v.reason, utf8Size(v.reason));
      }
      return;
    }
    case "heartbeat": {
      buf[w.pos++] = 0x3a; // field 7
      w.varint(size);
      const t = (fr.value as Heartbeat).sentAtMs;
      if (t !== 0n) {
        buf[w.pos++] = 0x08;
        w.varint(Number(t));
      }
      return;
    }
  }
}

function encodeBatch<F>(
  frames: readonly F[],
  sizeOf: (f: F) => number,
  write: (w: Writer, f: F, size: number) => void,
  slow: (f: F) => Uint8Array,
): Buffer {
  const count = frames.length;
  ensureScratch(count);
  if (fallback.length < count) fallback = new Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const f = frames[i]!;
    let inner: number;
    try {
      inner = sizeOf(f);
    } catch (err) {
      if (err !== SLOW) throw err;
      inner = -1;
    }
    let body: number;
    if (inner < 0) {
      const bytes = slow(f);
      fallback[i] = bytes;
      body = bytes.byteLength;
    } else {
      fallback[i] = undefined;
      scratch[i] = inner;
      // The frame is its one oneof field: tag byte, length, message.
      body = 1 + varintSize(inner) + inner;
    }
    total += 1 + varintSize(body) + body;
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  for (let i = 0; i < count; i++) {
    w.buf[w.pos++] = 0x0a; // repeated frames = 1
    const slowBytes = fallback[i];
    if (slowBytes) {
      w.varint(slowBytes.byteLength);
      w.buf.set(slowBytes, w.pos);
      w.pos += slowBytes.byteLength;
      fallback[i] = undefined;
    } else {
      const inner = scratch[i]!;
      w.varint(1 + varintSize(inner) + inner);
      write(w, frames[i]!, inner);
    }
  }
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

// ---------------------------------------------------------------------------------------------
// Reading

/** Thrown for bytes that are not a valid message; mapped to a decode failure by the caller. */
class DecodeError extends Error {}

/** Signals a frame this codec leaves to protobuf-es (unknown field or wire type). */
const FALLBACK = Symbol("fallback");

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
    if (n < 48) {
      let ascii = true;
      for (let i = start; i < start + n; i++) {
        if (buf[i]! >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) return n === 0 ? "" : buf.latin1Slice(start, start + n);
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
  const e: WireError = { $typeName: "k4s.v1.Error", code: 0, message: "" };
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 0x08) e.code = r.int32();
    else if (tag === 0x12) e.message = r.string();
    else return FALLBACK;
  }
  return e;
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

function readCall(r: Reader): Call | typeof FALLBACK {
  const v: Call = {
    $typeName: "k4s.v1.Call",
    id: 0n,
    target: "",
    data: EMPTY,
    contentType: "",
    expectsReply: false,
    timeoutMs: 0,
    from: "",
    parentDelivery: 0n,
  };
  while (r.pos < r.end) {
    switch (r.varint()) {
      case 0x08:
        v.id = r.u64();
        break;
      case 0x12:
        v.target = r.string();
        break;
      case 0x1a:
        v.data = r.bytes();
        break;
      case 0x22:
        v.contentType = r.string();
        break;
      case 0x28:
        v.expectsReply = r.varint() !== 0;
        break;
      case 0x30:
        v.timeoutMs = r.int32();
        break;
      case 0x3a:
        v.from = r.string();
        break;
      case 0x40:
        v.parentDelivery = r.u64();
        break;
      default:
        return FALLBACK;
    }
  }
  return v;
}

function readDeliveryResult(r: Reader): DeliveryResult | typeof FALLBACK {
  const v: DeliveryResult = { $typeName: "k4s.v1.DeliveryResult", id: 0n, data: EMPTY, contentType: "", error: undefined };
  while (r.pos < r.end) {
    switch (r.varint()) {
      case 0x08:
        v.id = r.u64();
        break;
      case 0x12:
        v.data = r.bytes();
        break;
      case 0x1a:
        v.contentType = r.string();
        break;
      case 0x22: {
        // A repeated sub-message field merges in protobuf; leave that rarity to protobuf-es.
        if (v.error) return FALLBACK;
        const e = sub(r, readError);
        if (e === FALLBACK) return FALLBACK;
        v.error = e;
        break;
      }
      default:
        return FALLBACK;
    }
  }
  return v;
}

function readIdOnly<T extends CancelCall>(r: Reader, typeName: T["$typeName"]): T | typeof FALLBACK {
  const v = { $typeName: typeName, id: 0n } as T;
  while (r.pos < r.end) {
    if (r.varint() !== 0x08) return FALLBACK;
    v.id = r.u64();
  }
  return v;
}

function readHeartbeat(r: Reader): Heartbeat | typeof FALLBACK {
  const v: Heartbeat = { $typeName: "k4s.v1.Heartbeat", sentAtMs: 0n };
  while (r.pos < r.end) {
    if (r.varint() !== 0x08) return FALLBACK;
    const n = r.varint();
    // Negative int64s (ten-byte varints) are left to protobuf-es.
    if (n > Number.MAX_SAFE_INTEGER) return FALLBACK;
    v.sentAtMs = BigInt(n);
  }
  return v;
}

function readDelivery(r: Reader): Delivery | typeof FALLBACK {
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
    switch (r.varint()) {
      case 0x08:
        v.id = r.u64();
        break;
      case 0x12:
        v.container = r.string();
        break;
      case 0x1a:
        v.data = r.bytes();
        break;
      case 0x22:
        v.contentType = r.string();
        break;
      case 0x28:
        v.expectsReply = r.varint() !== 0;
        break;
      case 0x30:
        v.timeoutMs = r.int32();
        break;
      case 0x3a:
        v.sender = r.string();
        break;
      case 0x40:
        v.attempt = r.int32();
        break;
      default:
        return FALLBACK;
    }
  }
  return v;
}

function readCallResult(r: Reader): CallResult | typeof FALLBACK {
  const v: CallResult = {
    $typeName: "k4s.v1.CallResult",
    id: 0n,
    data: EMPTY,
    contentType: "",
    error: undefined,
    container: "",
  };
  while (r.pos < r.end) {
    switch (r.varint()) {
      case 0x08:
        v.id = r.u64();
        break;
      case 0x12:
        v.data = r.bytes();
        break;
      case 0x1a:
        v.contentType = r.string();
        break;
      case 0x22: {
        if (v.error) return FALLBACK;
        const e = sub(r, readError);
        if (e === FALLBACK) return FALLBACK;
        v.error = e;
        break;
      }
      case 0x2a:
        v.container = r.string();
        break;
      default:
        return FALLBACK;
    }
  }
  return v;
}

function readCancelDelivery(r: Reader): CancelDelivery | typeof FALLBACK {
  const v: CancelDelivery = { $typeName: "k4s.v1.CancelDelivery", id: 0n, reason: "" };
  while (r.pos < r.end) {
    switch (r.varint()) {
      case 0x08:
        v.id = r.u64();
        break;
      case 0x12:
        v.reason = r.string();
        break;
      default:
        return FALLBACK;
    }
  }
  return v;
}

/** Decodes one WorkerFrame occupying [r.pos, r.end); undefined: leave it to protobuf-es. */
function readWorkerFrame(r: Reader): WorkerFrame | undefined {
  // A hot frame is exactly one length-delimited oneof field; anything else falls back.
  const tag = r.varint();
  let value: unknown;
  let kind: string;
  switch (tag) {
    case 0x1a:
      kind = "result";
      value = sub(r, readDeliveryResult);
      break;
    case 0x2a:
      kind = "call";
      value = sub(r, readCall);
      break;
    case 0x32:
      kind = "cancelCall";
      value = sub(r, (x) => readIdOnly<CancelCall>(x, "k4s.v1.CancelCall"));
      break;
    case 0x3a:
      kind = "heartbeat";
      value = sub(r, readHeartbeat);
      break;
    default:
      return undefined;
  }
  if (value === FALLBACK || r.pos !== r.end) return undefined;
  return { $typeName: "k4s.v1.WorkerFrame", frame: { case: kind, value } } as WorkerFrame;
}

/** Decodes one ServerFrame occupying [r.pos, r.end); undefined: leave it to protobuf-es. */
function readServerFrame(r: Reader): ServerFrame | undefined {
  const tag = r.varint();
  let value: unknown;
  let kind: string;
  switch (tag) {
    case 0x22:
      kind = "delivery";
      value = sub(r, readDelivery);
      break;
    case 0x2a:
      kind = "cancelDelivery";
      value = sub(r, readCancelDelivery);
      break;
    case 0x32:
      kind = "callResult";
      value = sub(r, readCallResult);
      break;
    case 0x3a:
      kind = "heartbeat";
      value = sub(r, readHeartbeat);
      break;
    default:
      return undefined;
  }
  if (value === FALLBACK || r.pos !== r.end) return undefined;
  return { $typeName: "k4s.v1.ServerFrame", frame: { case: kind, value } } as ServerFrame;
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
      n = tag === 0x0a ? r.length() : -1;
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      n = -1;
    }
    // Anything but a well-formed frames field (unknown fields, bad bytes): protobuf-es decides.
    if (n < 0) return slowAll(buf);
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
    frames.push(f ?? slow(buf.subarray(start, end)));
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
    readWorkerFrame,
    (b) => fromBinary(WorkerFrameSchema, b),
    (b) => fromBinary(ConnectRequestSchema, b),
  );
}

/** Decodes a ConnectResponse as protobuf-es's fromBinary would; payloads are subarrays of `buf`. */
export function decodeConnectResponse(buf: Buffer): ConnectResponse {
  return decodeBatch(
    buf,
    "k4s.v1.ConnectResponse",
    readServerFrame,
    (b) => fromBinary(ServerFrameSchema, b),
    (b) => fromBinary(ConnectResponseSchema, b),
  );
}
