/**
 * What a worker function sees: its context (params, messages, send/request, log, signals) and
 * the messages it handles.
 */

/** WorkerMessage is one delivered message, settled exactly once by reply, fail or ack. */
export interface WorkerMessage<T = unknown> {
  /** Delivery id (unique within the session). */
  readonly id: number;
  /** The decoded payload (JSON parsed, text as string, other content types as bytes). */
  readonly value: T;
  /** The decoded payload, typed by the caller. */
  json<U = T>(): U;
  /** The payload bytes as UTF-8 text. */
  readonly text: string;
  readonly data: Uint8Array;
  readonly contentType: string;
  /** Whether the sender waits for a reply (a request). */
  readonly expectsReply: boolean;
  /** The sending container, or "" for an outside client. */
  readonly sender: string;
  /** 1 on the first delivery, more on redelivery. */
  readonly attempt: number;
  /** The caller's deadline in ms since the epoch, or undefined. */
  readonly deadline: number | undefined;
  /** Aborts when the caller gave up (cancel or deadline) or the container is cut off. */
  readonly signal: AbortSignal;
  /** Whether reply, fail or ack was called. */
  readonly settled: boolean;
  /** Answers a request with a value (for a fire-and-forget message it acks). */
  reply(value?: unknown, options?: { contentType?: string }): void;
  /** Finishes the message with an error: the code of a ConnectError, else UNKNOWN. */
  fail(error: unknown): void;
  /** Finishes a message without a reply. */
  ack(): void;
}

/** SendOptions tune ctx.send. */
export interface SendOptions {
  contentType?: string;
}

/** RequestOptions tune ctx.request. */
export interface RequestOptions {
  /** Milliseconds to wait (default: what remains of the message being handled, else 30000). */
  timeoutMs?: number;
  signal?: AbortSignal;
  contentType?: string;
}

/** WorkerContext is what a worker function works with. */
export interface WorkerContext<P = Record<string, unknown>> {
  /** The container's name. */
  readonly name: string;
  /** The container's spec.parameters. */
  readonly params: P;
  /** Deliveries the container may have in flight at once (spec.concurrency, at least 1). */
  readonly concurrency: number;
  /** Delivered messages; ends when the container is asked to stop. */
  readonly messages: AsyncIterable<WorkerMessage>;
  /** Aborts when the container is cut off (its stop's grace period passed) or finished. */
  readonly signal: AbortSignal;
  /** Aborts as soon as a stop was asked (messages end then; signal follows after the grace). */
  readonly stopping: AbortSignal;
  /**
   * The deadline (ms since the epoch) of the message being handled here (inside a handle()
   * handler, or the for-await loop's current message), or undefined when it has none.
   */
  readonly deadline: number | undefined;
  /** Sends a fire-and-forget message to a container or service; resolves once queued. */
  send(target: string, value: unknown, options?: SendOptions): Promise<void>;
  /**
   * Sends a request and resolves with the decoded reply. Made while handling a message, it
   * inherits what remains of that message's deadline and is cancelled with it.
   */
  request<T = unknown>(target: string, value: unknown, options?: RequestOptions): Promise<T>;
  /** Logs a line (formatted like console.log) to the container's log. */
  log(...args: unknown[]): void;
  /**
   * Handles messages with up to spec.concurrency handlers at once until messages end; a
   * handler's return value is the reply, a thrown error fails the message.
   */
  handle(handler: (msg: WorkerMessage) => unknown): Promise<void>;
}
