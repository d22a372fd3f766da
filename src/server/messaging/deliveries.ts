/**
 * Deliveries between mailboxes and workers: hands waiting messages to a container's worker up
 * to its concurrency, settles them with the worker's result, and takes them back when the
 * worker is gone — requests then fail with UNAVAILABLE (at most once), sends go back to the
 * front of the inbox (at least once).
 */
import { Code } from "@connectrpc/connect";
import type { DeliveryResult } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { Metrics } from "../metrics.js";
import type { Answers } from "./answers.js";
import { createBatchedCounter } from "./batched-counter.js";
import { EnvelopeState, type FrameSink } from "./envelope.js";
import { cancelDeliveryFrame, deliveryFrame } from "./frames.js";
import type { Letter, Mailbox } from "./mailbox.js";
import type { SendJournal } from "./send-journal.js";

/** Delay before a message a worker reported as not processed (UNAVAILABLE) is offered again. */
const UNPROCESSED_RETRY_MS = 100;
/** A failing handler gets at most one MessageFailed event per interval (ms). */
const FAILURE_EVENT_INTERVAL_MS = 1000;

/** Deliveries moves envelopes between mailboxes and the workers serving them. */
export interface Deliveries {
  /** Hands waiting messages of a mailbox to its worker, up to its concurrency. */
  pump(m: Mailbox): void;
  /** Settles a delivery with the worker's result; unknown or late results are dropped. */
  settle(link: FrameSink, result: DeliveryResult): void;
  /** The delivery a stream is handling, for nested calls. */
  inflightOf(link: FrameSink, deliveryId: number): Letter | undefined;
  /** Takes an in-flight envelope back from its worker (cancelled, expired): CancelDelivery. */
  withdraw(env: Letter, reason: string): void;
  /**
   * The worker lost the deliveries it had in flight (those on `link` only, when given):
   * requests fail with UNAVAILABLE saying `container "x" <why> while handling the request`,
   * sends go back to the front of the inbox.
   */
  release(m: Mailbox, why: string, link?: FrameSink): void;
  /** Forgets every delivery (the server stops; their callers are answered by the router). */
  clear(): void;
}

/** DeliveriesOptions are what deliveries need. */
export interface DeliveriesOptions {
  answers: Answers;
  events: EventRecorder;
  metrics?: Metrics;
  /** Called when a mailbox has no unsettled delivery left (a draining stop may finish). */
  onIdle?: (m: Mailbox) => void;
  /** Count each container's settled messages and their latency for the live stats. */
  countLoad?: boolean;
  /** The journal of durable sends: a settled send's entry is deleted from it. */
  journal?: SendJournal;
}

/** Creates the deliveries of a router. */
export function createDeliveries(options: DeliveriesOptions): Deliveries {
  const { answers } = options;
  const inflight = new Map<number, Letter>();
  let deliverySeq = 0;
  const delivered = options.metrics && createBatchedCounter(options.metrics.deliveries);
  const redeliveries = options.metrics?.redeliveries;
  const countLoad = options.countLoad ?? false;
  const idle = (m: Mailbox) => {
    if (m.inflight.size === 0) options.onIdle?.(m);
  };

  function pump(m: Mailbox) {
    const link = m.serving();
    if (!link) return;
    while (m.inflight.size < m.concurrency && !link.congested) {
      const env = m.inbox.shift();
      if (!env) break;
      env.deliveryId = ++deliverySeq;
      env.attempt++;
      delivered?.inc();
      if (env.attempt > 1) redeliveries?.inc();
      env.state = EnvelopeState.InFlight;
      env.link = link;
      inflight.set(env.deliveryId, env);
      m.inflight.add(env);
      const timeoutMs = env.expectsReply && env.deadline > 0 ? Math.max(1, env.deadline - Date.now()) : 0;
      link.push(deliveryFrame(env, m.name, timeoutMs));
    }
  }

  function unsettle(env: Letter): Mailbox {
    inflight.delete(env.deliveryId);
    const m = env.mailbox!;
    m.inflight.delete(env);
    env.link = undefined;
    return m;
  }

  function handlerFailed(m: Mailbox, env: Letter, code: number, message: string) {
    const now = Date.now();
    // A failing handler must not flood the event ring.
    if (now - m.lastFailureEventAt < FAILURE_EVENT_INTERVAL_MS) {
      m.suppressedFailures++;
      return;
    }
    const more = m.suppressedFailures > 0 ? ` (${m.suppressedFailures} more failures not shown)` : "";
    m.lastFailureEventAt = now;
    m.suppressedFailures = 0;
    options.events.record({
      type: "Warning",
      reason: "MessageFailed",
      kind: "Container",
      name: m.name,
      message: `handler failed on a message${env.sender ? ` from "${env.sender}"` : ""}: code ${code}: ${message}${more}`,
    });
  }

  return {
    pump,
    settle(link, result) {
      const env = inflight.get(Number(result.id));
      if (!env || env.link !== link) return;
      const m = unsettle(env);
      const err = result.error;
      if (!env.expectsReply && err?.code === Code.Unavailable) {
        // The worker did not process it (e.g. its host no longer runs the container): at least
        // once means it waits in the inbox again. Retried a little later, not in a tight loop
        // against a worker that keeps refusing.
        env.state = EnvelopeState.Queued;
        m.inbox.unshift(env);
        setTimeout(() => pump(m), UNPROCESSED_RETRY_MS).unref();
        idle(m);
        return;
      }
      env.state = EnvelopeState.Done;
      if (env.journalKey) options.journal?.remove(env.journalKey);
      if (countLoad) m.load.record(performance.now() - env.started, env.expectsReply, err !== undefined);
      if (env.expectsReply) {
        if (err) answers.fail(env, (err.code || Code.Unknown) as Code, err.message, m.name);
        else answers.reply(env, m.name, result.data, result.contentType);
      } else if (err) {
        handlerFailed(m, env, err.code || Code.Unknown, err.message);
      }
      pump(m);
      idle(m);
    },
    inflightOf(link, deliveryId) {
      const env = inflight.get(deliveryId);
      return env && env.link === link ? env : undefined;
    },
    withdraw(env, reason) {
      const link = env.link;
      const m = unsettle(env);
      env.state = EnvelopeState.Done;
      link?.push(cancelDeliveryFrame(env.deliveryId, reason));
      pump(m);
      idle(m);
    },
    release(m, why, link) {
      if (m.inflight.size === 0) return;
      const envs = [...m.inflight];
      // Backwards, so that sends going back to the front of the inbox keep their order.
      for (let i = envs.length - 1; i >= 0; i--) {
        const env = envs[i]!;
        if (link && env.link !== link) continue;
        unsettle(env);
        if (env.expectsReply) {
          env.state = EnvelopeState.Done;
          answers.fail(env, Code.Unavailable, `container "${m.name}" ${why} while handling the request`, m.name);
        } else {
          env.state = EnvelopeState.Queued;
          m.inbox.unshift(env);
        }
      }
      pump(m);
      idle(m);
    },
    clear() {
      for (const env of inflight.values()) env.mailbox?.inflight.delete(env);
      inflight.clear();
    },
  };
}
