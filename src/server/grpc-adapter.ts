/**
 * A generic bridge from protobuf-es service descriptors to @grpc/grpc-js: handlers are written
 * against generated message types, and grpc-js does the HTTP/2 work.
 */
import { constants as http2Constants } from "node:http2";
import type { Readable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import {
  decodeConnectRequest,
  decodeConnectResponse,
  encodeConnectRequest,
  encodeConnectResponse,
  encodeFramedConnectResponse,
} from "../transport/frame-codec.js";
import { ConnectRequestSchema, ConnectResponseSchema, type ConnectResponse } from "../gen/k4s/v1/worker_service_pb.js";
import { stoppingRefusal } from "../api/retry-info.js";
import { decodePaced, encodePaced, PACE_BYTES } from "./paced-codec.js";
import { frameBytes, type BatchedFrame } from "../transport/frame-batch.js";

/** CallContext is what a handler knows about the call it serves. */
export interface CallContext {
  /** Aborted when the client cancels, the deadline passes, or the server stops. */
  readonly signal: AbortSignal;
  readonly metadata: grpc.Metadata;
  /** The client's address. */
  readonly peer: string;
  /** Absolute deadline in ms since the epoch, when the client set one. */
  readonly deadline: number | undefined;
  /**
   * Ends a streaming call with `error` now, without waiting for the handler's next response:
   * what was already handed to the transport still goes first, then the status. A peer that
   * does not take them within END_GRACE_MS (it does not read its stream) gets the stream reset
   * instead, so the server holds nothing for it. Not available on every transport.
   */
  end?(error: ConnectError): void;
}

type Method = Pick<DescMethod, "input" | "output" | "methodKind">;

type MethodImpl<M extends Method> = M["methodKind"] extends "unary"
  ? (req: MessageShape<M["input"]>, ctx: CallContext) => Promise<MessageInitShape<M["output"]>>
  : M["methodKind"] extends "server_streaming"
    ? (req: MessageShape<M["input"]>, ctx: CallContext) => AsyncIterable<MessageInitShape<M["output"]>>
    : M["methodKind"] extends "client_streaming"
      ? (reqs: AsyncIterable<MessageShape<M["input"]>>, ctx: CallContext) => Promise<MessageInitShape<M["output"]>>
      : (reqs: AsyncIterable<MessageShape<M["input"]>>, ctx: CallContext) => AsyncIterable<MessageInitShape<M["output"]>>;

/**
 * ServiceHandlers maps each method of a generated service to its handler (the counterpart of
 * connect-es's ServiceHandlers, with this adapter's CallContext).
 */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S["method"]]: MethodImpl<S["method"][K]>;
};

/** AdapterOptions are shared by every service added through the adapter. */
export interface AdapterOptions {
  /** Called with every error a handler throws that is not a ConnectError (a bug). */
  onInternalError?: (method: DescMethod, err: unknown) => void;
  /** Called once per call when it ends, with its gRPC status code (0: OK). */
  onCallEnd?: (method: DescMethod, code: number) => void;
  /**
   * Aborted when the server begins to stop. Calls that arrive after it are refused UNAVAILABLE
   * with a google.rpc.RetryInfo (they did not run, so any client may retry them); server
   * streams in progress (watches, log follows) end UNAVAILABLE, for their clients to resume.
   * Unary calls in progress run to their end.
   */
  shutdown?: AbortSignal;
}

/**
 * Hand-written codecs for the messages of the message path, by type name: the same bytes as
 * protobuf-es at a fraction of its (reflection-based) cost; see src/transport/frame-codec.ts.
 */
const fastCodecs = new Map<string, { serialize: (value: never) => Buffer; deserialize: (buf: Buffer) => unknown }>([
  [ConnectRequestSchema.typeName, { serialize: encodeConnectRequest, deserialize: decodeConnectRequest }],
  [ConnectResponseSchema.typeName, { serialize: encodeConnectResponse, deserialize: decodeConnectResponse }],
]);

/** A response the adapter encoded already (a slice at a time, see encodeResponse). */
class Encoded {
  constructor(readonly bytes: Uint8Array) {}
}

function serializer(schema: DescMessage) {
  const fast = fastCodecs.get(schema.typeName);
  if (fast) return fast.serialize as (value: unknown) => Buffer;
  return (value: unknown): Buffer => {
    if (value instanceof Encoded) return Buffer.from(value.bytes.buffer, value.bytes.byteOffset, value.bytes.byteLength);
    const msg = isMessage(value, schema) ? value : create(schema, value as MessageInitShape<DescMessage>);
    const bytes = toBinary(schema, msg);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

/**
 * A request message that did not decode. grpc-js answers INTERNAL when a deserializer throws;
 * handing this marker to the handler lets the adapter answer INVALID_ARGUMENT instead.
 */
class Undecodable {
  constructor(readonly error: ConnectError) {}
}

function undecodable(schema: DescMessage, err: unknown): Undecodable {
  return new Undecodable(new ConnectError(`request is not a valid ${schema.typeName}: ${(err as Error).message}`, Code.InvalidArgument));
}

/** A big request left as bytes by the deserializer, to be decoded a slice at a time by the handler's turn. */
class Undecoded {
  constructor(
    readonly schema: DescMessage,
    readonly bytes: Buffer,
  ) {}
}

function deserializer(schema: DescMessage) {
  const fast = fastCodecs.get(schema.typeName)?.deserialize as ((buf: Buffer) => unknown) | undefined;
  const decode = fast ?? ((buf: Buffer) => fromBinary(schema, buf));
  return (buf: Buffer): unknown => {
    if (!fast && buf.byteLength >= PACE_BYTES) return new Undecoded(schema, buf);
    try {
      return decode(buf);
    } catch (err) {
      return undecodable(schema, err);
    }
  };
}

/** The decoded request of a unary or server-streaming call; throws INVALID_ARGUMENT when it does not decode. */
async function requestOf(call: { request: unknown }): Promise<unknown> {
  const req = call.request;
  if (req instanceof Undecodable) throw req.error;
  if (!(req instanceof Undecoded)) return req;
  try {
    return await decodePaced(req.schema, req.bytes);
  } catch (err) {
    throw undecodable(req.schema, err).error;
  }
}

const EITHER_FORM = Symbol("k4s.eitherForm");

interface Forms {
  message(): object;
  bytes(): Uint8Array | undefined;
}

/**
 * A response whose two forms are made only when a port asks for one: the gRPC port sends
 * `bytes()`, a binary form its handler made itself (from bytes it had already, say), or encodes
 * `message()` when that gives undefined; the Connect port, which may answer in JSON, takes
 * `message()`. Each is called at most once, and only the form the port sends is made.
 */
export function eitherForm<T extends object>(message: () => T, bytes: () => Uint8Array | undefined): T {
  const forms: Forms = { message, bytes };
  return { [EITHER_FORM]: forms } as unknown as T;
}

/** The message of a handler's response, made now when the handler gave it as eitherForm. */
export function responseMessage(value: unknown): unknown {
  const forms = (value as Record<symbol, Forms | undefined> | undefined)?.[EITHER_FORM];
  return forms ? forms.message() : value;
}

/** Encodes a (possibly big) response a slice at a time; the path's own fast codecs stay as they are. */
async function encodeResponse(schema: DescMessage, value: unknown): Promise<unknown> {
  if (fastCodecs.has(schema.typeName)) return value;
  const forms = (value as Record<symbol, Forms | undefined>)[EITHER_FORM];
  if (forms) {
    const bytes = forms.bytes();
    if (bytes) return new Encoded(bytes);
    value = forms.message();
  }
  const msg = isMessage(value, schema) ? value : create(schema, value as MessageInitShape<DescMessage>);
  return new Encoded(await encodePaced(schema, msg));
}

/**
 * The requests of a streaming call as an iterable that throws INVALID_ARGUMENT at one that did
 * not decode, and CANCELED when the call ends before the client half-closed it. It never
 * destroys the grpc-js call, as Node's own stream iterator does when it ends or sees an
 * 'error': the adapter sends a handler's error status by emitting 'error' on the call, and a
 * destroyed call can no longer send that status (nor the OK status after the client
 * half-closed), so the client would wait for it forever.
 */
async function* requestsOf(call: Readable): AsyncGenerator<unknown> {
  let wake: (() => void) | undefined;
  let ended = false;
  let failure: unknown;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (err: unknown) => {
    failure ??= err;
    notify();
  };
  const onClose = () => {
    if (!ended) failure ??= new ConnectError("call cancelled", Code.Canceled);
    notify();
  };
  call.on("readable", notify);
  call.on("end", onEnd);
  call.on("error", onError);
  call.on("close", onClose);
  try {
    for (;;) {
      const msg: unknown = call.destroyed ? null : call.read();
      if (msg !== null) {
        if (msg instanceof Undecodable) throw msg.error;
        yield msg;
      } else if (failure !== undefined) {
        throw failure;
      } else if (ended) {
        return;
      } else {
        await new Promise<void>((resolve) => (wake = resolve));
      }
    }
  } finally {
    call.off("readable", notify);
    call.off("end", onEnd);
    call.off("error", onError);
    call.off("close", onClose);
  }
}

function isMessage(value: unknown, schema: DescMessage): value is MessageShape<DescMessage> {
  return typeof value === "object" && value !== null && (value as { $typeName?: string }).$typeName === schema.typeName;
}

/** The trailer that carries a status's details (a serialized `google.rpc.Status`). */
const STATUS_DETAILS = "grpc-status-details-bin";

/**
 * Converts any thrown value into a grpc-js status object; an error's details (such as a
 * `google.rpc.BadRequest`) travel in the `grpc-status-details-bin` trailer, encoded by
 * connect-es as its own gRPC servers do.
 */
export function toGrpcStatus(err: unknown): grpc.StatusObject {
  const e = ConnectError.from(err);
  const metadata = new grpc.Metadata();
  if (e.details.length > 0) {
    const details = setTrailerStatus(new Headers(), e).get(STATUS_DETAILS);
    if (details) metadata.set(STATUS_DETAILS, Buffer.from(details, "base64"));
  }
  return { code: e.code as number as grpc.status, details: e.rawMessage, metadata };
}

/** Creates the grpc-js service definition (paths, codecs, streaming flags) of a service. */
export function createServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.name] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: serializer(m.input),
      requestDeserialize: deserializer(m.input),
      responseSerialize: serializer(m.output),
      responseDeserialize: deserializer(m.output),
      originalName: m.localName,
    };
  }
  return def as grpc.ServiceDefinition;
}

type SurfaceCall =
  | grpc.ServerUnaryCall<unknown, unknown>
  | grpc.ServerReadableStream<unknown, unknown>
  | grpc.ServerWritableStream<unknown, unknown>
  | grpc.ServerDuplexStream<unknown, unknown>;

/** HTTP/2 flow-control windows the server grants its peers: per stream, and per connection. */
const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;

/** HTTP/2 sessions whose flow-control windows were already widened. */
const widened = new WeakSet<object>();

/**
 * Widens the HTTP/2 flow-control windows of the connection a call came on. Node's defaults
 * (64 KiB per stream and per connection) let a peer have only 64 KiB in flight to the server,
 * so one WorkerService stream carrying large payloads moved one window per round trip of a
 * WINDOW_UPDATE (~30 MB/s on a loaded machine). grpc-js has no server option for it, so the
 * session is reached through grpc-js internals; every step is optional, and if they change
 * the connection just keeps Node's defaults.
 */
function widenWindows(call: SurfaceCall): void {
  try {
    const session = http2StreamOf(call)?.session;
    if (!session || widened.has(session) || session.destroyed) return;
    widened.add(session);
    session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
    session.settings({ initialWindowSize: STREAM_WINDOW_BYTES });
  } catch {
    // Internals moved or the session is closing: keep the defaults.
  }
}

/** The grpc-js call object that writes to the HTTP/2 stream (internal). */
interface StreamCallLike {
  stream?: unknown;
  nextCall?: unknown;
}

/** The innermost grpc-js call (the one holding the HTTP/2 stream), or undefined if internals moved. */
function streamCallOf(call: SurfaceCall): StreamCallLike | undefined {
  let c = (call as unknown as { call?: StreamCallLike }).call;
  for (let i = 0; i < 8 && c && !c.stream; i++) c = c.nextCall as StreamCallLike | undefined;
  return c?.stream ? c : undefined;
}

/** The grpc-js call that writes to the HTTP/2 stream, as far as writePayloadsUncopied uses it (internal). */
interface WritingCallLike {
  stream: { cork(): void; uncork(): void; write(chunk: Buffer, cb?: (err?: Error | null) => void): boolean };
  maxSendMessageSize: number;
  callEventTracker?: { addMessageSent(): void };
  checkCancelled(): boolean;
  maybeSendMetadata(): void;
  sendStatus(status: { code: grpc.status; details: string; metadata: grpc.Metadata | null }): void;
  sendMessage(message: unknown, callback: () => void): void;
}

/**
 * Makes grpc-js write each ConnectResponse of a worker stream without copying its payloads:
 * grpc-js serializes a response into one buffer and then copies that into a second one behind
 * its 5-byte length prefix, so every payload leaving the server was copied twice. Instead the
 * codec writes the prefix and the frames around each large payload, and the payloads go to the
 * HTTP/2 stream as chunks of their own in one corked write (one writev, as before). This is
 * grpc-js's own sendMessage with that one change, reached through its internals and guarded:
 * if they change, grpc-js writes the messages itself, copies and all.
 */
function writePayloadsUncopied(call: SurfaceCall): void {
  try {
    const c = streamCallOf(call) as Partial<WritingCallLike> | undefined;
    const stream = c?.stream;
    if (
      !c ||
      !stream ||
      typeof stream.cork !== "function" ||
      typeof stream.uncork !== "function" ||
      typeof c.sendMessage !== "function" ||
      typeof c.checkCancelled !== "function" ||
      typeof c.maybeSendMetadata !== "function" ||
      typeof c.sendStatus !== "function" ||
      typeof c.maxSendMessageSize !== "number"
    )
      return;
    const self = c as WritingCallLike;
    self.sendMessage = (message, callback) => {
      if (self.checkCancelled()) return;
      let parts: Buffer[];
      try {
        parts = encodeFramedConnectResponse(message as ConnectResponse);
      } catch {
        self.sendStatus({ code: grpc.status.INTERNAL, details: "Error serializing response", metadata: null });
        return;
      }
      const size = parts[0]!.readUInt32BE(1);
      if (self.maxSendMessageSize !== -1 && size > self.maxSendMessageSize) {
        self.sendStatus({ code: grpc.status.RESOURCE_EXHAUSTED, details: `Sent message larger than max (${size} vs. ${self.maxSendMessageSize})`, metadata: null });
        return;
      }
      self.maybeSendMetadata();
      const last = parts.length - 1;
      stream.cork();
      for (let i = 0; i < last; i++) stream.write(parts[i]!);
      stream.write(parts[last]!, (err) => {
        if (err) {
          self.sendStatus({ code: grpc.status.INTERNAL, details: "Internal server error", metadata: null });
          return;
        }
        self.callEventTracker?.addMessageSent();
        callback();
      });
      stream.uncork();
    };
  } catch {
    // Internals moved: grpc-js writes the messages itself.
  }
}

interface Http2SessionLike {
  readonly destroyed: boolean;
  setLocalWindowSize(size: number): void;
  settings(settings: { initialWindowSize: number }): void;
}

interface Http2StreamLike extends NodeJS.EventEmitter {
  readonly closed: boolean;
  readonly destroyed: boolean;
  readonly session?: Http2SessionLike;
  close(code: number): void;
}

/** The HTTP/2 stream under a grpc-js call, reached through grpc-js internals (undefined if they moved). */
function http2StreamOf(call: SurfaceCall): Http2StreamLike | undefined {
  return streamCallOf(call)?.stream as Http2StreamLike | undefined;
}

/**
 * How long a stream its handler ended (CallContext.end) may take to deliver what it holds and
 * its status. HTTP/2 sends the status (trailers) only after the data before it, so a peer that
 * does not read would hold the stream, and the server's buffers for it, for good.
 */
const END_GRACE_MS = 10_000;

/**
 * Resets the stream of `call` if it has not closed END_GRACE_MS from now. A reset needs no
 * flow-control window, so it reaches a peer that reads nothing; gRPC clients report
 * ENHANCE_YOUR_CALM as RESOURCE_EXHAUSTED and CANCEL as CANCELLED.
 */
function resetUnlessClosed(call: SurfaceCall, error: ConnectError): void {
  const stream = http2StreamOf(call);
  if (!stream || typeof stream.close !== "function") return;
  const code = error.code === Code.ResourceExhausted ? http2Constants.NGHTTP2_ENHANCE_YOUR_CALM : http2Constants.NGHTTP2_CANCEL;
  const timer = setTimeout(() => {
    if (!stream.closed && !stream.destroyed) stream.close(code);
  }, END_GRACE_MS);
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}

/** Why a stream ended when the server stopped under it. */
const STREAM_SHUTDOWN = new ConnectError("the k4s server is stopping: reconnect and resume (here once it is back, or at another server)", Code.Unavailable);

function contextOf(call: SurfaceCall, shutdown?: AbortSignal, ending?: AbortController): CallContext {
  widenWindows(call);
  const controller = new AbortController();
  if (shutdown) {
    const onShutdown = () => controller.abort(STREAM_SHUTDOWN);
    shutdown.addEventListener("abort", onShutdown, { once: true });
    // Every stream ends with "close" (finished, failed or cancelled): no listener outlives it.
    (call as unknown as NodeJS.EventEmitter).once("close", () => shutdown.removeEventListener("abort", onShutdown));
  }
  const abort = () => controller.abort(new ConnectError("call cancelled", Code.Canceled));
  if (call.cancelled) abort();
  else (call as grpc.ServerUnaryCall<unknown, unknown>).once("cancelled", abort);
  const d = call.getDeadline();
  const deadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? Number(d) : undefined;
  const end = ending
    ? (error: ConnectError) => {
        if (ending.signal.aborted) return;
        ending.abort(error);
        resetUnlessClosed(call, error);
      }
    : undefined;
  return { signal: controller.signal, metadata: call.metadata, peer: call.getPeer(), deadline, end };
}

/**
 * Bytes of responses a stream may have handed to grpc-js that the peer has not taken yet. grpc-js
 * buffers 16 messages whatever their size before write() says to wait, which would let a peer
 * that does not read pin 16 of the largest messages; this bounds it in bytes instead.
 */
const WRITE_AHEAD_BYTES = 2 * 1024 * 1024;

const WRITTEN = Symbol("k4s.written");
const BYTES = Symbol("k4s.bytes");

/** Bytes a response handed to grpc-js takes: encoded ones exactly, worker-stream batches as onWritten() counted them. */
function responseBytes(value: unknown, counted: number | undefined): number {
  if (value instanceof Encoded) return value.bytes.byteLength;
  if (counted !== undefined) return counted;
  const frames = (value as { frames?: readonly BatchedFrame[] }).frames;
  return Array.isArray(frames) ? frames.reduce((n, f: BatchedFrame) => n + frameBytes(f), 0) : 0;
}

/**
 * Marks a streamed response so that `callback` runs once grpc-js wrote it to the peer (into its
 * HTTP/2 flow-control window), not when the adapter handed it over: a handler can so count what
 * its peer has not read yet, wherever it is buffered. A response whose stream dies first never
 * calls back. `bytes`: what the handler counts the response as (its frames' bytes), so the
 * adapter's own write-ahead bound need not size it again.
 */
export function onWritten<T extends object>(response: T, callback: () => void, bytes?: number): T {
  (response as Record<symbol, unknown>)[WRITTEN] = callback;
  if (bytes !== undefined) (response as Record<symbol, unknown>)[BYTES] = bytes;
  return response;
}

async function writeAll(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  schema: DescMessage,
  source: AsyncIterable<unknown>,
  signal: AbortSignal,
  ending: AbortSignal,
): Promise<void> {
  // The worker stream's codec encodes inside grpc-js's write: its responses go as they are,
  // without the await (a microtask) encodeResponse would cost each.
  const fast = fastCodecs.has(schema.typeName);
  let pending = 0;
  let wake: (() => void) | undefined;
  const done = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  call.on("drain", done);
  signal.addEventListener("abort", done);
  ending.addEventListener("abort", done);
  try {
    for await (const msg of source) {
      if (signal.aborted || ending.aborted) return;
      const written = (msg as Record<symbol, (() => void) | undefined>)[WRITTEN];
      const counted = (msg as Record<symbol, number | undefined>)[BYTES];
      const bytes = fast ? msg : await encodeResponse(schema, msg);
      const size = responseBytes(bytes, counted);
      pending += size;
      const flowing = call.write(bytes, () => {
        written?.();
        pending -= size;
        if (pending <= WRITE_AHEAD_BYTES) done();
      });
      if ((!flowing || pending > WRITE_AHEAD_BYTES) && !signal.aborted && !ending.aborted) await new Promise<void>((resolve) => (wake = resolve));
      // Ended by its handler: stop pulling (returning ends the source) and let the status follow.
      if (ending.aborted) return;
    }
  } finally {
    call.off("drain", done);
    signal.removeEventListener("abort", done);
    ending.removeEventListener("abort", done);
  }
}

/**
 * Adds a protobuf-es service with its implementation to a grpc-js server. Handlers receive
 * decoded messages and return message init shapes; thrown ConnectErrors become gRPC statuses.
 */
export function addService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceHandlers<S>,
  options: AdapterOptions = {},
): void {
  const handlers: grpc.UntypedServiceImplementation = {};
  const ended = options.onCallEnd ?? (() => {});
  const fail = (m: DescMethod, err: unknown) => {
    if (!(err instanceof ConnectError)) options.onInternalError?.(m, err);
    const status = toGrpcStatus(err);
    ended(m, status.code);
    return status;
  };
  const ok = (m: DescMethod) => ended(m, 0);
  for (const m of service.methods) {
    const fn = (impl as Record<string, (...a: unknown[]) => unknown>)[m.localName];
    if (!fn) throw new Error(`no handler for ${service.typeName}.${m.name}`);
    // A request that does not decode, or a handler that throws before its first await, still
    // answers with a status.
    // A request is decoded (a big one a slice at a time) before the handler runs.
    const run = async (requests: () => unknown, ctx: CallContext) => fn.call(impl, await requests(), ctx);
    // Unary and client-streaming calls answer once through a callback; server-streaming and
    // bidi calls write a stream. What differs within each pair is only how requests are read.
    const answerOnce =
      (requests: (call: never) => unknown) => (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        if (options.shutdown?.aborted) {
          cb(fail(m, stoppingRefusal()));
          return;
        }
        const ctx = contextOf(call);
        run(() => requests(call as never), ctx)
          .then((res) => encodeResponse(m.output, res))
          .then(
            (res) => {
              ok(m);
              cb(null, res);
            },
            (err) => cb(fail(m, err)),
          );
      };
    const answerStream =
      (requests: (call: never) => unknown) => (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        if (options.shutdown?.aborted) {
          call.emit("error", fail(m, stoppingRefusal()));
          return;
        }
        // The worker stream (bidi) has a shutdown of its own that says goodbye to each link.
        const ending = new AbortController();
        const ctx = contextOf(call, m.methodKind === "server_streaming" ? options.shutdown : undefined, ending);
        if (m.output.typeName === ConnectResponseSchema.typeName) writePayloadsUncopied(call);
        // Headers at once: a client learns its follow (a watch of a quiet kind, say) reached the
        // server before anything changes, so it knows to resume it, not fail, if the server goes.
        if (m.methodKind === "server_streaming") call.sendMetadata(new grpc.Metadata());
        run(() => requests(call as never), ctx)
          .then((answers) => writeAll(call, m.output, answers as AsyncIterable<unknown>, ctx.signal, ending.signal))
          .then(
            () => {
              if (ctx.signal.reason === STREAM_SHUTDOWN || ending.signal.aborted) {
                call.emit("error", fail(m, ctx.signal.reason === STREAM_SHUTDOWN ? STREAM_SHUTDOWN : ending.signal.reason));
                return;
              }
              ok(m);
              call.end();
            },
            (err) => call.emit("error", fail(m, ctx.signal.reason === STREAM_SHUTDOWN ? STREAM_SHUTDOWN : err)),
          );
      };
    handlers[m.name] = {
      unary: answerOnce(requestOf),
      client_streaming: answerOnce(requestsOf),
      server_streaming: answerStream(requestOf),
      bidi_streaming: answerStream(requestsOf),
    }[m.methodKind] as grpc.UntypedHandleCall;
  }
  server.addService(createServiceDefinition(service), handlers);
}
