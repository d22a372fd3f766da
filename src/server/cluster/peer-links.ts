/**
 * A server's peer links: one long-lived WorkerService session to each other server it sends
 * calls to, opened on the first call and kept while it works. The session is the SDK's own
 * (transport/session.ts), so the hop carries the worker protocol's batched frames, and the other
 * server answers exactly as it answers any client: deadlines, cancels and error codes come back
 * unchanged.
 *
 * Across the hop, at most once and at least once hold as on one server: a request whose link
 * breaks after it went out fails UNAVAILABLE (it may have run; it is never sent twice), and a
 * send is answered only when the other server accepted it, so a send the caller saw accepted is
 * in that server's hands and one that was not is answered UNAVAILABLE for the caller to retry.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { formatTarget, type Target } from "../../api/target.js";
import type { TlsOptions } from "../../transport/channel.js";
import { callRefused, openSession, serverAnswered, type CallSignal, type Session } from "../../transport/session.js";
import { createAnswers } from "../messaging/answers.js";
import { createDeadlineQueue } from "../messaging/deadline-queue.js";
import { EnvelopeState } from "../messaging/envelope.js";
import type { Letter } from "../messaging/mailbox.js";
import { PEER_CREDENTIAL_HEADER, PEER_HEADER } from "../handlers/worker-service.js";

/**
 * The start of the name of every peer session (`peer-ADVERTISE`), for people reading logs and
 * listings: what tells a peer session is its peer credential (WorkerLink.peer), not its name.
 */
export const PEER_SESSION_PREFIX = "peer-";

/**
 * What tells a call in the links' hands that it was given up on (see hold): an AbortSignal's
 * `aborted` and "abort" listeners without one. Every forwarded call has one, and a Node
 * AbortController costs several microseconds and much garbage, a noticeable part of a hop.
 */
export class HeldSignal implements CallSignal {
  aborted = false;
  /** Usually one or two: the session's, and a call waiting for a place. */
  private listeners: Array<() => void> | undefined;

  addEventListener(_type: "abort", listener: () => void, _options?: { once?: boolean }): void {
    if (this.aborted) return;
    if (!this.listeners) this.listeners = [listener];
    else if (!this.listeners.includes(listener)) this.listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const i = this.listeners?.indexOf(listener) ?? -1;
    if (i >= 0) this.listeners!.splice(i, 1);
  }

  /** Aborts once: each listener then is called once, and none is kept. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const l of listeners) l();
  }
}

/** PeerLinksOptions say who this server is and how it reaches the others. */
export interface PeerLinksOptions {
  /** This server's advertise address (named in each peer session's hello: `peer-ADVERTISE`). */
  self: () => string;
  /** The cluster's bearer token, when its servers run with one. */
  token?: string;
  /**
   * This server's peer credential, shown on every peer session: the other server then knows the
   * session for a server's (and answers its calls itself, never forwarding them again).
   */
  peerCredential?: () => string;
  tls?: TlsOptions;
}

/** PeerLinks carry calls to other servers and answer them with what comes back. */
export interface PeerLinks {
  /**
   * Takes a call in hand before it is forwarded (a caller may still wait for where to send it):
   * from now on abandon and stop reach it. Returns the signal that tells it was given up on.
   */
  hold(env: Letter): CallSignal;
  /**
   * Sends a call to a server (its advertise address) and answers the envelope with its reply or
   * error; `label` names the server in a broken link's error (default: its address). `refused`
   * sees an error first: when it returns true the call is let go unanswered (and New again),
   * for the caller to send elsewhere.
   */
  forward(env: Letter, target: Target, server: string, label?: string, refused?: (err: ConnectError) => boolean): void;
  /** Whether a call is in these links' hands now (held or forwarded, not yet answered). */
  holds(env: Letter): boolean;
  /** The signal of a call held (see hold), if it is. */
  signalOf(env: Letter): CallSignal | undefined;
  /** Lets go of a call held and not forwarded (New again), for the caller to route it. */
  letGo(env: Letter): void;
  /** Gives up on a forwarded call: the other server is told (CancelCall); answers code/message unless 0. */
  abandon(env: Letter, code: Code | 0, message: string): void;
  /**
   * Answers a call that was never forwarded (it reached no server, no worker had it), and lets
   * go of it: a refusal (one that came from another server's peer session says so, for that
   * server to send it elsewhere).
   */
  fail(env: Letter, code: Code, message: string): void;
  /** Closes the links to every server but the given ones: their calls end UNAVAILABLE. */
  closeExcept(keep: ReadonlySet<string>): void;
  /** Fails every call in flight with UNAVAILABLE and closes every link. */
  stop(message: string): Promise<void>;
}

/** Creates the links; each opens with its first call. */
export function createPeerLinks(options: PeerLinksOptions): PeerLinks {
  // Deadlines are the other server's to keep (and the session backs them up): nothing is timed here.
  const answers = createAnswers({ deadlines: createDeadlineQueue<Letter>(() => {}) });
  const inFlight = new Map<Letter, HeldSignal>();
  const sessions = new Map<string, Session>();

  function linkTo(address: string): Session {
    const known = sessions.get(address);
    if (known) return known;
    const { peerCredential } = options;
    const session = openSession({
      address,
      token: options.token,
      tls: options.tls,
      hello: { role: "client", name: `${PEER_SESSION_PREFIX}${options.self()}` },
      headers: peerCredential && (() => ({ [PEER_HEADER]: options.self(), [PEER_CREDENTIAL_HEADER]: peerCredential() })),
    });
    sessions.set(address, session);
    // A broken link is not re-opened behind its calls' backs: the next call opens a new one.
    session.done.then(
      () => {},
      () => {
        if (sessions.get(address) === session) sessions.delete(address);
      },
    );
    return session;
  }

  function fail(env: Letter, code: Code, message: string, refused: boolean) {
    inFlight.delete(env);
    env.state = EnvelopeState.Done;
    if (refused) answers.refuse(env, code, message);
    else answers.fail(env, code, message);
  }

  function hold(env: Letter): HeldSignal {
    const signal = new HeldSignal();
    inFlight.set(env, signal);
    env.state = EnvelopeState.InFlight;
    return signal;
  }

  return {
    hold,
    holds: (env) => inFlight.has(env),
    signalOf: (env) => inFlight.get(env),
    letGo(env) {
      inFlight.delete(env);
      env.state = EnvelopeState.New;
    },
    forward(env, target, server, label = server, refused) {
      const signal = inFlight.get(env) ?? hold(env);
      const timeoutMs = env.deadline > 0 ? Math.max(1, env.deadline - Date.now()) : 0;
      linkTo(server)
        .call({ target: formatTarget(target), data: env.data, contentType: env.contentType, expectsReply: env.expectsReply, timeoutMs, signal })
        .then(
          (reply) => {
            // Answered or given up on already (abandoned, or the links stopped): nothing more to say.
            if (env.state === EnvelopeState.Done) return;
            inFlight.delete(env);
            env.state = EnvelopeState.Done;
            answers.reply(env, reply.container, reply.data, reply.contentType);
          },
          (err: unknown) => {
            if (env.state === EnvelopeState.Done) return;
            const e = ConnectError.from(err);
            if (refused) {
              // Let go first: the caller may send it elsewhere from inside refused().
              inFlight.delete(env);
              env.state = EnvelopeState.New;
              if (refused(e)) return;
            }
            // The link's own failure names the server; the other server's answer is passed on as it is.
            const where = e.code === Code.Unavailable && !serverAnswered(e) ? ` (forwarded to ${label})` : "";
            fail(env, e.code, e.rawMessage + where, callRefused(e));
          },
        );
    },
    abandon(env, code, message) {
      if (env.state === EnvelopeState.Done) return;
      env.state = EnvelopeState.Done;
      // The other server is told (CancelCall) and takes the message back wherever it is.
      inFlight.get(env)?.abort();
      inFlight.delete(env);
      if (code !== 0) answers.fail(env, code, message);
      else answers.forget(env);
    },
    fail: (env, code, message) => fail(env, code, message, true),
    closeExcept(keep) {
      for (const [address, session] of sessions) {
        if (keep.has(address)) continue;
        sessions.delete(address);
        void session.close();
      }
    },
    async stop(message) {
      for (const [env, signal] of [...inFlight]) {
        signal.abort();
        fail(env, Code.Unavailable, message, false);
      }
      const all = [...sessions.values()];
      sessions.clear();
      await Promise.all(all.map((s) => s.close()));
    },
  };
}
