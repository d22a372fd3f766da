/**
 * A WorkerService.Connect stream spoken directly over node:http2: the gRPC wire protocol of a
 * bidi call (POST to the method's path, `content-type: application/grpc`, `te: trailers`, each
 * message behind a 5-byte prefix, the status in the `grpc-status`/`grpc-message` trailers),
 * without grpc-js's client call layers (resolving, retrying, load balancing, its compression
 * filter, a promise per message sent).
 *
 * Written: each ConnectRequest as the codec lays it out, its prefix and frames in one buffer and
 * every large payload a chunk of its own (a view, not a copy), in one corked write. Read: a
 * message that arrived within one DATA chunk is decoded where it lies; one spread over several is
 * joined once. Connection, TLS, keepalive and window settings are those grpc-channel.ts gives
 * grpc-js, and a failure maps to the status grpc-js reports for it.
 */
import * as http2 from "node:http2";
import { decodeConnectResponse, encodeFramedConnectRequest, GRPC_PREFIX_BYTES } from "./frame-codec.js";
import { CLIENT_WINDOW_BYTES, KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, type TlsOptions } from "./channel.js";
import { MAX_MESSAGE_BYTES } from "./limits.js";
import type { FrameStream, StreamChannel, StreamListener } from "./stream-channel.js";
import type { ConnectRequest } from "../gen/k4s/v1/worker_service_pb.js";

const {
  NGHTTP2_CANCEL,
  NGHTTP2_NO_ERROR,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
  NGHTTP2_INTERNAL_ERROR,
  NGHTTP2_FLAG_END_STREAM,
} = http2.constants;

/** gRPC status codes used here. */
const S = { OK: 0, CANCELLED: 1, UNKNOWN: 2, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16, PERMISSION_DENIED: 7, UNIMPLEMENTED: 12, RESOURCE_EXHAUSTED: 8 } as const;

/** How long a connection may take to be established (grpc-js's minimum connect timeout). */
const CONNECT_TIMEOUT_MS = 20_000;

/**
 * The largest message a stream takes (twice the server's own receive limit: a frame it forwards,
 * re-framed, always fits). A longer length prefix ends the stream RESOURCE_EXHAUSTED instead of
 * allocating it: a corrupt or hostile prefix may claim up to 4 GiB.
 */
const MAX_RECEIVE_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES;

/** The lean channel's timers (ms), each its default unless given. */
export interface LeanTimers {
  connectTimeoutMs?: number;
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
}

const USER_AGENT = `k4s-worker-stream node/${process.versions.node}`;

/** The gRPC status of an HTTP status without one (as grpc-js maps it). */
function httpStatus(code: number): { code: number; details: string } {
  const details = `Received HTTP status code ${code}`;
  switch (code) {
    case 400:
      return { code: S.INTERNAL, details };
    case 401:
      return { code: S.UNAUTHENTICATED, details };
    case 403:
      return { code: S.PERMISSION_DENIED, details };
    case 404:
      return { code: S.UNIMPLEMENTED, details };
    case 429:
    case 502:
    case 503:
    case 504:
      return { code: S.UNAVAILABLE, details };
    default:
      return { code: S.UNKNOWN, details };
  }
}

/** Opens the lean channel to one server (host:port); it connects with its first stream. */
export function leanChannel(address: string, tls: boolean | TlsOptions | undefined, timers: LeanTimers = {}): StreamChannel {
  return new LeanChannel(address, tls, timers);
}

class LeanChannel implements StreamChannel {
  private session: http2.ClientHttp2Session | undefined;
  /** Set once the connection failed or went: a stream cut by it ends UNAVAILABLE. */
  dropped: Error | undefined;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly address: string,
    private readonly tls: boolean | TlsOptions | undefined,
    private readonly timing: LeanTimers,
  ) {}

  open(path: string, headers: Readonly<Record<string, string>>, listener: StreamListener): FrameStream {
    const session = this.session ?? this.connect();
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({
        ...headers,
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        "user-agent": USER_AGENT,
        "grpc-accept-encoding": "identity",
      });
    } catch (err) {
      // The session cannot take streams (closed, or a header Node refuses).
      const e = err as Error;
      process.nextTick(() => listener.status(this.dropped || session.closed || session.destroyed ? S.UNAVAILABLE : S.INTERNAL, e.message));
      return { write() {}, end() {}, cancel() {} };
    }
    return new LeanStream(req, session, this, listener);
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    const s = this.session;
    this.session = undefined;
    if (s && !s.destroyed) s.destroy();
  }

  private connect(): http2.ClientHttp2Session {
    const secure = this.tls ? (this.tls === true ? {} : this.tls) : undefined;
    const options: http2.SecureClientSessionOptions = {
      settings: { initialWindowSize: CLIENT_WINDOW_BYTES },
      // As grpc-js: no session memory limit (Node resets a session past it), the server bounds what it sends.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    };
    // The certificate is checked against `servername` when given, else against the host (an IP
    // address included: Node then sends no server name, as RFC 6066 has none for one).
    if (secure?.ca) options.ca = secure.ca;
    if (secure?.servername) options.servername = secure.servername;
    const session = http2.connect(`${secure ? "https" : "http"}://${this.address}`, options);
    this.session = session;
    const drop = (err: Error) => {
      this.dropped ??= err;
    };
    session.on("error", drop);
    session.once("goaway", (code: number) => drop(new Error(`connection closed by the server (GOAWAY code ${code})`)));
    session.once("close", () => {
      drop(new Error("Connection dropped"));
      for (const t of this.timers) clearTimeout(t);
      this.timers = [];
    });
    const connectTimeoutMs = this.timing.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const connecting = setTimeout(() => {
      this.lose(session, new Error(`connect to ${this.address} timed out after ${connectTimeoutMs / 1000} s`));
    }, connectTimeoutMs);
    connecting.unref();
    this.timers.push(connecting);
    session.once("connect", () => {
      clearTimeout(connecting);
      // The connection's window as wide as each stream's (8 MiB), at once: no 64 KiB start-window stall.
      try {
        session.setLocalWindowSize(CLIENT_WINDOW_BYTES);
      } catch {
        // A session closed meanwhile.
      }
      this.keepalive(session);
    });
    return session;
  }

  /** Drops the connection for this reason: its streams end UNAVAILABLE with it. */
  private lose(session: http2.ClientHttp2Session, err: Error): void {
    if (session.destroyed) return;
    this.dropped ??= err;
    session.destroy(err);
  }

  /** Pings every KEEPALIVE_TIME_MS; a ping unanswered for KEEPALIVE_TIMEOUT_MS drops the connection. */
  private keepalive(session: http2.ClientHttp2Session): void {
    const every = setInterval(() => {
      if (session.destroyed) return;
      const late = setTimeout(() => this.lose(session, new Error("keepalive ping not answered")), this.timing.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS);
      late.unref();
      const sent = session.ping(() => clearTimeout(late));
      if (!sent) clearTimeout(late);
    }, this.timing.keepaliveTimeMs ?? KEEPALIVE_TIME_MS);
    every.unref();
    this.timers.push(every);
  }
}

class LeanStream implements FrameStream {
  /** Set once the status was reported (or the stream was cancelled): nothing more is read or written. */
  private done = false;
  private httpStatus = 0;
  private trailers: { code: number; details: string } | undefined;
  private error: (Error & { code?: string; syscall?: string }) | undefined;
  private readonly reader = new GrpcMessageReader();

  constructor(
    private readonly req: http2.ClientHttp2Stream,
    private readonly session: http2.ClientHttp2Session,
    private readonly channel: LeanChannel,
    private readonly listener: StreamListener,
  ) {
    req.on("response", (headers, flags) => {
      this.httpStatus = Number(headers[":status"]) || 0;
      // A trailers-only answer: the status in the headers, no message.
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        this.trailers = this.statusOf(headers);
        return;
      }
      // A body that is not gRPC's (an HTTP error page, a proxy's answer) is not read as messages.
      if (this.httpStatus !== 200) {
        const s = httpStatus(this.httpStatus);
        this.fail(s.code, s.details);
        return;
      }
      const type = headers["content-type"];
      if (typeof type !== "string" || !type.startsWith("application/grpc")) this.fail(S.UNKNOWN, `Received unexpected content-type ${JSON.stringify(type ?? "")}`);
    });
    req.on("trailers", (headers) => {
      this.trailers = this.statusOf(headers);
    });
    req.on("data", (chunk: Buffer) => {
      if (this.done) return;
      const bad = this.reader.read(chunk, this.deliver, () => this.done);
      if (bad) this.fail(bad.code, bad.details);
    });
    req.on("end", () => {
      if (this.trailers) this.finishWith(this.trailers);
    });
    req.on("error", (err: Error & { code?: string }) => {
      // A stream reset arrives as "close" with its code; other errors are the connection's. A
      // stream the connection never opened is cancelled with the connection's error as its cause
      // ("connect ECONNREFUSED ..."): that error is the one to report, as grpc-js does.
      if (err.code === "ERR_HTTP2_STREAM_CANCEL" && err.cause instanceof Error) this.error ??= err.cause;
      else if (err.code !== "ERR_HTTP2_STREAM_ERROR") this.error ??= err;
    });
    // After any "error" emitted at the same time, so the connection's error is known.
    req.on("close", () => process.nextTick(() => this.closed()));
  }

  write(request: Pick<ConnectRequest, "frames">): void {
    if (this.done) return;
    let parts: Buffer[];
    try {
      parts = encodeFramedConnectRequest(request);
    } catch (err) {
      this.fail(S.INTERNAL, `Serialization failure: ${(err as Error).message}`);
      return;
    }
    const req = this.req;
    if (parts.length === 1) {
      req.write(parts[0]);
      return;
    }
    req.cork();
    for (const p of parts) req.write(p);
    req.uncork();
  }

  end(): void {
    if (!this.done && !this.req.writableEnded) this.req.end();
  }

  cancel(): void {
    this.fail(S.CANCELLED, "Cancelled on client");
  }

  /** Ends the stream from this side with a status of its own. */
  private fail(code: number, details: string): void {
    if (this.done) return;
    this.done = true;
    if (!this.req.destroyed) this.req.close(NGHTTP2_CANCEL);
    process.nextTick(() => this.listener.status(code, details));
  }

  private finish(code: number, details: string): void {
    if (this.done) return;
    this.done = true;
    this.listener.status(code, details);
  }

  /** Ends with the server's status, unless it says OK after a message it cut off. */
  private finishWith(status: { code: number; details: string }): void {
    if (status.code === S.OK && this.reader.partial()) this.finish(S.INTERNAL, "Stream ended in the middle of a message");
    else this.finish(status.code, status.details);
  }

  private statusOf(headers: http2.IncomingHttpHeaders): { code: number; details: string } {
    const status = headers["grpc-status"];
    if (typeof status === "string") {
      const message = headers["grpc-message"];
      let details = "";
      if (typeof message === "string") {
        try {
          details = decodeURI(message);
        } catch {
          details = message;
        }
      }
      if (!/^\d{1,9}$/.test(status)) return { code: S.UNKNOWN, details: `Received an invalid grpc-status ${JSON.stringify(status)}${details ? `: ${details}` : ""}` };
      return { code: Number(status), details };
    }
    if (this.httpStatus && this.httpStatus !== 200) return httpStatus(this.httpStatus);
    return { code: S.UNKNOWN, details: "No status information received" };
  }

  /** The stream closed: its status is the trailers', else what closed it. */
  private closed(): void {
    if (this.done) return;
    if (this.trailers) {
      this.finishWith(this.trailers);
      return;
    }
    const err = this.error;
    // The connection went (Node marks the session closed or destroyed at once, but reports why
    // only after its streams closed): the stream was cut by it, not by either end.
    const lost = this.channel.dropped ?? (this.session.destroyed || this.session.closed ? (err ?? new Error("Connection dropped")) : undefined);
    if (err && (lost || err.syscall !== undefined || /^E[A-Z]+$/.test(err.code ?? ""))) {
      this.finish(S.UNAVAILABLE, err.message);
      return;
    }
    const rst = this.req.rstCode;
    switch (rst) {
      case NGHTTP2_NO_ERROR:
        if (this.httpStatus && this.httpStatus !== 200) {
          const s = httpStatus(this.httpStatus);
          this.finish(s.code, s.details);
        } else this.finish(S.INTERNAL, `Received RST_STREAM with code ${rst} (Call ended without gRPC status)`);
        return;
      case NGHTTP2_REFUSED_STREAM:
        this.finish(S.UNAVAILABLE, "Stream refused by server");
        return;
      case NGHTTP2_CANCEL:
        // Node closes a connection's streams with CANCEL when the connection goes.
        if (lost) this.finish(S.UNAVAILABLE, lost.message);
        else this.finish(S.CANCELLED, "Call cancelled");
        return;
      case NGHTTP2_ENHANCE_YOUR_CALM:
        this.finish(S.RESOURCE_EXHAUSTED, "Bandwidth exhausted or memory limit exceeded");
        return;
      case NGHTTP2_INADEQUATE_SECURITY:
        this.finish(S.PERMISSION_DENIED, "Protocol not secure enough");
        return;
      case NGHTTP2_INTERNAL_ERROR:
        if (lost) this.finish(S.UNAVAILABLE, lost.message);
        else this.finish(S.INTERNAL, err ? `Received RST_STREAM with code ${rst} triggered by internal client error: ${err.message}` : `Received RST_STREAM with code ${rst} (Internal server error)`);
        return;
      default:
        if (lost) this.finish(S.UNAVAILABLE, lost.message);
        else this.finish(S.INTERNAL, `Received RST_STREAM with code ${rst}`);
    }
  }

  private readonly deliver = (body: Buffer): void => {
    let res;
    try {
      res = decodeConnectResponse(body);
    } catch (err) {
      this.fail(S.INTERNAL, `Failed to parse server response: ${(err as Error).message}`);
      return;
    }
    this.listener.message(res);
  };
}

/**
 * Splits a gRPC stream's DATA chunks into its messages (each behind a flag byte and a 32-bit
 * big-endian length). A message that lies within one chunk is handed on as a view of it; one
 * spread over several is joined into a buffer of its own, once.
 */
export class GrpcMessageReader {
  // The prefix being gathered, and the message being joined from several chunks.
  private readonly prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
  private prefixHave = 0;
  private message: Buffer | undefined;
  private messageHave = 0;
  /** The length of a message whose prefix ended a chunk (-1: none): the next may hold all of it. */
  private bodyLength = -1;

  constructor(private readonly maxBytes = MAX_RECEIVE_MESSAGE_BYTES) {}

  /** Whether a message was begun and not completed. */
  partial(): boolean {
    return this.prefixHave > 0 || this.message !== undefined || this.bodyLength >= 0;
  }

  /**
   * Takes one chunk: hands on every message it completes, in order, until `stop()` says so.
   * Returns the status of a message that cannot be read (compressed, a bad flag byte: INTERNAL;
   * longer than the limit: RESOURCE_EXHAUSTED); nothing more is read after it.
   */
  read(chunk: Buffer, onMessage: (body: Buffer) => void, stop: () => boolean): { code: number; details: string } | undefined {
    let pos = 0;
    const n = chunk.byteLength;
    while (pos < n && !stop()) {
      const m = this.message;
      if (m) {
        const take = Math.min(m.byteLength - this.messageHave, n - pos);
        chunk.copy(m, this.messageHave, pos, pos + take);
        this.messageHave += take;
        pos += take;
        if (this.messageHave === m.byteLength) {
          this.message = undefined;
          onMessage(m);
        }
        continue;
      }
      let flag: number;
      let length: number;
      if (this.bodyLength >= 0) {
        flag = 0;
        length = this.bodyLength;
        this.bodyLength = -1;
      } else if (this.prefixHave === 0 && n - pos >= GRPC_PREFIX_BYTES) {
        flag = chunk[pos]!;
        length = chunk.readUInt32BE(pos + 1);
        pos += GRPC_PREFIX_BYTES;
      } else {
        // A prefix split across chunks.
        const take = Math.min(GRPC_PREFIX_BYTES - this.prefixHave, n - pos);
        chunk.copy(this.prefix, this.prefixHave, pos, pos + take);
        this.prefixHave += take;
        pos += take;
        if (this.prefixHave < GRPC_PREFIX_BYTES) return undefined;
        this.prefixHave = 0;
        flag = this.prefix[0]!;
        length = this.prefix.readUInt32BE(1);
      }
      if (flag !== 0) return { code: S.INTERNAL, details: flag === 1 ? "Received a compressed message, but no compression was asked for" : `Received a message with an invalid flag byte ${flag}` };
      if (length > this.maxBytes) return { code: S.RESOURCE_EXHAUSTED, details: `Received message larger than max (${length} vs. ${this.maxBytes})` };
      if (n - pos >= length) {
        const body = chunk.subarray(pos, pos + length);
        pos += length;
        onMessage(body);
      } else if (pos === n) {
        this.bodyLength = length;
      } else {
        this.message = Buffer.allocUnsafe(length);
        this.messageHave = 0;
      }
    }
    return undefined;
  }
}
