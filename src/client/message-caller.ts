/**
 * The client's messaging end: one pipelined WorkerService session, opened on the first send or
 * request and replaced when it ended for good, so a busy caller never pays a unary call per
 * message. The session's module (and grpc-js under it) loads only then, so a client that only
 * reads and writes resources, like most CLI commands, starts without it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { encodePayload } from "../api/payload.js";
import type { TlsOptions } from "../transport/channel.js";
import type { CallReply, Session } from "../transport/session.js";

type SessionModule = typeof import("../transport/session.js");

/** MessageCallerOptions say where the session goes and what it announces. */
export interface MessageCallerOptions {
  address: string;
  token: string | undefined;
  tls: TlsOptions | undefined;
  /** The name the session announces in its Hello. */
  name: string;
  /** Re-open the session when it breaks (calls wait within their timeout); false fails at once. */
  reconnect: boolean;
}

/** What one send or request carries besides its target and value. */
export interface MessageCallOptions {
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** MessageCaller sends messages and requests on the client's session. */
export interface MessageCaller {
  /** Encodes value and calls target; resolves to the reply (a send's reply is its receipt). */
  call(target: string, value: unknown, expectsReply: boolean, options: MessageCallOptions): Promise<CallReply>;
  /** Closes the session; later calls fail FAILED_PRECONDITION. */
  close(): Promise<void>;
}

/** Creates the client's messaging end; nothing connects until the first call. */
export function createMessageCaller(options: MessageCallerOptions): MessageCaller {
  let session: Session | undefined;
  let sessions: SessionModule | undefined;
  let closed = false;

  const open = (): Session | Promise<Session> => {
    if (closed) throw new ConnectError("client is closed", Code.FailedPrecondition);
    if (session) return session;
    if (!sessions) {
      return import("../transport/session.js").then((m) => {
        sessions = m;
        return open();
      });
    }
    const s = sessions.openSession({
      address: options.address,
      token: options.token,
      tls: options.tls,
      hello: { role: "client", name: options.name },
      reconnect: options.reconnect,
    });
    // A session that ended for good is replaced on the next call; its calls already failed.
    const forget = () => {
      if (session === s) session = undefined;
    };
    s.done.then(forget, forget);
    s.ready.catch(() => {});
    session = s;
    return s;
  };

  return {
    // On the hot path: a plain promise chain (no async wrapper), so a call costs one promise and
    // one continuation less; errors thrown before the call still reject.
    call(target, value, expectsReply, opts) {
      try {
        const payload = encodePayload(value, opts.contentType);
        const call = { target, data: payload.data, contentType: payload.contentType, expectsReply, timeoutMs: opts.timeoutMs, signal: opts.signal };
        // No closure on the connected path: the call goes straight to the open session.
        const s = open();
        return s instanceof Promise ? s.then((opened) => opened.call(call)) : s.call(call);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      const s = session;
      session = undefined;
      if (s) await s.close();
    },
  };
}
