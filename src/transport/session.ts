/**
 * A session on WorkerService.Connect: the one bidi stream a process (worker host, attached
 * container or calling client) keeps with the server. Frames are queued and flushed as one
 * ConnectRequest per event-loop tick; calls are multiplexed by numeric id; heartbeats keep a
 * quiet stream alive; a broken stream is re-opened with capped exponential back-off.
 *
 * Ids are plain numbers inside the session (Map keys); the generated types carry 64-bit
 * integers as bigint, so they are converted at the frame boundary.
 *
 * The frames use the hand-written codec of frame-codec.ts, which costs a fraction of
 * protobuf-es's reflection on every message. The stream runs on a lean gRPC client over
 * node:http2 (lean-channel.ts), or on @grpc/grpc-js's client when K4S_WORKER_TRANSPORT=grpc-js
 * or SessionOptions.transport asks for it (stream-channel.ts): the same protocol either way.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { normalizeAddresses } from "../api/address.js";
import { createBackoff } from "../api/backoff.js";
import type { TlsOptions } from "./channel.js";
import { grpcJsStreamChannel } from "./grpc-channel.js";
import { leanChannel } from "./lean-channel.js";
import { workerTransport, type FrameStream, type StreamChannel, type WorkerTransport } from "./stream-channel.js";
import { batchEnd } from "./frame-batch.js";
import { DEFAULT_REQUEST_TIMEOUT_MS, MAX_CALL_PAYLOAD_BYTES } from "./limits.js";
import { ATTACH_TOKEN_HEADER } from "./environment.js";
import { createStallWatch, type StallWatch } from "./stall-watch.js";
import {
  CallSchema,
  ConnectRequestSchema,
  DeliveryResultSchema,
  ErrorSchema,
  WorkerFrameSchema,
  WorkerService,
  type ConnectResponse,
  type HelloSchema,
  type ServerFrame,
  type WorkerFrame,
} from "../gen/k4s/v1/worker_service_pb.js";

/** HelloOptions describe a host or client session. */
export interface HelloOptions {
  name?: string;
  role: "host" | "client";
  labels?: Record<string, string>;
  modules?: string[];
  capacity?: number;
  canSpawn?: boolean;
  /** Containers a reconnecting host still runs. */
  running?: { name: string; uid: string }[];
}

/** AttachOptions describe a session serving one named container. */
export interface AttachOptions {
  container: string;
  token?: string;
  host?: string;
}

/** SessionOptions configure openSession. */
export interface SessionOptions {
  /**
   * Server host:port, or the servers of one cluster (an array, or comma-separated): a stream
   * that breaks or is refused is re-opened on the next one.
   */
  address: string | readonly string[];
  /** Bearer token of the server, when it runs with one. */
  token?: string;
  /** Connect over TLS (true: trust the system's CAs). */
  tls?: boolean | TlsOptions;
  /** The Hello to open with; a function is asked again on every (re)connect. */
  hello?: HelloOptions | (() => HelloOptions);
  /** Attach instead of Hello. */
  attach?: AttachOptions;
  /** Receives every server frame except CallResult (handled by the session). */
  onFrame?: (frame: ServerFrame) => void;
  /** Called after every Welcome (first connect and reconnects). */
  onWelcome?: (welcome: { sessionId: string; name: string; reconnect: boolean }) => void;
  /**
   * Called once when a welcomed stream broke and the session will reconnect (not again for each
   * failed attempt that follows).
   */
  onDisconnect?: (err: ConnectError) => void;
  /**
   * Called when an attempt to (re)connect failed for another reason than the attempt before it
   * (the first failure included), so a caller can report each change once, not every attempt.
   */
  onConnectFailed?: (err: ConnectError) => void;
  /** Re-open the stream when it breaks (default false). */
  reconnect?: boolean;
  /** Headers to send on every stream besides the token (a server's peer link proves itself with them). */
  headers?: () => Record<string, string>;
  /** Longest back-off between reconnect attempts (default 1000 ms). */
  maxBackoffMs?: number;
  /**
   * What the stream runs on: "lean" (node:http2 directly) or "grpc-js"; the same gRPC protocol
   * either way. Default: the K4S_WORKER_TRANSPORT environment variable, else "lean".
   */
  transport?: WorkerTransport;
}

/**
 * What tells a call it was given up on: an AbortSignal, or anything that keeps its `aborted` and
 * its "abort" listeners the same way (a server forwarding calls uses a lighter one of its own).
 */
export interface CallSignal {
  readonly aborted: boolean;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** CallOptions describe one send or request made through a session. */
export interface CallOptions {
  target: string;
  data: Uint8Array;
  contentType: string;
  expectsReply: boolean;
  /** Milliseconds to wait for the reply (0 or undefined: the server default, 30000). */
  timeoutMs?: number;
  /** Sending container, for host sessions that run many. */
  sender?: string;
  /** The delivery being handled, whose deadline a request inherits. */
  parentDelivery?: number;
  signal?: CallSignal;
}

/** CallReply is the answer to a call: the reply of a request, or the acceptance of a send. */
export interface CallReply {
  data: Uint8Array;
  contentType: string;
  /** The container that took the message or answered. */
  container: string;
}

/** Session is an open (or reconnecting) WorkerService.Connect stream. */
export interface Session {
  /** Resolves once the first Welcome arrived; rejects when the first connect fails for good. */
  readonly ready: Promise<void>;
  /** Resolves on close(); rejects when the stream ended for good with an error. */
  readonly done: Promise<void>;
  /** The session's name as the server registered it (after ready). */
  readonly name: string;
  readonly sessionId: string;
  /** Whether a Welcome was received on the current stream. */
  readonly connected: boolean;
  /** Sends a message or a request and resolves with the CallResult. */
  call(options: CallOptions): Promise<CallReply>;
  /** Queues a raw frame (results, states, logs); sent on the next flush. */
  send(frame: MessageInitShape<typeof WorkerFrameSchema>["frame"]): void;
  /**
   * Queues the DeliveryResult of a delivery (send() of a "result" frame, without the init shape
   * in between: one is sent per message handled). `error` undefined: settled without error.
   */
  result(id: number, data: Uint8Array, contentType: string, error: { code: number; message: string } | undefined): void;
  /** Ends the stream; calls in flight fail with UNAVAILABLE. */
  close(): Promise<void>;
}

interface PendingCall {
  id: number;
  resolve: (reply: CallReply) => void;
  reject: (err: ConnectError) => void;
  /** Set once its Call frame went out on the current stream. */
  sent: boolean;
  /** When the call's timeout passes (ms epoch); the server enforces it, the client only backs it up. */
  expiresAt: number;
  signal: CallSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** First delay before re-opening a broken stream (ms). */
const RECONNECT_INITIAL_MS = 100;
/**
 * Longest delay between reconnect attempts unless SessionOptions.maxBackoffMs says otherwise
 * (ms): a host must be back within the server's resume grace after a restart, and one attempt a
 * second costs a server that is down nothing.
 */
const RECONNECT_MAX_MS = 1000;
/** A stream that stayed up this long (ms) was a working connection: the back-off starts over. */
const STABLE_CONNECTION_MS = 10_000;
/** Margin on top of a call's timeout before the client gives up on the server's answer. */
const SAFETY_MARGIN_MS = 2000;
/** Calls that may wait for a (re)connect; more fail at once with UNAVAILABLE. */
const MAX_WAITING_CALLS = 10_000;
/** Output frames kept while disconnected; older ones are dropped. */
const MAX_KEPT_LOG_FRAMES = 1000;
/**
 * Codes that make retrying pointless: the server refused who we are or what we asked, or a
 * newer session of this host took over its name (ALREADY_EXISTS: reconnecting would take it
 * back, and the two would take turns forever).
 */
const FATAL_CODES = new Set([Code.InvalidArgument, Code.NotFound, Code.PermissionDenied, Code.Unauthenticated, Code.Unimplemented, Code.AlreadyExists]);

const CONNECT_PATH = `/${WorkerService.typeName}/${WorkerService.method.connect.name}`;

const EMPTY = new Uint8Array(0);

/**
 * A complete DeliveryResult frame, built as a literal: one is sent per message handled, and
 * protobuf-es's create() fills messages by reflection.
 */
function resultFrame(id: bigint, data: Uint8Array, contentType: string, e: { code?: number; message?: string } | undefined): WorkerFrame {
  return {
    $typeName: WorkerFrameSchema.typeName,
    frame: {
      case: "result",
      value: {
        $typeName: DeliveryResultSchema.typeName,
        id,
        data,
        contentType,
        error: e ? { $typeName: ErrorSchema.typeName, code: e.code ?? 0, message: e.message ?? "" } : undefined,
      },
    },
  };
}

class SessionImpl implements Session {
  readonly ready: Promise<void>;
  readonly done: Promise<void>;
  name = "";
  sessionId = "";
  connected = false;

  private readonly transport: WorkerTransport;
  private channel: StreamChannel;
  private readonly calls = new Map<number, PendingCall>();
  private pending: WorkerFrame[] = [];
  private flushScheduled = false;
  private nextId = 1;
  private stream: FrameStream | undefined;
  private closed = false;
  private everWelcomed = false;
  /** The host credential of the last Welcome, shown again on every reconnect. */
  private credential = "";
  private heartbeatMs = 5000;
  private lastSent = Date.now();
  private lastReceived = Date.now();
  private stalls: StallWatch = createStallWatch(1000);
  private timer: NodeJS.Timeout | undefined;
  private resolveReady!: () => void;
  private rejectReady!: (err: unknown) => void;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;
  private backoffWake: (() => void) | undefined;
  /** The credential's header, sent on every stream. */
  private readonly headers: Record<string, string> = {};
  private running: Promise<void> = Promise.resolve();
  private keptLogFrames = 0;
  private lastError: ConnectError | undefined;
  /** Why the session ended for good, when the server refused it. */
  private fatal: ConnectError | undefined;
  /** The servers to try, in turn, and the one tried now. */
  private readonly addresses: string[];
  private at = 0;
  private get address(): string {
    return this.addresses[this.at]!;
  }

  constructor(private readonly options: SessionOptions) {
    if (!options.hello === !options.attach) throw new ConnectError("openSession: give exactly one of hello or attach", Code.InvalidArgument);
    this.addresses = normalizeAddresses(options.address);
    this.transport = workerTransport(options.transport);
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.done = new Promise((res, rej) => {
      this.resolveDone = res;
      this.rejectDone = rej;
    });
    // Callers that only await one of them must not see an unhandled rejection from the other.
    this.ready.catch(() => {});
    this.done.catch(() => {});
    this.channel = this.newChannel();
    if (options.token) this.headers.authorization = `Bearer ${options.token}`;
    // A spawned process holds no bearer token: its attach credential admits it for its Attach.
    else if (options.attach?.token) this.headers[ATTACH_TOKEN_HEADER] = options.attach.token;
    this.startTimer();
    this.running = this.run();
  }

  call(options: CallOptions): Promise<CallReply> {
    if (this.closed) return Promise.reject(this.fatal ?? new ConnectError("session is closed", Code.Unavailable));
    if (options.signal?.aborted) return Promise.reject(new ConnectError("call cancelled", Code.Canceled));
    if (options.data.byteLength > MAX_CALL_PAYLOAD_BYTES) {
      return Promise.reject(
        new ConnectError(
          `payload of ${options.data.byteLength} bytes to "${options.target}" exceeds the limit of ${MAX_CALL_PAYLOAD_BYTES} bytes`,
          Code.ResourceExhausted,
        ),
      );
    }
    if (!this.connected && this.calls.size >= MAX_WAITING_CALLS) {
      return Promise.reject(
        new ConnectError(`not connected to the k4s server at ${this.address} and ${this.calls.size} calls already wait`, Code.Unavailable),
      );
    }
    const id = this.nextId++;
    const timeout = options.timeoutMs && options.timeoutMs > 0 ? options.timeoutMs : DEFAULT_REQUEST_TIMEOUT_MS;
    return new Promise<CallReply>((resolve, reject) => {
      const call: PendingCall = {
        id,
        resolve,
        reject,
        sent: false,
        expiresAt: Date.now() + timeout,
        signal: options.signal,
        onAbort: undefined,
      };
      if (options.signal) {
        call.onAbort = () => {
          if (!this.calls.has(id)) return;
          this.finish(id);
          if (call.sent) this.enqueue({ case: "cancelCall", value: { id: BigInt(id) } });
          else this.pending = this.pending.filter((f) => !(f.frame.case === "call" && Number(f.frame.value.id) === id));
          reject(new ConnectError("call cancelled by the caller", Code.Canceled));
        };
        options.signal.addEventListener("abort", call.onAbort, { once: true });
      }
      this.calls.set(id, call);
      this.push({
        $typeName: WorkerFrameSchema.typeName,
        frame: {
          case: "call",
          value: {
            $typeName: CallSchema.typeName,
            id: BigInt(id),
            target: options.target,
            data: options.data,
            contentType: options.contentType,
            expectsReply: options.expectsReply,
            timeoutMs: options.timeoutMs ?? 0,
            sender: options.sender ?? "",
            parentDelivery: options.parentDelivery ? BigInt(options.parentDelivery) : 0n,
          },
        },
      });
    });
  }

  send(frame: MessageInitShape<typeof WorkerFrameSchema>["frame"]): void {
    if (this.closed) return;
    this.enqueue(frame);
  }

  result(id: number, data: Uint8Array, contentType: string, error: { code: number; message: string } | undefined): void {
    if (this.closed) return;
    this.push(resultFrame(BigInt(id), data, contentType, error));
  }

  async close(): Promise<void> {
    if (this.closed) return this.done.catch(() => {});
    this.flushNow();
    this.closed = true;
    this.failCalls((c) => c.sent, new ConnectError("session closed", Code.Unavailable));
    this.failCalls(() => true, notSent(new ConnectError("session closed", Code.Unavailable)));
    this.stream?.end();
    this.backoffWake?.();
    this.rejectReady(new ConnectError("session closed before it was ready", Code.Unavailable));
    // Let the half-closed stream carry the last frames (results, states, logs) before the
    // connection goes: the server ends the stream once it read them all.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, 500)))]);
    clearTimeout(timer);
    this.stream?.cancel();
    this.channel.close();
    this.stopTimer();
    this.resolveDone();
  }

  private enqueue(frame: MessageInitShape<typeof WorkerFrameSchema>["frame"]): void {
    if (!this.connected && frame?.case === "log" && ++this.keptLogFrames > MAX_KEPT_LOG_FRAMES) {
      const i = this.pending.findIndex((f) => f.frame.case === "log");
      if (i >= 0) this.pending.splice(i, 1);
    }
    if (frame?.case === "result") {
      const v = frame.value;
      this.push(resultFrame(v.id === undefined ? 0n : BigInt(v.id), v.data ?? EMPTY, v.contentType ?? "", v.error));
    } else {
      this.push(create(WorkerFrameSchema, { frame }));
    }
  }

  /** Queues a complete frame for the next flush (one per tick). */
  private push(frame: WorkerFrame): void {
    this.pending.push(frame);
    if (!this.flushScheduled && this.connected) {
      this.flushScheduled = true;
      setImmediate(() => this.flushNow());
    }
  }

  private flushNow(): void {
    this.flushScheduled = false;
    if (!this.connected || !this.stream || this.pending.length === 0) return;
    const frames = this.pending;
    this.pending = [];
    this.keptLogFrames = 0;
    for (const f of frames) {
      if (f.frame.case !== "call") continue;
      const c = this.calls.get(Number(f.frame.value.id));
      if (c) c.sent = true;
    }
    // Split by payload bytes: the server refuses a ConnectRequest beyond its receive limit and
    // ends the stream, so frames that each fit must not be joined into one that does not.
    for (let start = 0, end = 0; start < frames.length; start = end) {
      end = batchEnd(frames, start);
      this.stream.write({ frames: end - start === frames.length ? frames : frames.slice(start, end) });
    }
    this.lastSent = Date.now();
  }

  private firstFrame(): WorkerFrame {
    if (this.options.attach) {
      const a = this.options.attach;
      return create(WorkerFrameSchema, {
        frame: { case: "attach", value: { container: a.container, token: a.token ?? "", host: a.host ?? "" } },
      });
    }
    const h = typeof this.options.hello === "function" ? this.options.hello() : this.options.hello!;
    const hello: MessageInitShape<typeof HelloSchema> = {
      name: h.name ?? "",
      role: h.role,
      labels: h.labels ?? {},
      modules: h.modules ?? [],
      capacity: h.capacity ?? 0,
      canSpawn: h.canSpawn ?? false,
      running: h.running ?? [],
      credential: this.credential,
    };
    return create(WorkerFrameSchema, { frame: { case: "hello", value: hello } });
  }

  private async run(): Promise<void> {
    const reconnects = createBackoff({ initialMs: RECONNECT_INITIAL_MS, maxMs: this.options.maxBackoffMs ?? RECONNECT_MAX_MS, jitter: 0.2 });
    let lastFailure = "";
    // Attempts since the last welcomed stream: every server is tried once before backing off.
    let failedInTurn = 0;
    while (!this.closed) {
      const { err, upFor } = await this.connectOnce();
      if (this.closed) break;
      this.connected = false;
      this.flushScheduled = false;
      // At most once: calls that reached the server may have run, so they fail rather than retry.
      this.failCalls((c) => c.sent, new ConnectError(`connection to k4s server lost: ${err.rawMessage}`, Code.Unavailable));
      // Results and heartbeats belong to the broken stream; states, logs and unsent calls carry over.
      this.pending = this.pending.filter((f) => f.frame.case === "state" || f.frame.case === "log" || f.frame.case === "call");
      const fatal = FATAL_CODES.has(err.code) || (!this.everWelcomed && err.code === Code.FailedPrecondition);
      const servers = this.addresses.length;
      failedInTurn = upFor >= 0 ? 1 : failedInTurn + 1;
      // Another server of the cluster may take the session (this one died, or stands by).
      if (servers > 1) this.at = (this.at + 1) % servers;
      const untried = servers > 1 && upFor < 0 && failedInTurn < servers;
      if ((!this.options.reconnect && !untried) || fatal) {
        this.closed = true;
        this.fatal = err;
        this.stopTimer();
        // Those sent were failed above: these never left this process.
        this.failCalls(() => true, notSent(err));
        this.channel.close();
        this.rejectReady(err);
        this.rejectDone(err);
        return;
      }
      this.lastError = err;
      // Report changes, not attempts: a lost connection once, then each new reason it cannot
      // be re-opened for.
      if (upFor >= 0) {
        lastFailure = "";
        this.options.onDisconnect?.(err);
      } else if (err.message !== lastFailure) {
        lastFailure = err.message;
        this.options.onConnectFailed?.(err);
      }
      // Only a connection that stayed up starts the back-off over; one that breaks right after
      // its Welcome (a server that keeps failing) must not turn it into a busy loop.
      if (upFor >= STABLE_CONNECTION_MS) reconnects.reset();
      // Back off once every server failed in turn.
      const delay = failedInTurn % servers === 0 ? reconnects.next() : 0;
      await new Promise<void>((r) => {
        const t = setTimeout(r, delay);
        this.backoffWake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.backoffWake = undefined;
      // A fresh channel per attempt: grpc-js would otherwise hold its connection attempts to a
      // back-off of its own (up to 2 minutes), and this loop is the one that decides (the lean
      // channel has none, but a connection that failed is not reused either).
      this.channel.close();
      if (!this.closed) this.channel = this.newChannel();
    }
  }

  private newChannel(): StreamChannel {
    return this.transport === "lean" ? leanChannel(this.address, this.options.tls) : grpcJsStreamChannel(this.address, this.options.tls);
  }

  /** The token's headers, with the caller's own (asked again for every stream), names in lower case. */
  private streamHeaders(): Record<string, string> {
    const extra = this.options.headers?.();
    if (!extra) return this.headers;
    const all = { ...this.headers };
    for (const [k, v] of Object.entries(extra)) all[k.toLowerCase()] = v;
    return all;
  }

  /**
   * Runs one stream until it ends; resolves with why it ended and how long it was up after its
   * Welcome (ms; -1 when it was never welcomed).
   */
  private connectOnce(): Promise<{ err: ConnectError; upFor: number }> {
    return new Promise((resolve) => {
      let welcomedAt = -1;
      let ended = false;
      const onWelcome = () => (welcomedAt = Date.now());
      const end = (err: ConnectError) => {
        if (ended) return;
        ended = true;
        if (this.stream === stream) this.stream = undefined;
        if (welcomedAt >= 0) this.connected = false;
        stream.cancel();
        resolve({ err, upFor: welcomedAt >= 0 ? Date.now() - welcomedAt : -1 });
      };
      const stream = this.channel.open(CONNECT_PATH, this.streamHeaders(), {
        message: (res: ConnectResponse) => {
          if (ended) return;
          this.lastReceived = Date.now();
          try {
            this.receive(res, onWelcome);
          } catch (err) {
            end(ConnectError.from(err, Code.Internal));
          }
        },
        status: (code, details) =>
          end(code === 0 ? new ConnectError("server ended the stream", Code.Unavailable) : new ConnectError(statusMessage(details), code as Code)),
      });
      this.stream = stream;
      this.lastSent = this.lastReceived = Date.now();
      stream.write(create(ConnectRequestSchema, { frames: [this.firstFrame()] }));
    });
  }

  private receive(res: ConnectResponse, onWelcome: () => void): void {
    for (const frame of res.frames) {
      const f = frame.frame;
      switch (f.case) {
        case "callResult": {
          const id = Number(f.value.id);
          const c = this.calls.get(id);
          if (!c) break;
          this.finish(id);
          const e = f.value.error;
          if (e && e.code !== 0) c.reject(answered(new ConnectError(e.message, e.code as Code), f.value.refused));
          else c.resolve({ data: f.value.data, contentType: f.value.contentType, container: f.value.container });
          break;
        }
        case "welcome": {
          const reconnect = this.everWelcomed;
          this.sessionId = f.value.sessionId;
          this.name = f.value.name;
          this.credential = f.value.credential;
          if (f.value.heartbeatIntervalMs > 0 && f.value.heartbeatIntervalMs !== this.heartbeatMs) {
            this.heartbeatMs = f.value.heartbeatIntervalMs;
            this.stopTimer();
          }
          this.connected = true;
          this.everWelcomed = true;
          onWelcome();
          this.startTimer();
          this.options.onWelcome?.({ sessionId: this.sessionId, name: this.name, reconnect });
          this.resolveReady();
          if (this.pending.length > 0 && !this.flushScheduled) {
            this.flushScheduled = true;
            setImmediate(() => this.flushNow());
          }
          break;
        }
        case "heartbeat":
          break;
        default:
          this.options.onFrame?.(frame);
      }
    }
  }

  private finish(id: number): void {
    const c = this.calls.get(id);
    if (!c) return;
    this.calls.delete(id);
    if (c.onAbort) c.signal!.removeEventListener("abort", c.onAbort);
  }

  private failCalls(which: (c: PendingCall) => boolean, err: ConnectError): void {
    for (const c of [...this.calls.values()]) {
      if (!which(c)) continue;
      this.finish(c.id);
      c.reject(err);
    }
    if (this.closed) this.pending = this.pending.filter((f) => f.frame.case !== "call");
  }

  /** One timer per session: heartbeats, silence detection and the calls' safety net. */
  private startTimer(): void {
    if (this.timer || this.closed) return;
    const tick = Math.max(50, Math.min(1000, Math.floor(this.heartbeatMs / 2)));
    this.stalls = createStallWatch(tick);
    this.timer = setInterval(() => this.onTick(), tick);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private onTick(): void {
    const now = Date.now();
    if (this.connected) {
      if (now - this.lastSent >= this.heartbeatMs) this.enqueue({ case: "heartbeat", value: { sentAtMs: BigInt(now) } });
      // A server silent for three intervals is gone even if TCP has not noticed yet (unless this
      // process's own loop was just stalled: the server's frames may be waiting unread).
      const excused = this.stalls.excused(now, this.heartbeatMs);
      if (now - this.lastReceived > 3 * this.heartbeatMs && !excused) this.stream?.cancel();
    }
    for (const c of this.calls.values()) {
      if (c.sent ? c.expiresAt + SAFETY_MARGIN_MS > now : c.expiresAt > now) continue;
      this.finish(c.id);
      if (c.sent) {
        this.enqueue({ case: "cancelCall", value: { id: BigInt(c.id) } });
        c.reject(new ConnectError("no answer from the server before the call's deadline", Code.DeadlineExceeded));
      } else {
        this.pending = this.pending.filter((f) => !(f.frame.case === "call" && Number(f.frame.value.id) === c.id));
        const why = this.lastError ? `: ${this.lastError.rawMessage}` : "";
        c.reject(notSent(new ConnectError(`could not reach the k4s server at ${this.address} before the call's deadline${why}`, Code.Unavailable)));
      }
    }
  }
}

/** Errors of calls that ran nowhere: refused by the server before any worker had them, or never sent. */
const refusals = new WeakSet<ConnectError>();
/** Errors that are the server's answer to a call (a CallResult), not this session's own. */
const answers = new WeakSet<ConnectError>();

function notSent(err: ConnectError): ConnectError {
  refusals.add(err);
  return err;
}

function answered(err: ConnectError, refused: boolean): ConnectError {
  answers.add(err);
  if (refused) refusals.add(err);
  return err;
}

/**
 * Whether a call a session failed with this error ran nowhere: the server refused it before any
 * worker had it (CallResult.refused, which a worker's error never carries), or it never left
 * this process. False says nothing either way (it may have run).
 */
export function callRefused(err: unknown): boolean {
  return err instanceof ConnectError && refusals.has(err);
}

/** Whether a call's error is the server's answer (its code and message), not the session's (a link that failed). */
export function serverAnswered(err: unknown): boolean {
  return err instanceof ConnectError && answers.has(err);
}

/**
 * The message of a stream's status, without the wrapping grpc-js puts around a failed connect
 * ("No connection established. Last error: Error: connect ECONNREFUSED ... Resolution note:"),
 * so it reads like the same failure on the unary API: "connect ECONNREFUSED 127.0.0.1:1".
 */
function statusMessage(details: string): string {
  const m = /^No connection established\. Last error: (?:Error: )?([^]*?)\.?(?: Resolution note:[^]*)?$/.exec(details);
  return m ? m[1]!.trim() : details;
}

/** Opens a session on WorkerService.Connect; see SessionOptions. */
export function openSession(options: SessionOptions): Session {
  return new SessionImpl(options);
}
