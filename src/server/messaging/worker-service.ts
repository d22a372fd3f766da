/**
 * WorkerService.Connect: the handshake (Hello or Attach, answered by Welcome or an error
 * status), the frame dispatch of a live session, the session registry, and liveness (a
 * heartbeat when the server was otherwise silent for an interval; a session silent for three
 * intervals is declared lost).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { parseTarget, type Target } from "../../api/target.js";
import {
  ConnectResponseSchema,
  type Call,
  type ConnectRequest,
  type ConnectResponse,
  type Hello,
  type WorkerFrame,
  type WorkerService,
} from "../../gen/k4s/v1/worker_service_pb.js";
import type { CallContext, ServiceImpl } from "../grpc-adapter.js";
import type { LogStore } from "../logs.js";
import type { Metrics } from "../metrics.js";
import type { ContainerLifecycle } from "./container-lifecycle.js";
import { createBatchedCounter } from "./batched-counter.js";
import { Envelope } from "./envelope.js";
import { callResultFrame, heartbeatFrame, welcomeFrame } from "./frames.js";
import { DEFAULT_REQUEST_TIMEOUT_MS, type Router } from "./router.js";
import { MAX_QUEUED_FRAMES, Session } from "./session.js";

/** Unanswered requests one session may have at once. */
export const MAX_PENDING_CALLS = 65_536;
/** Parsed targets kept, since the same few targets repeat on the hot path. */
const TARGET_CACHE_SIZE = 1024;

/** WorkerServiceOptions are the Connect handler's dependencies. */
export interface WorkerServiceOptions {
  router: Router;
  lifecycle: () => ContainerLifecycle;
  logs: LogStore;
  heartbeatIntervalMs: number;
  metrics?: Metrics;
}

/** WorkerSessions serves Connect and keeps the live sessions. */
export interface WorkerSessions {
  readonly impl: ServiceImpl<typeof WorkerService>;
  /** Live host sessions, in connection order. */
  hosts(): Iterable<Session>;
  /** Ends a session (idempotent); with an error, the stream ends with that status. */
  lose(s: Session, err?: ConnectError): void;
  /** Starts the liveness timer. */
  start(): void;
  /** Ends every session with `err` and stops the liveness timer. */
  stop(err: ConnectError): void;
}

/** Creates the WorkerService handler and its session registry. */
export function createWorkerSessions(options: WorkerServiceOptions): WorkerSessions {
  const { router, logs } = options;
  const hb = options.heartbeatIntervalMs;
  const sessions = new Map<string, Session>();
  const targets = new Map<string, Target>();
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;
  const sendCounter = options.metrics && createBatchedCounter(options.metrics.messages.labels("send"));
  const requestCounter = options.metrics && createBatchedCounter(options.metrics.messages.labels("request"));

  function* hosts(): Iterable<Session> {
    for (const s of sessions.values()) if (s.role === "host" && !s.closed) yield s;
  }

  function countRole(role: string, delta: number) {
    options.metrics?.sessions.inc({ role }, delta);
  }

  function lose(s: Session, err?: ConnectError) {
    if (!sessions.delete(s.id)) {
      s.close(err);
      return;
    }
    countRole(s.role, -1);
    s.close(err);
    if (s.calls.size > 0) {
      for (const env of [...s.calls.values()]) router.abandon(env, 0, `caller session ${s.id} ended`);
    }
    options.lifecycle().sessionLost(s);
  }

  function register(s: Session) {
    sessions.set(s.id, s);
    countRole(s.role, 1);
    s.push(welcomeFrame(s.id, s.name, hb));
  }

  function overflow(s: Session) {
    lose(s, new ConnectError(`session "${s.name}" does not read its stream: more than ${MAX_QUEUED_FRAMES} frames queued`, Code.ResourceExhausted));
  }

  function target(text: string): Target {
    let t = targets.get(text);
    if (!t) {
      t = parseTarget(text);
      if (targets.size >= TARGET_CACHE_SIZE) targets.clear();
      targets.set(text, t);
    }
    return t;
  }

  function uniqueName(base: string): string {
    const taken = (n: string) => {
      for (const s of sessions.values()) if (s.name === n && s.role !== "attached") return true;
      return false;
    };
    if (!taken(base)) return base;
    for (let i = 2; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
  }

  function openHello(hello: Hello): Session {
    const role = hello.role === "" ? "host" : hello.role;
    if (role !== "host" && role !== "client") {
      throw new ConnectError(`hello.role must be "host" or "client", got "${hello.role}"`, Code.InvalidArgument);
    }
    if (hello.capacity < 0) throw new ConnectError(`hello.capacity must be 0 (no limit) or more, got ${hello.capacity}`, Code.InvalidArgument);
    if (hello.name.length > 253) throw new ConnectError(`hello.name is longer than 253 characters`, Code.InvalidArgument);
    const base = hello.name || role;
    if (role === "host") {
      // The same host reconnecting before its old stream was declared lost: the new session
      // takes over what the old one ran, under the same name.
      const running = new Set(hello.running.map((r) => `${r.name}/${r.uid}`));
      for (const old of hosts()) {
        if (old.name !== base) continue;
        if (![...old.bound].some((c) => running.has(`${c.name}/${c.uid}`))) continue;
        const s = new Session(randomUUID(), base, "host", new Set(hello.modules), hello.capacity, hello.canSpawn, overflow);
        register(s);
        options.lifecycle().hostReplaced(old, s);
        lose(old, new ConnectError(`host "${base}" reconnected on a new session`, Code.Unavailable));
        options.lifecycle().hostJoined(s, hello.running);
        return s;
      }
    }
    const s = new Session(randomUUID(), uniqueName(base), role, new Set(hello.modules), hello.capacity, hello.canSpawn, overflow);
    register(s);
    if (role === "host") options.lifecycle().hostJoined(s, hello.running);
    return s;
  }

  function handleCall(s: Session, call: Call) {
    let t: Target;
    try {
      t = target(call.target);
    } catch (err) {
      s.push(callResultFrame(call.id, Code.InvalidArgument, ConnectError.from(err).rawMessage, undefined, "", ""));
      return;
    }
    const sender = s.role === "attached" ? (s.attached?.name ?? "") : s.role === "host" ? call.from : "";
    const env = new Envelope(call.id, s, undefined, call.data, call.contentType, call.expectsReply, sender);
    if (call.expectsReply) {
      if (s.calls.has(call.id)) {
        s.push(callResultFrame(call.id, Code.InvalidArgument, `call id ${call.id} is already used by an unanswered request`, undefined, "", ""));
        return;
      }
      if (s.calls.size >= MAX_PENDING_CALLS) {
        s.push(callResultFrame(call.id, Code.ResourceExhausted, `too many unanswered requests on this session (limit ${MAX_PENDING_CALLS})`, undefined, "", ""));
        return;
      }
      let deadline = Date.now() + (call.timeoutMs > 0 ? call.timeoutMs : DEFAULT_REQUEST_TIMEOUT_MS);
      if (call.parentDelivery !== 0n) {
        const parent = router.inflightOf(s, Number(call.parentDelivery));
        if (parent && parent.expectsReply && parent.deadline > 0 && parent.deadline < deadline) deadline = parent.deadline;
      }
      env.deadline = deadline;
      s.calls.set(call.id, env);
      requestCounter?.inc();
    } else {
      sendCounter?.inc();
    }
    router.route(env, t);
  }

  function handleFrame(s: Session, f: WorkerFrame) {
    const frame = f.frame;
    switch (frame.case) {
      case "result":
        router.settle(s, frame.value);
        return;
      case "call":
        handleCall(s, frame.value);
        return;
      case "cancelCall": {
        const env = s.calls.get(frame.value.id);
        if (env) router.abandon(env, Code.Canceled, "cancelled by the caller");
        return;
      }
      case "state":
        if (s.role === "host") options.lifecycle().stateReported(s, frame.value);
        return;
      case "log": {
        const v = frame.value;
        const ok = s.role === "host" ? router.containers.has(v.container) : s.role === "attached" && s.attached?.name === v.container;
        if (ok) logs.append(v.container, v.stream || "log", v.lines);
        return;
      }
      case "heartbeat":
        return;
      case "hello":
      case "attach":
        lose(s, new ConnectError(`${frame.case} is only valid as the first frame of a stream`, Code.InvalidArgument));
        return;
      default:
        return;
    }
  }

  async function readLoop(it: AsyncIterator<ConnectRequest>, s: Session) {
    try {
      while (!s.closed) {
        const r = await it.next();
        if (r.done) break;
        s.lastReceived = Date.now();
        const frames = r.value.frames;
        for (let i = 0; i < frames.length && !s.closed; i++) handleFrame(s, frames[i]!);
      }
    } catch {
      // The stream broke: the session is lost like a closed one.
    }
    lose(s);
  }

  async function firstRequest(it: AsyncIterator<ConnectRequest>, signal: AbortSignal): Promise<ConnectRequest> {
    const limit = Math.max(3 * hb, 1000);
    let timeout: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const r = await Promise.race([
        it.next(),
        new Promise<never>((_, reject) => {
          timeout = setTimeout(() => reject(new ConnectError(`no hello or attach within ${limit} ms`, Code.DeadlineExceeded)), limit);
          onAbort = () => reject(new ConnectError("stream cancelled before hello", Code.Canceled));
          signal.addEventListener("abort", onAbort);
        }),
      ]);
      if (r.done) throw new ConnectError("stream ended before its first frame: expected hello or attach", Code.InvalidArgument);
      return r.value;
    } finally {
      clearTimeout(timeout);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }

  async function* connect(reqs: AsyncIterable<ConnectRequest>, ctx: CallContext): AsyncGenerator<ConnectResponse> {
    if (stopping) throw new ConnectError("server is stopping", Code.Unavailable);
    const it = reqs[Symbol.asyncIterator]();
    const first = await firstRequest(it, ctx.signal);
    const f0 = first.frames[0]?.frame;
    let s: Session;
    if (f0?.case === "hello") {
      s = openHello(f0.value);
    } else if (f0?.case === "attach") {
      const a = f0.value;
      const c = await options.lifecycle().checkAttach(a);
      if (stopping) throw new ConnectError("server is stopping", Code.Unavailable);
      if (c.attached && !c.attached.closed) {
        throw new ConnectError(`attach: container "${c.name}" is already attached by "${c.attached.name}"`, Code.FailedPrecondition);
      }
      const name = a.host || `${c.name}-process`;
      s = new Session(randomUUID(), name, "attached", undefined, 0, false, overflow);
      register(s);
      options.lifecycle().attached(s, c, name);
    } else {
      throw new ConnectError(
        `the first frame must be hello or attach, got ${f0?.case ? f0.case : "no frame"}`,
        Code.InvalidArgument,
      );
    }
    for (let i = 1; i < first.frames.length && !s.closed; i++) handleFrame(s, first.frames[i]!);
    void readLoop(it, s);
    const onAbort = () => lose(s);
    ctx.signal.addEventListener("abort", onAbort);
    try {
      for (;;) {
        const frames = await s.next();
        if (!frames) break;
        if (frames.length === 0) continue;
        yield { $typeName: ConnectResponseSchema.typeName, frames };
      }
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      lose(s);
    }
    if (s.closeError) throw s.closeError;
  }

  function tick() {
    const now = Date.now();
    const lostAfter = 3 * hb;
    for (const s of [...sessions.values()]) {
      if (now - s.lastReceived > lostAfter) {
        lose(s, new ConnectError(`session "${s.name}" sent nothing for ${now - s.lastReceived} ms (3 heartbeat intervals): declared lost`, Code.Unavailable));
      } else if (now - s.lastSent >= hb && s.queued === 0) {
        s.push(heartbeatFrame());
      }
    }
  }

  return {
    impl: { connect },
    hosts,
    lose,
    start() {
      timer = setInterval(tick, Math.max(10, Math.floor(hb / 4)));
      timer.unref();
    },
    stop(err) {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      for (const s of [...sessions.values()]) lose(s, err);
    },
  };
}
