/**
 * The peer link of a standby server: the calls its clients make (sends and requests, on the
 * unary API or on client sessions) go to the leader, whose router holds every container's
 * mailbox, over one long-lived WorkerService session per pair of servers. The session is the
 * SDK's own (transport/session.ts), so the hop carries the worker protocol's batched frames,
 * and the leader answers exactly as it answers any client: deadlines, cancels and error codes
 * come back unchanged.
 *
 * Across the hop, at most once and at least once hold as on one server: a request whose link
 * breaks after it went out fails UNAVAILABLE (it may have run; it is never sent twice), and a
 * send is answered only when the leader accepted it, so a send the caller saw accepted is in
 * the leader's hands and one that was not is answered UNAVAILABLE for the caller to retry.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { formatTarget, type Target } from "../../api/target.js";
import { openSession, type Session } from "../../transport/session.js";
import type { TlsOptions } from "../../transport/channel.js";
import { createAnswers } from "../messaging/answers.js";
import { createDeadlineQueue } from "../messaging/deadline-queue.js";
import { EnvelopeState } from "../messaging/envelope.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";

/** PeerForwarderOptions say who this server is and where the leader is. */
export interface PeerForwarderOptions {
  /** This server's advertise address (named in the peer session's hello). */
  self: () => string;
  /** The leader's advertise address as last seen, if there is one. */
  leader: () => string | undefined;
  /** The error of a standby (UNAVAILABLE, naming the leader): what a call gets while no other server leads. */
  standby: () => ConnectError;
  /**
   * Longest a call waits for a leader to be elected (ms, default 0): one made while the cluster
   * is between leaders goes to the next one, within its own deadline, rather than failing at once.
   */
  leaderWaitMs?: () => number;
  /** The cluster's bearer token, when its servers run with one. */
  token?: string;
  tls?: TlsOptions;
}

/** PeerForwarder routes calls to the leader: the router of a standby. */
export interface PeerForwarder extends CallRouter {
  /** Fails every call in flight with UNAVAILABLE and closes the peer link. */
  stop(message: string): Promise<void>;
}

/** A peer link in use, and the calls on it. */
interface Peer {
  address: string;
  session: Session;
}

/**
 * The leader once a server other than this one leads, or undefined after maxMs (or on abort).
 * The leader's name is read from the election about once a second: this looks ten times as often.
 */
export async function leaderWithin(options: Pick<PeerForwarderOptions, "leader" | "self">, maxMs: number, signal?: AbortSignal): Promise<string | undefined> {
  const giveUpAt = Date.now() + maxMs;
  for (;;) {
    const leader = options.leader();
    if (leader && leader !== options.self()) return leader;
    const left = giveUpAt - Date.now();
    if (left <= 0 || signal?.aborted) return undefined;
    await sleep(Math.min(100, left), undefined, { signal }).catch(() => {});
  }
}

/** Creates the forwarder; the peer link opens on the first call. */
export function createPeerForwarder(options: PeerForwarderOptions): PeerForwarder {
  // Deadlines are the leader's to keep (and the session backs them up): nothing is timed here.
  const answers = createAnswers({ deadlines: createDeadlineQueue<Letter>(() => {}) });
  const inFlight = new Map<Letter, AbortController>();
  let peer: Peer | undefined;
  let stopped = false;

  function peerFor(address: string): Session {
    if (peer?.address === address) return peer.session;
    const old = peer;
    const session = openSession({ address, token: options.token, tls: options.tls, hello: { role: "client", name: `peer-${options.self()}` } });
    const p: Peer = { address, session };
    peer = p;
    // A broken link is not re-opened behind its calls' backs: the next call opens a new one.
    session.done.then(
      () => {},
      () => {
        if (peer === p) peer = undefined;
      },
    );
    // The leader changed: calls on the old link end with it (the old leader is gone or steps down).
    void old?.session.close();
    return session;
  }

  function fail(env: Letter, code: Code, message: string) {
    env.state = EnvelopeState.Done;
    answers.fail(env, code, message);
  }

  /** Sends a call over the peer link to the leader, answering it with what comes back. */
  function forward(env: Letter, target: Target, leader: string, abort: AbortController) {
    const timeoutMs = env.deadline > 0 ? Math.max(1, env.deadline - Date.now()) : 0;
    peerFor(leader)
      .call({ target: formatTarget(target), data: env.data, contentType: env.contentType, expectsReply: env.expectsReply, timeoutMs, signal: abort.signal })
      .then(
        (reply) => {
          inFlight.delete(env);
          env.state = EnvelopeState.Done;
          answers.reply(env, reply.container, reply.data, reply.contentType);
        },
        (err: unknown) => {
          inFlight.delete(env);
          const e = ConnectError.from(err);
          const where = e.code === Code.Unavailable && /connection to k4s server lost|could not reach/.test(e.rawMessage) ? ` (forwarded to the leader ${leader})` : "";
          fail(env, e.code, e.rawMessage + where);
        },
      );
  }

  return {
    route(env, target) {
      if (stopped) return fail(env, Code.Unavailable, "server is stopping");
      const abort = new AbortController();
      inFlight.set(env, abort);
      env.state = EnvelopeState.InFlight;
      const leader = options.leader();
      if (leader && leader !== options.self()) return forward(env, target, leader, abort);
      // Between leaders: wait for the next one, within the call's deadline (abandon and stop abort the wait).
      const waitMs = options.leaderWaitMs?.() ?? 0;
      const deadlineFirst = env.deadline > 0 && env.deadline - Date.now() < waitMs;
      void leaderWithin(options, deadlineFirst ? env.deadline - Date.now() : waitMs, abort.signal).then((next) => {
        if (abort.signal.aborted) return;
        if (next) return forward(env, target, next, abort);
        inFlight.delete(env);
        if (deadlineFirst) return fail(env, Code.DeadlineExceeded, `no leader was elected before the call's deadline: ${options.standby().rawMessage}`);
        const err = options.standby();
        fail(env, err.code, waitMs > 0 ? `${err.rawMessage} (waited ${waitMs} ms for one)` : err.rawMessage);
      });
    },
    abandon(env, code, message) {
      if (env.state === EnvelopeState.Done) return;
      env.state = EnvelopeState.Done;
      // The leader is told (CancelCall) and takes the message back wherever it is.
      inFlight.get(env)?.abort();
      inFlight.delete(env);
      if (code !== 0) answers.fail(env, code, message);
      else answers.forget(env);
    },
    // A standby delivers nothing itself: no worker's result or nested call can name a delivery here.
    settle() {},
    inflightOf: () => undefined,
    knows: () => false,
    async stop(message) {
      stopped = true;
      for (const env of [...inFlight.keys()]) {
        inFlight.get(env)?.abort();
        inFlight.delete(env);
        fail(env, Code.Unavailable, message);
      }
      const p = peer;
      peer = undefined;
      await p?.session.close();
    },
  };
}
