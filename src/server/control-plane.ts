/**
 * Everything of the server that follows the store: one informer over every kind feeds the
 * controllers (ReplicaSet, Service, container lifecycle, scheduler) and the messaging plane
 * (router and worker links); the messaging and worker APIs are served over them.
 *
 * Who calls whom: the informer hands stored changes to the router and to the controllers'
 * queues; the worker handler tells the container controller what hosts say and routes calls;
 * the container controller tells the router where each container's worker is
 * (setAvailability) and writes status; the scheduler binds what the container controller leaves
 * Unscheduled. No part reaches into another's state.
 */
import { KINDS } from "../api/kinds.js";
import { createSessionLocator } from "./cluster/session-locator.js";
import { createStoreBinder } from "./cluster/store-binder.js";
import type { MessagingService } from "../gen/k4s/v1/messaging_service_pb.js";
import type { WorkerService } from "../gen/k4s/v1/worker_service_pb.js";
import { createContainerController, type ContainerController } from "./controllers/container-controller.js";
import type { Controller, ReconcileReport } from "./controllers/controller.js";
import { createInformer, type Informer } from "./controllers/informer.js";
import { createReplicaSetController } from "./controllers/replicaset-controller.js";
import { createScheduler, type Binder } from "./controllers/scheduler.js";
import { createServiceController } from "./controllers/service-controller.js";
import type { EventRecorder } from "./event-recorder.js";
import type { ServiceHandlers } from "./grpc-adapter.js";
import { createWorkerService, type WorkerServiceOptions } from "./handlers/worker-service.js";
import type { LogStore } from "./log-store.js";
import type { WorkerLink } from "./messaging/worker-link.js";
import type { HostCredentials } from "./messaging/host-credentials.js";
import { createMessagingPlane, type MessagingPlane, type MessagingPlaneOptions } from "./messaging/messaging-plane.js";
import type { Router } from "./messaging/router.js";
import type { SendJournal } from "./messaging/send-journal.js";
import type { Metrics } from "./metrics.js";
import type { StatsSource } from "./stats/stats-collector.js";
import type { ResourceStore } from "./store/resource-store.js";
import type { Store } from "./store/store.js";

/** ControlPlaneOptions are what the control plane works over, and the messaging plane's byte bounds. */
export interface ControlPlaneOptions extends Pick<MessagingPlaneOptions, "maxSessionBufferBytes" | "maxInboxBytes"> {
  resources: ResourceStore;
  events: EventRecorder;
  logs: LogStore;
  metrics: Metrics;
  /** Heartbeat interval announced to worker links (default 5000 ms). */
  heartbeatIntervalMs?: number;
  /** Count each container's load for the live stats (default true). */
  countLoad?: boolean;
  /** Issues and checks the credentials of host names (they prove a host's identity). */
  credentials?: HostCredentials;
  /** Proves the server a relayed stream names (see WorkerServiceOptions.provePeer). */
  provePeer?: WorkerServiceOptions["provePeer"];
  /**
   * The store the container lifecycle writes statuses and removals through (default:
   * `resources`); for the router on every server, fenced by this server's membership rather
   * than its leadership. Not given by the server yet (docs/cluster.md, "Not built yet").
   */
  holderResources?: ResourceStore;
  /**
   * The store holding every server's session records, for the router on every server: the
   * scheduler then binds in the store among the hosts of every server, and the lifecycle starts
   * what is bound to a host of this server when it sees the binding. Not given by the server
   * yet: binding in the store has gaps to close first (docs/cluster.md, "Not built yet").
   */
  sessionRecords?: Store;
  /** Where sends to durable containers are journaled. */
  journal?: SendJournal;
  /** Told of every worker session (host or attached process) that opens or ends here. */
  sessions?: {
    opened(link: WorkerLink): void;
    ended(link: WorkerLink): void;
  };
  onError: (message: string, err?: unknown) => void;
}

/** ControlPlane is the running controllers and messaging, with the APIs served over them. */
export interface ControlPlane {
  readonly messagingService: ServiceHandlers<typeof MessagingService>;
  readonly workerService: ServiceHandlers<typeof WorkerService>;
  /** The live load of containers and services, for the stats collector. */
  readonly load: StatsSource;
  /** Lists the store, then starts following it, the controllers and the links' liveness. */
  start(): Promise<void>;
  /** Stops the controllers, ends every link and fails every waiting call with UNAVAILABLE. */
  stop(): Promise<void>;
}

/**
 * How long after a server restart a host may take to come back before its containers move: as
 * long as a live session may stay silent (three heartbeats), and at least 5 s, since a host that
 * sees the restart backs off (up to 1 s), reconnects and resumes, and a loaded machine stretches
 * each step (15 s at the default 5 s heartbeat).
 */
function resumeGraceOf(heartbeatIntervalMs: number): number {
  return Math.max(3 * heartbeatIntervalMs, 5000);
}

/** HolderPlane is what every server runs for the sessions it holds: links, router and the lifecycle of their containers. */
interface HolderPlane {
  messaging: MessagingPlane;
  containers: ContainerController;
  load: StatsSource;
}

/**
 * The part of a control plane that acts for the worker sessions of this server: the messaging
 * plane (link registry and router) and the lifecycle of the containers on its hosts, whose
 * statuses it writes through `holderResources` when given (a store fenced by this server's
 * membership, for the router on every server; not given today: the plane's own `resources`).
 */
function createHolderPlane(options: ControlPlaneOptions, informer: Informer, onReconcile: (r: ReconcileReport) => void): HolderPlane {
  const { events, logs, metrics, onError, sessions } = options;
  const messaging = createMessagingPlane({
    informer,
    events,
    metrics,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    countLoad: options.countLoad,
    credentials: options.credentials,
    journal: options.journal,
    onError,
    maxSessionBufferBytes: options.maxSessionBufferBytes,
    maxInboxBytes: options.maxInboxBytes,
  });
  const { router, links, heartbeatIntervalMs } = messaging;
  if (sessions) {
    // A relayed session is recorded by the server that relays it.
    links.onOpened((link) => link.role !== "client" && !link.relayedBy && sessions.opened(link));
    links.onLost((link) => link.role !== "client" && !link.relayedBy && sessions.ended(link));
  }
  const containers = createContainerController({
    informer,
    resources: options.holderResources ?? options.resources,
    events,
    logs,
    router,
    links,
    resumeGraceMs: resumeGraceOf(heartbeatIntervalMs),
    bindsFromStore: options.sessionRecords !== undefined,
    onError,
    onReconcile,
  });
  router.onIdle((name) => {
    if (containers.record(name)?.deleting) containers.enqueue(name);
  });
  return { messaging, containers, load: loadOf(router, containers) };
}

/** The live load of the containers a server routes, with their lifecycle's view of them. */
function loadOf(router: Router, containers: ContainerController): StatsSource {
  return {
    *containers() {
      for (const l of router.loads()) {
        const rec = containers.record(l.name);
        yield {
          name: l.name,
          hostName: rec?.hostName ?? "",
          phase: rec?.phase() ?? "Pending",
          restarts: rec?.restarts ?? 0,
          inFlight: l.inFlight,
          inboxDepth: l.queued,
          counters: l.counters,
        };
      }
    },
    services: () => router.services(),
  };
}

/** LeaderControllersOptions are what the controllers that decide for the whole cluster work over. */
export interface LeaderControllersOptions {
  informer: Informer;
  /** The store their writes go to (in a cluster, fenced by the leader's election key). */
  resources: ResourceStore;
  events: EventRecorder;
  /** The lifecycle whose Unscheduled containers the scheduler binds. */
  containers: ContainerController;
  /** The worker hosts the scheduler picks from. */
  hosts: () => Iterable<WorkerLink>;
  /** In a cluster: where the scheduler binds instead (the hosts of every server, through the store). */
  binder?: Binder;
  onError: (message: string, err?: unknown) => void;
  onReconcile: (r: ReconcileReport) => void;
}

/** The controllers only the leader of a cluster runs (a single server runs them too): ReplicaSets, Services and the scheduler. */
export function createLeaderControllers(o: LeaderControllersOptions): Controller[] {
  const { informer, resources, events, onError, onReconcile } = o;
  return [
    createReplicaSetController({ informer, resources, events, onError, onReconcile }),
    createServiceController({ informer, resources, events, onError, onReconcile }),
    createScheduler({ containers: o.containers, hosts: o.hosts, binder: o.binder, onError, onReconcile }),
  ];
}

/** Creates the control plane (nothing runs until start()): the holder plane and the leader's controllers. */
export function createControlPlane(options: ControlPlaneOptions): ControlPlane {
  const { resources, events, logs, metrics, onError, credentials } = options;
  const onReconcile = (r: ReconcileReport) => metrics.reconciles.inc({ controller: r.controller, result: r.error ? "error" : "ok" });
  const informer = createInformer({ resources, kinds: KINDS, onError, name: "server informer" });
  const { messaging, containers, load } = createHolderPlane(options, informer, onReconcile);
  const { router, links, heartbeatIntervalMs } = messaging;
  const locator = options.sessionRecords && createSessionLocator({ store: options.sessionRecords, onError });
  const binder = locator && createStoreBinder({ locator, informer, resources, retry: (name) => containers.enqueue(name), onError });
  const leading = createLeaderControllers({ informer, resources, events, containers, hosts: () => links.hosts(), binder, onError, onReconcile });
  // The scheduler starts after the lifecycle whose records it binds.
  const controllers: Controller[] = [containers, ...leading];
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  return {
    load,
    messagingService: messaging.messagingService,
    workerService: createWorkerService({ router, lifecycle: containers, links, logs, heartbeatIntervalMs, ready, metrics, credentials, provePeer: options.provePeer }),
    async start() {
      await credentials?.load();
      await informer.start();
      await locator?.start();
      messaging.start();
      for (const c of controllers) await c.start();
      markReady();
    },
    async stop() {
      for (const c of controllers) await c.stop();
      locator?.stop();
      messaging.stop("server is stopping");
      await options.journal?.close();
      await informer.stop();
    },
  };
}
