/**
 * WorkerService.Connect: the handshake (Hello or Attach, answered by Welcome or an error
 * status) and the frame dispatch of a live link. The links themselves, and their liveness, are
 * kept by the link registry.
 */
import { Code, ConnectError } from "@connectrpc/connect";
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
import { DEFAULT_REQUEST_TIMEOUT_MS } from "../../transport/limits.js";
import type { CallContext, ServiceHandlers } from "../grpc-adapter.js";
import type { LogStore } from "../log-store.js";
import type { Metrics } from "../metrics.js";
import { createBatchedCounter } from "../messaging/batched-counter.js";
import type { ContainerLifecycle } from "../messaging/container-lifecycle.js";
import { Envelope } from "../messaging/envelope.js";
import { callResultFrame } from "../messaging/frames.js";
import type { LinkRegistry } from "../messaging/link-registry.js";
import type { Router } from "../messaging/router.js";
import type { WorkerLink } from "../messaging/worker-link.js";

/** Unanswered requests one session may have at once. */
export const MAX_PENDING_CALLS = 65_536;
/** Parsed targets kept, since the same few targets repeat on the hot path. */
const TARGET_CACHE_SIZE = 1024;

/** WorkerServiceOptions are the Connect handler's dependencies. */
export interface WorkerServiceOptions {
  router: Router;
  lifecycle: ContainerLifecycle;
  links: LinkRegistry;
  logs: LogStore;
  /** Heartbeat interval announced to links (ms): a stream must say hello within 3 of them. */
  heartbeatIntervalMs: number;
  metrics?: Metrics;
}

/** Creates the WorkerService handlers. */
export function createWorkerService(options: WorkerServiceOptions): ServiceHandlers<typeof WorkerService> {
  const { router, lifecycle, links, logs } = options;
  const hb = options.heartbeatIntervalMs;
  const targets = new Map<string, Target>();
  const sendCounter = options.metrics && createBatchedCounter(options.metrics.messages.labels("send"));
  const requestCounter = options.metrics && createBatchedCounter(options.metrics.messages.labels("request"));

  function target(text: string): Target {
    let t = targets.get(text);
    if (!t) {
      t = parseTarget(text);
      if (targets.size >= TARGET_CACHE_SIZE) targets.clear();
      targets.set(text, t);
    }
    return t;
  }

  function openHello(hello: Hello): WorkerLink {
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
      for (const old of links.hosts()) {
        if (old.name !== base) continue;
        if (![...old.bound].some((c) => running.has(`${c.name}/${c.uid}`))) continue;
        const s = links.open({ name: base, role: "host", modules: hello.modules, capacity: hello.capacity, canSpawn: hello.canSpawn }, { keepName: true });
        lifecycle.hostReplaced(old, s);
        links.lose(old, new ConnectError(`host "${base}" reconnected on a new session`, Code.Unavailable));
        lifecycle.hostJoined(s, hello.running);
        return s;
      }
    }
    const s = links.open({ name: base, role, modules: hello.modules, capacity: hello.capacity, canSpawn: hello.canSpawn });
    if (role === "host") lifecycle.hostJoined(s, hello.running);
    return s;
  }

  function handleCall(s: WorkerLink, call: Call) {
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
      // A send's timeout bounds its wait for an inbox (a service's ready endpoint) only.
      if (call.timeoutMs > 0) env.deadline = Date.now() + call.timeoutMs;
      sendCounter?.inc();
    }
    router.route(env, t);
  }

  function handleFrame(s: WorkerLink, f: WorkerFrame) {
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
        if (s.role === "host") lifecycle.stateReported(s, frame.value);
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
        links.lose(s, new ConnectError(`${frame.case} is only valid as the first frame of a stream`, Code.InvalidArgument));
        return;
      default:
        return;
    }
  }

  async function readLoop(it: AsyncIterator<ConnectRequest>, s: WorkerLink) {
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
    links.lose(s);
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
    if (links.stopping) throw new ConnectError("server is stopping", Code.Unavailable);
    const it = reqs[Symbol.asyncIterator]();
    const first = await firstRequest(it, ctx.signal);
    const f0 = first.frames[0]?.frame;
    let s: WorkerLink;
    if (f0?.case === "hello") {
      s = openHello(f0.value);
    } else if (f0?.case === "attach") {
      const a = f0.value;
      const c = await lifecycle.checkAttach(a);
      if (links.stopping) throw new ConnectError("server is stopping", Code.Unavailable);
      if (c.attached && !c.attached.closed) {
        throw new ConnectError(`attach: container "${c.name}" is already attached by "${c.attached.name}"`, Code.FailedPrecondition);
      }
      const name = a.host || `${c.name}-process`;
      s = links.open({ name, role: "attached" });
      lifecycle.attached(s, c, name);
    } else {
      throw new ConnectError(
        `the first frame must be hello or attach, got ${f0?.case ? f0.case : "no frame"}`,
        Code.InvalidArgument,
      );
    }
    for (let i = 1; i < first.frames.length && !s.closed; i++) handleFrame(s, first.frames[i]!);
    void readLoop(it, s);
    const onAbort = () => links.lose(s);
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
      links.lose(s);
    }
    if (s.closeError) throw s.closeError;
  }

  return { connect };
}
