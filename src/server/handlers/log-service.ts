/** The LogService handlers: container output and cluster events, kept and followed. */
import { Code, ConnectError } from "@connectrpc/connect";
import { badField } from "../../api/bad-request.js";
import type { Event, LogLine, LogService } from "../../gen/k4s/v1/log_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { CallContext, ServiceHandlers } from "../grpc-adapter.js";
import type { LogStore } from "../log-store.js";
import type { ResourceStore } from "../store/resource-store.js";

/** Records a follower may have waiting before it is cut off (to resume from where it got to). */
const MAX_FOLLOW_BACKLOG = 10_000;

/**
 * Streams the records `initial` reads, then every newer one `subscribe` reports, each once and in
 * position order, until the call's signal aborts. It subscribes before reading, so a record
 * written meanwhile is neither lost nor sent twice. A follower that lets more than
 * MAX_FOLLOW_BACKLOG records pile up is ended UNAVAILABLE, to resume after what it got.
 */
async function* follow<T extends { seq: bigint }>(
  subscribe: (push: (items: readonly T[]) => void) => () => void,
  initial: () => Promise<T[]>,
  after: bigint,
  signal: AbortSignal,
): AsyncGenerator<T[]> {
  let queue: T[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = subscribe((items) => {
    queue.push(...items);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    let last = after;
    const first = (await initial()).filter((x) => x.seq > last);
    if (first.length > 0) {
      last = first[first.length - 1]!.seq;
      yield first;
    }
    while (!signal.aborted) {
      if (queue.length === 0) await new Promise<void>((r) => (wake = r));
      wake = undefined;
      if (queue.length > MAX_FOLLOW_BACKLOG) {
        throw new ConnectError(`the follower fell more than ${MAX_FOLLOW_BACKLOG} records behind: resume after seq ${last}`, Code.Unavailable);
      }
      const batch = queue.filter((x) => x.seq > last);
      queue = [];
      if (batch.length === 0) continue;
      last = batch[batch.length - 1]!.seq;
      yield batch;
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
      const initial = async () => {
        const kept = deps.logs.lines(req.container, req.tail, req.afterSeq);
        if (kept.length === 0 && req.afterSeq === 0n && !(await deps.resources.get("Container", req.container))) {
          throw new ConnectError(`container "${req.container}" not found`, Code.NotFound);
        }
        return kept;
      };
      if (!req.follow) {
        const kept = await initial();
        if (kept.length > 0) yield { lines: kept };
        return;
      }
      for await (const lines of follow<LogLine>((push) => deps.logs.subscribe(req.container, push), initial, req.afterSeq, ctx.signal)) {
        yield { lines };
      }
    },
    async *events(req, ctx: CallContext) {
      const match = (e: Event) => (!req.kind || e.kind === req.kind) && (!req.name || e.name === req.name);
      const initial = async () => deps.events.recent({ kind: req.kind, name: req.name, afterSeq: req.afterSeq });
      if (!req.follow) {
        for (const event of await initial()) yield { event };
        return;
      }
      const subscribe = (push: (items: readonly Event[]) => void) => deps.events.subscribe((e) => match(e) && push([e]));
      for await (const batch of follow<Event>(subscribe, initial, req.afterSeq, ctx.signal)) {
        for (const event of batch) yield { event };
      }
    },
  };
}
