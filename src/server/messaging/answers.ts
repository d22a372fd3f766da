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

  return {
    reply,
    accept: (env, container) => reply(env, container, EMPTY, ""),
    fail(env, code, message, container = "") {
      if (!settled(env, code)) return;
      // Its caller is told it failed: it must not be delivered after a restart either.
      if (env.journalKey) options.journal?.remove(env.journalKey);
      if (env.origin) env.origin.push(callErrorFrame(env.callId, code, message, container));
      else env.onAnswer?.({ code, message, data: EMPTY, contentType: "", container });
    },
    forget(env) {
      if (env.expectsReply) env.origin?.calls.delete(env.callId);
    },
  };
}
