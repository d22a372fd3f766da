/**
 * The router's record of one message on its way: payload bytes (never decoded), who answers
 * whom, its deadline, and where it currently is (waiting for a service endpoint, in a
 * container's inbox, or delivered and unsettled).
 */
import type { Code } from "@connectrpc/connect";
import type { ContainerRecord } from "./container-record.js";
import type { ServiceRoute } from "./service-route.js";
import type { WorkerLink } from "./worker-link.js";

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

/** AnswerFn receives the outcome of a unary call (code 0: success). */
export type AnswerFn = (code: Code | 0, message: string, data: Uint8Array, contentType: string, container: string) => void;

/**
 * Envelope is one message: a fire-and-forget send (answered once queued, then kept until the
 * worker acks it) or a request (answered with the reply). Fields are mutable on purpose: the
 * router moves one object through its states instead of allocating per step.
 */
export class Envelope {
  state: number = EnvelopeState.New;
  /** Id of the current delivery attempt (0 before the first). */
  deliveryId = 0;
  attempt = 0;
  /** Absolute deadline in ms (0: none); for sends it only bounds the wait for an endpoint. */
  deadline = 0;
  heapIndex = -1;
  /** When it entered the router (performance.now()), for the latency histograms; 0: not measured. */
  started = 0;
  /** Whether the caller got its answer (sends are answered when queued). */
  answered = false;
  /** The container whose inbox holds it or whose worker handles it. */
  container: ContainerRecord | undefined = undefined;
  /** The service it was sent through, so it can go to another endpoint. */
  service: ServiceRoute | undefined = undefined;
  /** The session the current delivery went to. */
  session: WorkerLink | undefined = undefined;

  constructor(
    /** The caller's id for its call (a stream Call's id; 0 for unary calls). */
    readonly callId: bigint,
    /** The session that made the call; answers go there as CallResult frames. */
    public origin: WorkerLink | undefined,
    /** Receives the answer when the call came from the unary API. */
    readonly onAnswer: AnswerFn | undefined,
    readonly data: Uint8Array,
    readonly contentType: string,
    readonly expectsReply: boolean,
    /** The sending container, or "" for an outside client. */
    readonly sender: string,
  ) {}
}
