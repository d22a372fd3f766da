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
import type { Target } from "../../api/target.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";
import { createPeerLinks, type PeerLinksOptions } from "./peer-links.js";

/** PeerForwarderOptions say who this server is, how it reaches the others, and where the leader is. */
export interface PeerForwarderOptions extends PeerLinksOptions {
  /** The leader's advertise address as last seen, if there is one. */
  leader: () => string | undefined;
  /** The error of a standby (UNAVAILABLE, naming the leader): what a call gets while no other server leads. */
  standby: () => ConnectError;
  /**
   * Longest a call waits for a leader to be elected (ms, default 0): one made while the cluster
   * is between leaders goes to the next one, within its own deadline, rather than failing at once.
   */
  leaderWaitMs?: () => number;
}

/** PeerForwarder routes calls to the leader: the router of a standby. */
export interface PeerForwarder extends CallRouter {
  /** Fails every call in flight with UNAVAILABLE and closes the peer link. */
  stop(message: string): Promise<void>;
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
  const links = createPeerLinks(options);
  let linkedTo: string | undefined;
  let stopped = false;

  /** Sends a call to the leader over its link; a new leader's link replaces the old one's. */
  function forward(env: Letter, target: Target, leader: string) {
    // The leader changed: calls on the old link end with it (the old leader is gone or steps down).
    if (linkedTo !== leader) links.closeExcept(new Set([leader]));
    linkedTo = leader;
    links.forward(env, target, leader, `the leader ${leader}`);
  }

  return {
    route(env, target) {
      if (stopped) return links.fail(env, Code.Unavailable, "server is stopping");
      const signal = links.hold(env);
      const leader = options.leader();
      if (leader && leader !== options.self()) return forward(env, target, leader);
      // Between leaders: wait for the next one, within the call's deadline (abandon and stop abort the wait).
      const waitMs = options.leaderWaitMs?.() ?? 0;
      const deadlineFirst = env.deadline > 0 && env.deadline - Date.now() < waitMs;
      void leaderWithin(options, deadlineFirst ? env.deadline - Date.now() : waitMs, signal).then((next) => {
        if (signal.aborted) return;
        if (next) return forward(env, target, next);
        if (deadlineFirst) return links.fail(env, Code.DeadlineExceeded, `no leader was elected before the call's deadline: ${options.standby().rawMessage}`);
        const err = options.standby();
        links.fail(env, err.code, waitMs > 0 ? `${err.rawMessage} (waited ${waitMs} ms for one)` : err.rawMessage);
      });
    },
    abandon: links.abandon,
    // A standby delivers nothing itself: no worker's result or nested call can name a delivery here.
    settle() {},
    inflightOf: () => undefined,
    knows: () => false,
    async stop(message) {
      stopped = true;
      await links.stop(message);
    },
  };
}
