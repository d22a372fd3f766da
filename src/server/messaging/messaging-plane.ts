/**
 * The messaging plane: worker sessions (WorkerService.Connect), the scheduler and container
 * lifecycle, container inboxes and the router, and the unary MessagingService.
 *
 * It follows the store through one watch of every kind: Containers feed the lifecycle,
 * Services the router. Routing itself never touches the store; only status writes do.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Container, Service } from "../../gen/k4s/v1/resources_pb.js";
import type { MessagingService } from "../../gen/k4s/v1/messaging_service_pb.js";
import type { WorkerService } from "../../gen/k4s/v1/worker_service_pb.js";
import type { AnyObject } from "../../api/kinds.js";
import type { Target } from "../../api/target.js";
import type { EventRecorder } from "../event-recorder.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import type { LogStore } from "../log-store.js";
import type { Metrics } from "../metrics.js";
import type { ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { createContainerLifecycle, type ContainerLifecycle } from "./container-lifecycle.js";
import { createMessagingService } from "../handlers/messaging-service.js";
import { createWorkerService } from "../handlers/worker-service.js";
import { createRouter } from "./router.js";
import { ServiceRoute } from "./service-route.js";
import { createLinkRegistry } from "./link-registry.js";
import type { StatsSource } from "../stats/stats-collector.js";

/** MessagingPlaneOptions are the plane's dependencies and limits. */
export interface MessagingPlaneOptions {
  resources: ResourceStore;
  events: EventRecorder;
  logs: LogStore;
  /** Heartbeat interval announced to sessions (default 5000 ms); lost after 3 silent intervals. */
  heartbeatIntervalMs?: number;
  /** Counters and gauges to report to (messages, deliveries, sessions, inbox depths). */
  metrics?: Metrics;
  /** Where the plane reports problems it cannot answer to a caller (default stderr). */
  onError?: (message: string, err?: unknown) => void;
  /** Count each container's load for the live stats (default true). */
  countLoad?: boolean;
}

/** MessagingPlane serves the worker and messaging APIs. */
export interface MessagingPlane {
  readonly workerService: ServiceHandlers<typeof WorkerService>;
  readonly messagingService: ServiceHandlers<typeof MessagingService>;
  /** The live load of containers and services, for the stats collector. */
  readonly load: StatsSource;
  start(): Promise<void>;
  /** Ends every session and fails every waiting call with UNAVAILABLE. */
  stop(): Promise<void>;
}

/** Delay before the watch is reopened after it failed (ms). */
const REWATCH_DELAY_MS = 500;

/** Creates the messaging plane. */
export function createMessagingPlane(options: MessagingPlaneOptions): MessagingPlane {
  const { resources, events, logs, metrics } = options;
  const onError = options.onError ?? ((message: string, err?: unknown) => console.error(`k4s messaging: ${message}`, err ?? ""));
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const abort = new AbortController();
  let watchDone: Promise<void> = Promise.resolve();

  const router = createRouter({
    events,
    lookup: (target) => lookup(target),
    onIdle: (c) => lifecycle.idle(c),
    metrics,
    countLoad: options.countLoad,
  });
  const links = createLinkRegistry({ heartbeatIntervalMs, metrics });
  const lifecycle: ContainerLifecycle = createContainerLifecycle({
    resources,
    events,
    logs,
    router,
    hosts: () => links.hosts(),
    closeSession: (s, err) => links.lose(s, err),
    onError,
    resumeGraceMs: 2 * heartbeatIntervalMs,
  });
  links.onLost((link) => {
    for (const env of [...link.calls.values()]) router.abandon(env, 0, `caller session ${link.id} ended`);
    lifecycle.sessionLost(link);
  });
  metrics?.onCollectInboxes(function* () {
    for (const c of router.containers.values()) yield [c.name, c.inbox.live] as [string, number];
  });

  function ingestService(obj: Service) {
    const meta = obj.metadata;
    if (!meta) return;
    let s = router.services.get(meta.name);
    if (s && s.uid !== meta.uid) {
      router.dropService(s);
      s = undefined;
    }
    if (s) s.apply(obj);
    else router.services.set(meta.name, new ServiceRoute(meta.name, meta.uid, obj));
    router.topologyChanged();
  }

  function apply(e: ObjectEvent) {
    const obj = e.object;
    switch (obj.$typeName) {
      case "k4s.v1.Container":
        if (e.type === "DELETED") lifecycle.remove(obj);
        else lifecycle.ingest(obj);
        return;
      case "k4s.v1.Service":
        if (e.type === "DELETED") {
          const s = router.services.get(obj.metadata?.name ?? "");
          if (s && s.uid === obj.metadata?.uid) router.dropService(s);
        } else {
          ingestService(obj);
        }
        return;
      default:
        return;
    }
  }

  /** Takes a full listing: applies every object and forgets those no longer there. */
  function relist(items: readonly AnyObject[]) {
    const containers = new Set<string>();
    const services = new Set<string>();
    for (const obj of items) {
      if (obj.$typeName === "k4s.v1.Container") {
        containers.add(`${obj.metadata?.name}/${obj.metadata?.uid}`);
        lifecycle.ingest(obj);
      } else if (obj.$typeName === "k4s.v1.Service") {
        services.add(`${obj.metadata?.name}/${obj.metadata?.uid}`);
        ingestService(obj);
      }
    }
    for (const c of [...router.containers.values()]) {
      if (!containers.has(`${c.name}/${c.uid}`)) lifecycle.remove({ metadata: { name: c.name, uid: c.uid } } as Container);
    }
    for (const s of [...router.services.values()]) {
      if (!services.has(`${s.name}/${s.uid}`)) router.dropService(s);
    }
  }

  async function lookup(target: Target): Promise<void> {
    if (target.kind !== "service") {
      if (await lifecycle.fetch(target.name)) return;
    }
    if (target.kind !== "container" && !router.services.has(target.name)) {
      const s = await resources.get("Service", target.name);
      if (s && !router.services.has(target.name)) ingestService(s);
    }
  }

  /** Follows the store; the first batch of a watch without a revision is the full listing. */
  async function follow(first: AsyncIterator<ObjectEvent[]> | undefined) {
    let it = first;
    let from: number | undefined;
    while (!abort.signal.aborted) {
      try {
        if (!it) {
          it = resources.watch({ fromRevision: from }, abort.signal)[Symbol.asyncIterator]();
          if (from === undefined) {
            const listing = await it.next();
            if (listing.done) throw new ConnectError("watch ended before its listing", Code.Unavailable);
            relist(listing.value.map((e) => e.object));
            from = listing.value[0]?.revision ?? (await resources.revision());
          }
        }
        for (;;) {
          const r = await it.next();
          if (r.done) break;
          for (const e of r.value) {
            apply(e);
            from = e.revision;
          }
        }
        it = undefined;
      } catch (err) {
        it = undefined;
        if (abort.signal.aborted) return;
        if (err instanceof ConnectError && err.code === Code.OutOfRange) {
          from = undefined;
          continue;
        }
        onError("the messaging plane's watch failed; reopening it", err);
        await new Promise((r) => setTimeout(r, REWATCH_DELAY_MS));
      }
    }
  }

  const load: StatsSource = {
    *containers() {
      for (const c of router.containers.values()) {
        yield { name: c.name, hostName: c.hostName, phase: c.phase, restarts: c.restarts, inFlight: c.inflight.size, inboxDepth: c.inbox.live, counters: c.load };
      }
    },
    *services() {
      for (const s of router.services.values()) yield { name: s.name, endpoints: s.statusEndpoints };
    },
  };

  return {
    workerService: createWorkerService({ router, lifecycle, links, logs, heartbeatIntervalMs, metrics }),
    load,
    messagingService: createMessagingService({ router, metrics }),
    async start() {
      const it = resources.watch({}, abort.signal)[Symbol.asyncIterator]();
      const listing = await it.next();
      if (!listing.done) relist(listing.value.map((e) => e.object));
      links.start();
      watchDone = follow(it);
    },
    async stop() {
      const stopping = lifecycle.stop();
      abort.abort();
      links.stop(new ConnectError("server is stopping", Code.Unavailable));
      router.stop("server is stopping");
      await stopping;
      await watchDone.catch(() => {});
    },
  };
}
