/**
 * A container's mailbox in the router: its inbox (FIFO, bounded by spec.queueLimit and the
 * server's maxInboxBytes), the
 * deliveries its worker has not settled (at most spec.concurrency), where deliveries go, and
 * which messages it takes now. It exists from the moment the Container does, so messages sent
 * before the worker is up wait for it. The lifecycle controller says where and whether
 * (Availability); the router does the rest.
 */
import { Code } from "@connectrpc/connect";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Envelope, FrameSink } from "./envelope.js";
import { LoadCounters } from "../stats/load-counters.js";
import { Inbox } from "./inbox.js";
import { formatBytes } from "../../api/byte-size.js";

/** An envelope as the router moves it between mailboxes. */
export type Letter = Envelope<Mailbox>;

/** Default deliveries in flight per container. */
export const DEFAULT_CONCURRENCY = 1;
/** Default messages waiting in an inbox beyond those in flight. */
export const DEFAULT_QUEUE_LIMIT = 1000;
/**
 * Default payload bytes waiting in one inbox (the server's maxInboxBytes): 64 MiB, room for
 * four of the largest messages.
 */
export const DEFAULT_INBOX_BYTES = 64 * 1024 * 1024;

/**
 * Why a queue holding `queued` envelopes of `bytes` refuses one more of `size` bytes under a
 * bound of `maxBytes`, or undefined when it takes it. One message larger than the bound is
 * still taken by an empty queue, so the bound never makes a message undeliverable.
 */
export function overBytes(what: string, queued: number, bytes: number, size: number, maxBytes: number): string | undefined {
  if (queued === 0 || bytes + size <= maxBytes) return undefined;
  return `${what} is full: ${formatBytes(bytes)} waiting, ${formatBytes(size)} more would pass the server's maxInboxBytes of ${formatBytes(maxBytes)} (${maxBytes} bytes)`;
}

/**
 * Availability is what the lifecycle says about a container, as a level: set it again with the
 * same value and nothing happens.
 */
export interface Availability {
  /** The stream its deliveries go to; undefined while no worker serves it. */
  link: FrameSink | undefined;
  /** Whether new deliveries may go to link now (false while starting or stopping). */
  ready: boolean;
  /** Which new messages it takes: all, only sends (it ended for good), none (it is being deleted). */
  accepts: "all" | "sends" | "none";
  /** Why it is not ready, in words a user can act on (said when a waiting request times out). */
  notReady: string;
  /** What a refused message is answered, when it does not take all. */
  refusal: string;
}

/** Mailbox is the router's state of one container. */
export class Mailbox {
  readonly inbox = new Inbox<Letter>();
  /** Delivered, unsettled envelopes. */
  readonly inflight = new Set<Letter>();
  /** What it settled, for the live stats. */
  readonly load = new LoadCounters();
  labels: Readonly<Record<string, string>> = {};
  concurrency = DEFAULT_CONCURRENCY;
  queueLimit = DEFAULT_QUEUE_LIMIT;
  /** Whether sends to it are journaled in the store before they are accepted (spec.delivery durable). */
  durable = false;
  link: FrameSink | undefined = undefined;
  ready = false;
  accepts: Availability["accepts"] = "all";
  /** Why it is not ready; until the lifecycle first says where its worker is, that nothing serves it yet. */
  notReady = "no worker serves it yet";
  refusal = "";
  /** How often another server of a cluster took the container over from this one (takeBack). */
  letGoes = 0;
  /** Throttle of the MessageFailed events of a failing handler. */
  lastFailureEventAt = 0;
  suppressedFailures = 0;

  constructor(
    readonly name: string,
    readonly uid: string,
  ) {}

  /** Takes labels and limits of a stored Container. */
  apply(obj: Container): void {
    const spec = obj.spec;
    this.labels = obj.metadata?.labels ?? {};
    this.concurrency = spec && spec.concurrency > 0 ? spec.concurrency : DEFAULT_CONCURRENCY;
    this.queueLimit = spec && spec.queueLimit > 0 ? spec.queueLimit : DEFAULT_QUEUE_LIMIT;
    this.durable = spec?.delivery === "durable";
  }

  /** The stream deliveries go to right now, if the container takes them. */
  serving(): FrameSink | undefined {
    const link = this.link;
    return this.ready && link && !link.closed ? link : undefined;
  }

  /**
   * Why the mailbox refuses an envelope now, or undefined when it takes it: it is ending, or its
   * inbox holds queueLimit messages or would pass maxBytes of payload.
   */
  refuses(env: Letter, maxBytes = DEFAULT_INBOX_BYTES): [Code, string] | undefined {
    if (this.accepts === "none" || (this.accepts === "sends" && env.expectsReply)) return [Code.Unavailable, this.refusal];
    if (this.inbox.live >= this.queueLimit) {
      return [Code.ResourceExhausted, `inbox of container "${this.name}" is full (queueLimit ${this.queueLimit})`];
    }
    const full = overBytes(`inbox of container "${this.name}"`, this.inbox.live, this.inbox.bytes, env.data.byteLength, maxBytes);
    return full === undefined ? undefined : [Code.ResourceExhausted, full];
  }
}
