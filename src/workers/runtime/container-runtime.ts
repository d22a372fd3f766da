/**
 * The container runtime: runs one worker function, builds the context it sees, feeds it
 * deliveries and turns its replies into DeliveryResults. The runtime talks to the outside
 * through a ContainerLink, so the same code runs in a worker host, in an attached process, and
 * in memory for unit tests.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { format } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodePayload, encodePayload, payloadText, type Payload } from "../../api/payload.js";
import type { Delivery } from "../../gen/k4s/v1/worker_service_pb.js";
import type { CallOptions, CallReply } from "../../transport/session.js";
import type { WorkerFunction } from "./define-worker.js";
import type { RequestOptions, SendOptions, WorkerContext, WorkerMessage } from "./worker-context.js";

/**
 * IncomingDelivery is a Delivery frame in plain form, for the runtime of its container: the
 * schema's fields (a field added there must be carried by toIncomingDelivery, or this does not
 * compile), the id as a number, without the container's name.
 */
export type IncomingDelivery = Omit<Delivery, "$typeName" | "$unknown" | "id" | "container"> & { id: number };

/** Converts a Delivery frame into its plain form. */
export function toIncomingDelivery(d: Delivery): IncomingDelivery {
  return {
    id: Number(d.id),
    data: d.data,
    contentType: d.contentType,
    expectsReply: d.expectsReply,
    timeoutMs: d.timeoutMs,
    sender: d.sender,
    attempt: d.attempt,
  };
}

/** ResultError is the error of a DeliveryResult. */
export interface ResultError {
  code: number;
  message: string;
}

/** ContainerLink is how a container runtime reaches the server. */
export interface ContainerLink {
  call(options: CallOptions): Promise<CallReply>;
  /** Sends the DeliveryResult of a delivery. */
  result(id: number, payload: Payload | undefined, error: ResultError | undefined): void;
  /** Forwards output lines (stream "log" for ctx.log). */
  log(stream: string, lines: string[]): void;
}

/** ContainerRuntimeOptions configure a container runtime. */
export interface ContainerRuntimeOptions<P> {
  name: string;
  params: P;
  /** Handlers ctx.handle runs at once (spec.concurrency, default 1). */
  concurrency?: number;
  link: ContainerLink;
}

/** RunOutcome is how a worker function ended. */
export type RunOutcome = { ok: true } | { ok: false; error: unknown };

/** ContainerRuntime runs one worker function and feeds it deliveries. */
export interface ContainerRuntime<P = Record<string, unknown>> {
  readonly ctx: WorkerContext<P>;
  /** Hands a delivery to the worker. */
  deliver(delivery: IncomingDelivery): void;
  /** The caller gave up on a delivery: abort its signal. */
  cancel(id: number, reason: string): void;
  /** Ends ctx.messages now and aborts ctx.signal after graceMs. */
  stop(graceMs: number): void;
  /**
   * Forgets every delivery handed over so far (the session that carried them broke): their
   * signals abort and their results are never sent, since the server has failed or will
   * redeliver them, and a new session may reuse their ids.
   */
  abandonDeliveries(reason: string): void;
  /** Runs the worker function; resolves with how it ended (never rejects). */
  run(fn: WorkerFunction<P>): Promise<RunOutcome>;
  /** Deliveries handed over and not yet settled. */
  readonly unsettled: number;
}

/** The message whose handler is running, so nested requests can name their parent. */
const currentMessage = new AsyncLocalStorage<MessageImpl>();

/** Most log lines kept waiting for one flush; beyond that lines are counted and dropped. */
const MAX_PENDING_LOG_LINES = 1000;

/** Converts anything thrown into the code and message of a DeliveryResult error. */
export function toResultError(error: unknown): ResultError {
  if (error instanceof ConnectError) return { code: error.code, message: error.rawMessage };
  if (error instanceof Error) return { code: Code.Unknown, message: error.message || error.name };
  return { code: Code.Unknown, message: String(error) };
}

/** The fields of a delivery a message shows as they came (all but timeoutMs, shown as deadline). */
type ShownFields = "id" | "data" | "contentType" | "expectsReply" | "sender" | "attempt";
/** A field added to deliveries must be shown on messages too (and assigned below), or this does not compile. */
const everyFieldShown: Exclude<keyof IncomingDelivery, ShownFields | "timeoutMs"> extends never ? true : never = true;
void everyFieldShown;

/** A message shows the fields of its delivery as they came. */
interface MessageImpl extends Pick<IncomingDelivery, ShownFields> {}

class MessageImpl implements WorkerMessage {
  readonly deadline: number | undefined;
  settled = false;
  /** Set when its session broke: settling it sends nothing. */
  abandoned = false;
  private decoded = false;
  private cached: unknown = undefined;
  private controller: AbortController | undefined = undefined;
  private abortReason: string | undefined = undefined;

  constructor(
    d: IncomingDelivery,
    private readonly runtime: RuntimeImpl<unknown>,
  ) {
    // Each field assigned here, in this order (not Object.assign), so every message has one shape:
    // one is made per delivery.
    this.id = d.id;
    this.data = d.data;
    this.contentType = d.contentType;
    this.expectsReply = d.expectsReply;
    this.sender = d.sender;
    this.attempt = d.attempt;
    this.deadline = d.timeoutMs > 0 ? Date.now() + d.timeoutMs : undefined;
  }

  get value(): unknown {
    if (!this.decoded) {
      this.cached = decodePayload(this.data, this.contentType);
      this.decoded = true;
    }
    return this.cached;
  }
  json<U>(): U {
    return this.value as U;
  }
  get text(): string {
    return payloadText(this.data);
  }
  // Created on first use: most handlers never look at the signal.
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(new ConnectError(this.abortReason, Code.Canceled));
    }
    return this.controller.signal;
  }

  abort(reason: string): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(new ConnectError(reason, Code.Canceled));
  }

  reply(value?: unknown, options?: { contentType?: string }): void {
    this.assertOpen("reply");
    let payload: Payload;
    try {
      payload = encodePayload(value, options?.contentType);
    } catch (err) {
      this.settle(undefined, toResultError(err));
      throw err;
    }
    this.settle(payload, undefined);
  }

  fail(error: unknown): void {
    this.assertOpen("fail");
    this.settle(undefined, toResultError(error));
  }

  ack(): void {
    this.assertOpen("ack");
    this.settle(undefined, undefined);
  }

  /** Settles with a default when the handler left the message open. */
  settleDefault(error?: unknown): void {
    if (this.settled) return;
    if (error !== undefined) this.settle(undefined, toResultError(error));
    else if (this.expectsReply) this.settle(undefined, { code: Code.Unknown, message: "handler finished without replying" });
    else this.settle(undefined, undefined);
  }

  private assertOpen(op: string): void {
    if (this.settled) throw new ConnectError(`cannot ${op} message ${this.id}: it was already settled`, Code.FailedPrecondition);
  }

  private settle(payload: Payload | undefined, error: ResultError | undefined): void {
    this.settled = true;
    this.runtime.settled(this, payload, error);
  }
}

class RuntimeImpl<P> implements ContainerRuntime<P> {
  readonly ctx: WorkerContext<P>;
  /** Deliveries not yet taken, from inboxHead on (a queue: shift() copies a long array). */
  private inbox: (MessageImpl | undefined)[] = [];
  private inboxHead = 0;
  private readonly open = new Map<number, MessageImpl>();
  private waiter: ((m: MessageImpl | undefined) => void) | undefined;
  private stopped = false;
  private readonly cutoff = new AbortController();
  private readonly stopAsked = new AbortController();
  private graceTimer: NodeJS.Timeout | undefined;
  /** The message the for-await loop is on, settled when the loop moves on. */
  private loopCurrent: MessageImpl | undefined;
  private logLines: string[] = [];
  private logDropped = 0;
  private logScheduled = false;
  private readonly concurrency: number;

  constructor(private readonly options: ContainerRuntimeOptions<P>) {
    this.concurrency = Math.max(1, options.concurrency || 1);
    const self = this;
    const messages: AsyncIterable<WorkerMessage> = {
      [Symbol.asyncIterator]() {
        return {
          // Not async: a message already waiting resolves the loop's await without the extra
          // promise and turns of an async function awaiting another one.
          // Whatever goes wrong comes out as a rejected promise, never a throw, as the
          // async-iterator protocol asks (a second next() while one waits is refused that way).
          next(): Promise<IteratorResult<WorkerMessage>> {
            try {
              self.settleLoopCurrent();
              const m = self.takeQueued();
              if (m) {
                self.loopCurrent = m;
                return Promise.resolve({ value: m, done: false });
              }
              return self.nextMessage().then((w) => {
                self.loopCurrent = w;
                return w ? { value: w, done: false } : { value: undefined, done: true };
              });
            } catch (err) {
              return Promise.reject(err);
            }
          },
          // break or throw in the loop: the message is settled by run() with the outcome.
          async return() {
            return { value: undefined, done: true };
          },
        };
      },
    };
    const parent = () => this.parent();
    this.ctx = {
      get deadline() {
        return parent()?.deadline;
      },
      name: options.name,
      params: options.params,
      concurrency: this.concurrency,
      messages,
      signal: this.cutoff.signal,
      stopping: this.stopAsked.signal,
      send: (target, value, opts) => this.send(target, value, opts),
      request: (target, value, opts) => this.request(target, value, opts),
      log: (...args) => this.log("log", format(...args)),
      handle: (handler) => this.handle(handler),
    };
  }

  get unsettled(): number {
    return this.open.size;
  }

  deliver(d: IncomingDelivery): void {
    const m = new MessageImpl(d, this as RuntimeImpl<unknown>);
    this.open.set(d.id, m);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(m);
    } else {
      this.inbox.push(m);
    }
  }

  /** The oldest delivery not yet taken, if any. */
  private takeQueued(): MessageImpl | undefined {
    const inbox = this.inbox;
    if (this.inboxHead >= inbox.length) return undefined;
    const m = inbox[this.inboxHead];
    inbox[this.inboxHead++] = undefined;
    if (this.inboxHead === inbox.length) {
      inbox.length = 0;
      this.inboxHead = 0;
    } else if (this.inboxHead >= 1024 && this.inboxHead * 2 >= inbox.length) {
      // Drop the taken slots once they are half of the array, so a queue that never empties
      // does not grow for ever.
      this.inbox = inbox.slice(this.inboxHead);
      this.inboxHead = 0;
    }
    return m;
  }

  cancel(id: number, reason: string): void {
    this.open.get(id)?.abort(reason || "cancelled by the caller");
  }

  stop(graceMs: number): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopAsked.abort(new ConnectError(`container ${this.options.name} is stopping`, Code.Canceled));
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(undefined);
    }
    this.graceTimer = setTimeout(() => this.cutOff(`container ${this.options.name} was stopped`), Math.max(0, graceMs));
  }

  async run(fn: WorkerFunction<P>): Promise<RunOutcome> {
    let outcome: RunOutcome;
    try {
      await fn(this.ctx);
      outcome = { ok: true };
    } catch (error) {
      outcome = { ok: false, error };
    }
    this.settleLoopCurrent(outcome.ok ? undefined : outcome.error);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.cutOff(`container ${this.options.name} finished`);
    this.flushLogs();
    return outcome;
  }

  abandonDeliveries(reason: string): void {
    for (const m of this.open.values()) {
      m.abandoned = true;
      m.abort(reason);
    }
    this.open.clear();
    this.inbox = [];
    this.inboxHead = 0;
  }

  settled(m: MessageImpl, payload: Payload | undefined, error: ResultError | undefined): void {
    if (m.abandoned) return;
    this.open.delete(m.id);
    this.options.link.result(m.id, payload, error);
  }

  private cutOff(reason: string): void {
    if (!this.cutoff.signal.aborted) this.cutoff.abort(new ConnectError(reason, Code.Canceled));
    for (const m of this.open.values()) m.abort(reason);
  }

  private settleLoopCurrent(error?: unknown): void {
    const m = this.loopCurrent;
    this.loopCurrent = undefined;
    m?.settleDefault(error);
  }

  private nextMessage(): Promise<MessageImpl | undefined> {
    const m = this.takeQueued();
    if (m) return Promise.resolve(m);
    if (this.stopped) return Promise.resolve(undefined);
    if (this.waiter) throw new ConnectError(`container ${this.options.name}: messages are already being read`, Code.FailedPrecondition);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  private async handle(handler: (msg: WorkerMessage) => unknown): Promise<void> {
    // A count and one waiter, not a race over the running handlers: Promise.race would add a
    // reaction to every running handler for each message taken at full concurrency.
    let running = 0;
    let freed: (() => void) | undefined;
    const finished = () => {
      running--;
      const w = freed;
      freed = undefined;
      w?.();
    };
    for (;;) {
      while (running >= this.concurrency) await new Promise<void>((r) => (freed = r));
      const m = this.takeQueued() ?? (await this.nextMessage());
      if (!m) break;
      running++;
      // runHandler settles the message whatever the handler does and never rejects.
      void currentMessage.run(m, () => this.runHandler(m, handler)).then(finished, finished);
    }
    while (running > 0) await new Promise<void>((r) => (freed = r));
  }

  private async runHandler(m: MessageImpl, handler: (msg: WorkerMessage) => unknown): Promise<void> {
    try {
      const value = await handler(m);
      if (m.settled) return;
      if (m.expectsReply) m.reply(value);
      else m.ack();
    } catch (err) {
      if (!m.settled) m.fail(err);
    }
  }

  /** The message a call made now is made on behalf of. */
  private parent(): MessageImpl | undefined {
    const m = currentMessage.getStore() ?? this.loopCurrent;
    return m && !m.settled ? m : undefined;
  }

  private send(target: string, value: unknown, opts?: SendOptions): Promise<void> {
    let p: Promise<void>;
    try {
      const payload = encodePayload(value, opts?.contentType);
      p = this.options.link
        .call({
          target,
          data: payload.data,
          contentType: payload.contentType,
          expectsReply: false,
          sender: this.options.name,
          parentDelivery: this.parent()?.id,
        })
        .then(() => undefined);
    } catch (err) {
      p = Promise.reject(err);
    }
    // A worker that fires and forgets must not crash its host on an unhandled rejection.
    p.catch(() => {});
    return p;
  }

  private async request<T>(target: string, value: unknown, opts: RequestOptions = {}): Promise<T> {
    const payload = encodePayload(value, opts.contentType);
    const parent = this.parent();
    let timeoutMs = opts.timeoutMs;
    if (timeoutMs === undefined && parent?.deadline !== undefined) timeoutMs = Math.max(1, parent.deadline - Date.now());
    // One controller fed by the container's cut-off, the caller's signal and the parent
    // message's cancel; the listeners go when the call ends, so the container's long-lived
    // signal does not accumulate one per request made over its lifetime.
    const signals = [this.cutoff.signal];
    if (opts.signal) signals.push(opts.signal);
    if (parent) signals.push(parent.signal);
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    for (const s of signals) {
      if (s.aborted) controller.abort();
      else s.addEventListener("abort", onAbort, { once: true });
    }
    try {
      const reply = await this.options.link.call({
        target,
        data: payload.data,
        contentType: payload.contentType,
        expectsReply: true,
        timeoutMs,
        sender: this.options.name,
        parentDelivery: parent?.id,
        signal: controller.signal,
      });
      return decodePayload(reply.data, reply.contentType) as T;
    } finally {
      for (const s of signals) s.removeEventListener("abort", onAbort);
    }
  }

  private log(stream: string, text: string): void {
    for (const line of text.split("\n")) {
      if (this.logLines.length >= MAX_PENDING_LOG_LINES) this.logDropped++;
      else this.logLines.push(line);
    }
    if (!this.logScheduled) {
      this.logScheduled = true;
      setImmediate(() => this.flushLogs(stream));
    }
  }

  private flushLogs(stream = "log"): void {
    this.logScheduled = false;
    if (this.logLines.length === 0) return;
    const lines = this.logLines;
    this.logLines = [];
    if (this.logDropped > 0) {
      lines.push(`(${this.logDropped} log lines dropped: more than ${MAX_PENDING_LOG_LINES} in one tick)`);
      this.logDropped = 0;
    }
    this.options.link.log(stream, lines);
  }
}

/** Creates the runtime of one container: its context and its delivery bookkeeping. */
export function createContainerRuntime<P>(options: ContainerRuntimeOptions<P>): ContainerRuntime<P> {
  return new RuntimeImpl(options);
}
