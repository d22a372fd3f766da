/**
 * What a live WorkerService.Connect stream says after its hello: calls (sends and requests)
 * for the router, results of deliveries, cancels, container states for the lifecycle, output
 * lines for the log store.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { parseTarget, type Target } from "../../api/target.js";
import type { Call, WorkerFrame } from "../../gen/k4s/v1/worker_service_pb.js";
import { DEFAULT_REQUEST_TIMEOUT_MS } from "../../transport/limits.js";
import type { ContainerLifecycle } from "../controllers/container-controller.js";
import type { LogStore } from "../log-store.js";
import type { Metrics } from "../metrics.js";
import { createBatchedCounter } from "../messaging/batched-counter.js";
import { Envelope } from "../messaging/envelope.js";
import { callErrorFrame } from "../messaging/frames.js";
import type { LinkRegistry } from "../messaging/link-registry.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";
import type { WorkerLink } from "../messaging/worker-link.js";

/** Unanswered requests one session may have at once. */
export const MAX_PENDING_CALLS = 65_536;
/** Parsed targets kept, since the same few targets repeat on the hot path. */
const TARGET_CACHE_SIZE = 1024;

/** LinkFramesOptions are what the frames of a link go to. */
export interface LinkFramesOptions {
  router: CallRouter;
  /** The containers' lifecycle; none on a standby, which takes client sessions only. */
  lifecycle?: ContainerLifecycle;
  links: LinkRegistry;
  logs: LogStore;
  metrics?: Metrics;
}

/** Creates the handler of the frames a link sends after its hello. */
export function createLinkFrames(options: LinkFramesOptions): (link: WorkerLink, frame: WorkerFrame) => void {
  const { router, lifecycle, links, logs } = options;
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

  // A call refused here was routed nowhere: its answer says so (refused), as the router's refusals do.
  function handleCall(s: WorkerLink, call: Call) {
    let t: Target;
    try {
      t = target(call.target);
    } catch (err) {
      s.push(callErrorFrame(call.id, Code.InvalidArgument, ConnectError.from(err).rawMessage, "", true));
      return;
    }
    // A host speaks for the containers it runs; an attached process only for its own.
    const sender = s.role === "attached" ? s.container : s.role === "host" ? call.sender : "";
    if (s.role === "host" && sender !== "" && lifecycle?.hostOf(sender) !== s) {
      s.push(callErrorFrame(call.id, Code.PermissionDenied, `call.sender "${sender}" is not a container this host runs`, "", true));
      return;
    }
    const env: Letter = new Envelope({
      callId: call.id,
      origin: s,
      data: call.data,
      contentType: call.contentType,
      expectsReply: call.expectsReply,
      sender,
    });
    if (call.expectsReply) {
      if (s.calls.has(call.id)) {
        s.push(callErrorFrame(call.id, Code.InvalidArgument, `call id ${call.id} is already used by an unanswered request`, "", true));
        return;
      }
      if (s.calls.size >= MAX_PENDING_CALLS) {
        s.push(callErrorFrame(call.id, Code.ResourceExhausted, `too many unanswered requests on this session (limit ${MAX_PENDING_CALLS})`, "", true));
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

  return function handleFrame(s: WorkerLink, f: WorkerFrame) {
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
        if (s.role === "host") lifecycle?.stateReported(s, frame.value);
        return;
      case "log": {
        const v = frame.value;
        const ok = s.role === "host" ? router.knows({ kind: "container", name: v.container }) : s.role === "attached" && s.container === v.container;
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
  };
}
