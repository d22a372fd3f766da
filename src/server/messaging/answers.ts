/**
 * How the router answers callers: once per envelope, as a CallResult frame on the caller's
 * stream or through a unary caller's callback, timing requests for the latency histogram.
 */
import { Code } from "@connectrpc/connect";
import { codeName } from "../../api/code-name.js";
import type { Metrics } from "../metrics.js";
import type { DeadlineQueue } from "./deadline-queue.js";
import { callErrorFrame, callReplyFrame } from "./frames.js";
import type { Letter } from "./mailbox.js";
import type { SendJournal } from "./send-journal.js";

const EMPTY = new Uint8Array(0);

/** Answers gives each call its one answer. */
export interface Answers {
  /** A request's reply, from the container that answered. */
  reply(env: Letter, container: string, data: Uint8Array, contentType: string): void;
  /** A send was accepted: it is queued at a container, and the worker's ack is the router's business now. */
  accept(env: Letter, container: string): void;
  /** The call failed; `container` names the one that failed it, when one did. */
  fail(env: Letter, code: Code, message: string, container?: string): void;
  /**
   * The call failed before any worker had it (no place took it): it ran nowhere, and its caller
   * is told so (CallResult.refused), so that a server that forwarded it may send it elsewhere.
   * One delivered to a worker here once is answered as by fail (a worker's error never reads as
   * a refusal).
   */
  refuse(env: Letter, code: Code, message: string, container?: string): void;
  /** Forgets a request that ends without an answer (its caller went away). */
  forget(env: Letter): void;
}

/** AnswersOptions are what answering needs. */
export interface AnswersOptions {
  /** Where requests wait for their deadline; an answered request leaves it. */
  deadlines: DeadlineQueue<Letter>;
  metrics?: Metrics;
  /** The journal of durable sends: a journaled send that fails before it was accepted leaves it. */
  journal?: SendJournal;
}

/** Creates the answering of the router. */
export function createAnswers(options: AnswersOptions): Answers {
  const { deadlines } = options;
  const requestSeconds = options.metrics?.requestSeconds;
  const latencyByCode = new Map<number, { observe(v: number): void }>();

  const settled = (env: Letter, code: Code | 0): boolean => {
    if (env.answered) return false;
    env.answered = true;
    if (env.expectsReply) {
      deadlines.remove(env);
      env.origin?.calls.delete(env.callId);
      if (env.started > 0 && requestSeconds) {
        let h = latencyByCode.get(code);
        if (!h) latencyByCode.set(code, (h = requestSeconds.labels(codeName(code))));
        h.observe((performance.now() - env.started) / 1000);
      }
    }
    return true;
  };

  const reply = (env: Letter, container: string, data: Uint8Array, contentType: string) => {
    if (!settled(env, 0)) return;
    if (env.origin) env.origin.push(callReplyFrame(env.callId, data, contentType, container));
    else env.onAnswer?.({ code: 0, message: "", data, contentType, container });
  };

  const fail = (env: Letter, code: Code, message: string, container: string, refused: boolean) => {
    if (!settled(env, code)) return;
    // Its caller is told it failed: it must not be delivered after a restart either.
    if (env.journalKey) options.journal?.remove(env.journalKey);
    if (env.origin) env.origin.push(callErrorFrame(env.callId, code, message, container, refused));
    else env.onAnswer?.({ code, message, data: EMPTY, contentType: "", container });
  };

  return {
    reply,
    accept: (env, container) => reply(env, container, EMPTY, ""),
    fail: (env, code, message, container = "") => fail(env, code, message, container, false),
    refuse: (env, code, message, container = "") => fail(env, code, message, container, env.attempt === 0),
    forget(env) {
      if (env.expectsReply) env.origin?.calls.delete(env.callId);
    },
  };
}
