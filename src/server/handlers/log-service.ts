/** The LogService handlers: container output and cluster events, kept and followed. */
import { Code, ConnectError } from "@connectrpc/connect";
import { badField } from "../../api/bad-request.js";
import type { Event, LogLine, LogService } from "../../gen/k4s/v1/log_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { CallContext, ServiceHandlers } from "../grpc-adapter.js";
import type { LogStore } from "../log-store.js";
import type { ResourceStore } from "../store/resource-store.js";

/**
 * Turns a subscription into an async iterable that ends when the call's signal aborts.
 * Items arriving faster than the client reads are kept; the producers are bounded already.
 */
async function* follow<T>(subscribe: (push: (item: T) => void) => () => void, signal: AbortSignal): AsyncGenerator<T> {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = subscribe((item) => {
    queue.push(item);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    while (!signal.aborted) {
      if (queue.length === 0) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      while (queue.length > 0) yield queue.shift() as T;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener("abort", onAbort);
  }
}

/** Creates the LogService implementation. */
export function createLogService(deps: {
  logs: LogStore;
  events: EventRecorder;
  resources: ResourceStore;
}): ServiceHandlers<typeof LogService> {
  return {
    async *logs(req, ctx: CallContext) {
      if (!req.container) throw badField("container", "required", "container is required");
      const kept = deps.logs.lines(req.container, req.tail);
      if (kept.length === 0 && !(await deps.resources.get("Container", req.container))) {
        throw new ConnectError(`container "${req.container}" not found`, Code.NotFound);
      }
      if (kept.length > 0) yield { lines: kept };
      if (!req.follow) return;
      for await (const lines of follow<LogLine[]>((push) => deps.logs.subscribe(req.container, push), ctx.signal)) {
        yield { lines };
      }
    },
    async *events(req, ctx: CallContext) {
      const match = (e: Event) => (!req.kind || e.kind === req.kind) && (!req.name || e.name === req.name);
      for (const event of deps.events.recent({ kind: req.kind, name: req.name })) yield { event };
      if (!req.follow) return;
      for await (const event of follow<Event>((push) => deps.events.subscribe((e) => match(e) && push(e)), ctx.signal)) {
        yield { event };
      }
    },
  };
}
