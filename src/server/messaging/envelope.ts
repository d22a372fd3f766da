/**
 * The router's record of one message on its way: payload bytes (never decoded), who answers
 * whom, its deadline, and where it currently is (waiting for a service endpoint, in a
 * container's mailbox, or delivered and unsettled).
 */
import type { Code } from "@connectrpc/connect";
import type { ServerFrame } from "../../gen/k4s/v1/worker_service_pb.js";

/** Where an envelope is. */
export const EnvelopeState = {
  New: 0,
  /** In a service's queue, waiting for a ready endpoint. */
  Waiting: 1,
  /** In a container's inbox. */
  Queued: 2,
  /** Delivered to a worker, not yet settled. */
  InFlight: 3,
  /** Settled or abandoned; never reused. */
  Done: 4,
} as const;

/** CallAnswer is the outcome of a call as a unary caller receives it (code 0: success). */
export interface CallAnswer {
  code: Code | 0;
  message: string;
  data: Uint8Array;
  contentType: string;
  /** The container that took the message or answered. */
  container: string;
}

/** FrameSink is where the router writes frames: the server's end of a worker stream. */
export interface FrameSink {
  readonly closed: boolean;
  /**
   * The stream's peer reads slower than frames come: new deliveries wait in their inbox (whose
   * bounds refuse more) until the router is told the stream drained (Router.linkDrained).
   */
  readonly congested?: boolean;
  push(frame: ServerFrame): void;
}

/** Caller is a stream that makes calls: answers go back to it, its unanswered requests are kept by id. */
export interface Caller<M = unknown> extends FrameSink {
  readonly calls: Map<bigint, Envelope<M>>;
}

/** EnvelopeInit describes a new message. */
export interface EnvelopeInit<M> {
  /** The caller's id for its call (a stream Call's id; 0 for unary calls). */
  callId?: bigint;
  /** The stream that made the call; answers go there as CallResult frames. */
  origin?: Caller<M>;
  /** Receives the answer when the call came from the unary API. */
  onAnswer?: (answer: CallAnswer) => void;
  data: Uint8Array;
  contentType: string;
  expectsReply: boolean;
  /** The sending container, or "" for an outside client. */
  sender?: string;
  /** Absolute deadline in ms (0 or undefined: none). */
  deadline?: number;
}

/**
 * Envelope is one message: a fire-and-forget send (answered once queued, then kept until the
 * worker acks it) or a request (answered with the reply). Fields are mutable on purpose: the
 * router moves one object through its states instead of allocating per step. `M` is the
 * router's mailbox type, kept generic so this file depends on nothing of the router.
 */
export class Envelope<M = unknown> {
  state: number = EnvelopeState.New;
  /** Id of the current delivery attempt (0 before the first). */
  deliveryId = 0;
  attempt = 0;
  /** Absolute deadline in ms (0: none); for sends it only bounds the wait for an endpoint. */
  deadline: number;
  heapIndex = -1;
  /** When it entered the router (performance.now()), for the latency histograms; 0: not measured. */
  started = 0;
  /** Whether the caller got its answer (sends are answered when queued). */
  answered = false;
  /** The mailbox that holds it or whose worker handles it. */
  mailbox: M | undefined = undefined;
  /** The service it was sent through ("" when sent to a container), so it can go to another endpoint. */
  service = "";
  /** The stream the current delivery went to. */
  link: FrameSink | undefined = undefined;
  /** Its key in the journal of durable sends ("" when not journaled); deleted once settled. */
  journalKey = "";
  readonly callId: bigint;
  origin: Caller<M> | undefined;
  readonly onAnswer: ((answer: CallAnswer) => void) | undefined;
  readonly data: Uint8Array;
  readonly contentType: string;
  readonly expectsReply: boolean;
  readonly sender: string;

  constructor(init: EnvelopeInit<M>) {
    this.callId = init.callId ?? 0n;
    this.origin = init.origin;
    this.onAnswer = init.onAnswer;
    this.data = init.data;
    this.contentType = init.contentType;
    this.expectsReply = init.expectsReply;
    this.sender = init.sender ?? "";
    this.deadline = init.deadline ?? 0;
  }
}
