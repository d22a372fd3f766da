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
import { Code, ConnectError } from "@connectrpc/connect";
import { KINDS, kindOf } from "../api/kinds.js";
import { createClusterEndpoints, type ClusterEndpoints } from "./cluster/cluster-endpoints.js";
import { createBoundContainers, type BoundContainers } from "./cluster/bound-containers.js";
import { createClusterRouter, type ClusterRouter } from "./cluster/cluster-router.js";
import { createDepartedJournals } from "./cluster/departed-journals.js";
import { awaitsPlace } from "./cluster/container-placement.js";
import { createHolding, type Holding } from "./cluster/holding.js";
import { createRerouter, createSpiller } from "./cluster/let-go.js";
import { createPeerLinks, type PeerLinks, type PeerLinksOptions } from "./cluster/peer-links.js";
import { createSessionLocator, type SessionLocator, type SessionName } from "./cluster/session-locator.js";
import { createStoreBinder } from "./cluster/store-binder.js";
import { createMessagingService } from "./handlers/messaging-service.js";
import type { Container } from "../gen/k4s/v1/resources_pb.js";
import type { MessagingService } from "../gen/k4s/v1/messaging_service_pb.js";
import type { WorkerService } from "../gen/k4s/v1/worker_service_pb.js";
import { createContainerController, type ContainerController, type ContainerControllerOptions } from "./controllers/container-controller.js";
import type { Controller, ReconcileReport } from "./controllers/controller.js";
import { createInformer, type Informer } from "./controllers/informer.js";
import { createReplicaSetController } from "./controllers/replicaset-controller.js";
import { createScheduler, type Binder } from "./controllers/scheduler.js";
import { createServiceController } from "./controllers/service-controller.js";
import type { EventRecorder } from "./event-recorder.js";
import type { ServiceHandlers } from "./grpc-adapter.js";
import { createWorkerService, type WorkerServiceOptions } from "./handlers/worker-service.js";
import type { LogStore } from "./log-store.js";
import type { LinkRegistry } from "./messaging/link-registry.js";
import type { WorkerLink } from "./messaging/worker-link.js";
import type { HostCredentials } from "./messaging/host-credentials.js";
import { createMessagingPlane, type MessagingPlane, type MessagingPlaneOptions } from "./messaging/messaging-plane.js";
import { EnvelopeState } from "./messaging/envelope.js";
import type { Letter } from "./messaging/mailbox.js";
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
  /** Proves the server a peer session names (see WorkerServiceOptions.provePeer). */
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
  /** In a cluster over etcd: this server's place in it (see ClusterPlaneOptions). */
  cluster?: ClusterPlaneOptions;
  /** Told of every worker session (host or attached process) that opens or ends here. */
  sessions?: {
    opened(link: WorkerLink): void;
    ended(link: WorkerLink): void;
  };
  onError: (message: string, err?: unknown) => void;
}

/**
 * ClusterPlaneOptions say who this server is in its cluster. Every server runs the holder plane
 * for the sessions it holds, with the cluster router over its own; the leader runs the
 * ReplicaSet and Service controllers and the scheduler besides (lead() and follow()).
 */
export interface ClusterPlaneOptions extends Pick<PeerLinksOptions, "self" | "token" | "tls" | "peerCredential"> {
  /** The store the leader's controllers write through (fenced by the election key). */
  leaderResources: ResourceStore;
  /** Claims an attached container cluster-wide (see WorkerServiceOptions.claimAttach). */
  claimAttach(container: string, sessionId: string): Promise<string>;
  /** Gives up the claim of an attached process's session that ended. */
  releaseAttach(container: string, sessionId: string): Promise<void>;
  /** Why this server takes no worker session now (its lease lapsed), else undefined. */
  workersRefused(): ConnectError | undefined;
  /** The leader's advertise address as last seen ("" when none is known). */
  leader(): string;
}

/** ClusterControlPlane is a control plane of a cluster's server: it leads or not. */
export interface ClusterControlPlane extends ControlPlane {
  /** This server leads now: starts the leader's controllers (in order with other changes). */
  lead(): Promise<void>;
  /** This server stopped leading: stops them. */
  follow(): Promise<void>;
  /** Ends every host's and attached process's session here (the lease lapsed): they move on. */
  endSessions(why: string): void;
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
function createHolderPlane(
  options: ControlPlaneOptions,
  informer: Informer,
  onReconcile: (r: ReconcileReport) => void,
  holds?: ContainerControllerOptions["holds"],
  reroute?: (container: string, envs: readonly Letter[]) => void,
  onRestored?: () => void,
): HolderPlane {
  const { events, logs, metrics, onError, sessions } = options;
  const messaging = createMessagingPlane({
    informer,
    events,
    metrics,
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    countLoad: options.countLoad,
    credentials: options.credentials,
    journal: options.journal,
    recoversOnHold: holds !== undefined,
    onRestored,
    onError,
    maxSessionBufferBytes: options.maxSessionBufferBytes,
    maxInboxBytes: options.maxInboxBytes,
  });
  const { router, links, heartbeatIntervalMs } = messaging;
  if (sessions) {
    links.onOpened((link) => link.role !== "client" && sessions.opened(link));
    links.onLost((link) => link.role !== "client" && sessions.ended(link));
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
    holds,
    onTaken: (obj) => messaging.taken(obj),
    onLetGo(name, uid) {
      const envs = messaging.letGo(name, uid);
      if (envs.length > 0) reroute?.(name, envs);
    },
    onError,
    onReconcile,
  });
  router.onIdle((name) => {
    if (containers.record(name)?.deleting) containers.enqueue(name);
  });
  metrics.onCollectAttachHolds(() => containers.attachHolds());
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

/**
 * Creates the control plane of a single server (nothing runs until start()): the holder plane and
 * the leader's controllers, all always on. A server of a cluster has createClusterControlPlane.
 */
export function createControlPlane(options: ControlPlaneOptions): ControlPlane {
  const { resources, events, logs, metrics, onError, credentials } = options;
  const onReconcile = (r: ReconcileReport) => metrics.reconciles.inc({ controller: r.controller, result: r.error ? "error" : "ok" });
  const informer = createInformer({ resources, kinds: KINDS, onError, name: "server informer" });
  const { messaging, containers, load } = createHolderPlane(options, informer, onReconcile);
  const { router, links, heartbeatIntervalMs } = messaging;
  const leading = createLeaderControllers({ informer, resources, events, containers, hosts: () => links.hosts(), onError, onReconcile });
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
      messaging.start();
      for (const c of controllers) await c.start();
      markReady();
    },
    async stop() {
      for (const c of controllers) await c.stop();
      messaging.stop("server is stopping");
      await options.journal?.close();
      await informer.stop();
    },
  };
}

/** How the leadership of a cluster's server starts and stops the leader's controllers, in order. */
function leadership(start: Promise<void>, turn: (leads: boolean) => Promise<void>, onError: ControlPlaneOptions["onError"]) {
  // A plane that failed to start never leads: its changes are skipped.
  const startedOk = start.then(
    () => true,
    () => false,
  );
  let changes: Promise<unknown> = startedOk;
  const inOrder = (leads: boolean) =>
    (changes = changes.then(() => startedOk).then((ok) => (ok ? turn(leads) : undefined)).catch((err: unknown) => onError("changing leadership failed", err)));
  return { lead: () => inOrder(true), follow: () => inOrder(false) };
}

/** What the cluster router of a server of a cluster works with. */
interface PlaneRouterParts {
  /** This server's own router. */
  router: Router;
  peers: PeerLinks;
  cluster: ClusterPlaneOptions;
  informer: Informer;
  containers: ContainerController;
  endpoints: ClusterEndpoints;
  holding(): Holding;
  /** Whether this server leads now. */
  leading(): boolean;
}

/** The cluster router in front of a server's own router: what another server delivers goes over the peer link to it. */
function createPlaneRouter(p: PlaneRouterParts): ClusterRouter {
  const { cluster, informer, containers } = p;
  // A call for a container no server holds yet waits for one to take it (within its deadline; a
  // send at most PLACE_WAIT_MS), except for a durable container: its sends are the leader's to
  // accept and journal, as a single server's router does, and wait there for a worker.
  const waitsForPlace = (obj: Container) => awaitsPlace(obj) && obj.spec?.delivery !== "durable";
  return createClusterRouter({
    local: p.router,
    links: p.peers,
    self: cluster.self,
    deliveredBy: (name) => {
      const obj = informer.get("Container", name);
      const server = p.holding().deliveredBy(obj, containers.record(name));
      // One that no server will take (ended, being deleted, external with no process attached)
      // is the leader's: its router answers for it as a single server's would.
      if (server !== "" || !obj || waitsForPlace(obj) || p.leading()) return server;
      const leader = cluster.leader();
      return leader === cluster.self() ? "" : leader;
    },
    awaited: (name) => {
      const obj = informer.get("Container", name);
      return obj !== undefined && waitsForPlace(obj);
    },
    endpoints: (service) => p.endpoints.of(service),
    queueLimit: (name) => informer.get("Container", name)?.spec?.queueLimit ?? 0,
  });
}

/** Longest a stopping server of a cluster waits for its workers to take and settle what they were sent (ms). */
const DRAIN_MS = 5000;

/**
 * Resolves once no container a worker serves here has a message queued or in hand (a container
 * with no worker: none in hand), or after DRAIN_MS.
 */
function drained(router: Router): Promise<void> {
  return pollWhile(() => [...router.loads()].some((l) => l.inFlight > 0 || (l.ready && l.queued > 0)), DRAIN_MS, 20);
}

/** Longest a stopping server waits for what it answered last to be written to its peers' sessions (ms). */
const FLUSH_MS = 1000;

/**
 * Resolves once every peer session here has written what was queued for it (the refusals this
 * stopping server gave, its hand-over's among them, before the sessions end: a session ended
 * with an error does not wait for its frames), or after FLUSH_MS.
 */
function flushed(peerSessions: ReadonlySet<WorkerLink>): Promise<void> {
  return pollWhile(() => [...peerSessions].some((l) => !l.closed && l.queuedBytes > 0), FLUSH_MS, 10);
}

/** Resolves once `busy()` is false (checked every `stepMs`), or after `ms`. */
async function pollWhile(busy: () => boolean, ms: number, stepMs: number): Promise<void> {
  const until = Date.now() + ms;
  while (busy() && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, stepMs));
}

/**
 * What still waits here once a stopping server's drain is over (in the inbox of a container
 * whose worker is not ready, or in a service's queue) goes on through the cluster router, which
 * this server no longer delivers through: a request as it is (refused by this server, its
 * forwarder routes it again), an accepted send as a copy, told as dropped when no server takes
 * it. A journaled send is not routed: its entry stays in the journal, released, for whoever
 * delivers its container (or, once this server is gone, its service) next.
 */
function handOver(router: Router, reroute: ReturnType<typeof createRerouter>, journal: SendJournal | undefined): void {
  const unjournaled = (envs: Letter[]) =>
    envs.filter((env) => {
      if (!journal || env.journalKey === "") return true;
      journal.release(env.journalKey);
      env.state = EnvelopeState.Done;
      return false;
    });
  for (const l of [...router.loads()]) if (l.queued > 0) reroute(l.name, unjournaled(router.takeBack(l.name)), "stopping");
  for (const service of router.waitingServices()) reroute(service, unjournaled(router.takeWaiting(service)), "stopping");
}

/**
 * When the calls waiting for an endpoint of a service here are sent on to other servers: after
 * any change of a Container or Service or of the session records, and after sends were read back
 * from a journal (once per turn of the event loop), for each service with a ready endpoint
 * another server delivers.
 */
function createSpills(o: {
  router: Router;
  clusterRouter: ClusterRouter;
  endpoints: ClusterEndpoints;
  holding: Holding;
  informer: Informer;
  containers: ContainerController;
  self(): string;
  journal?: SendJournal;
}): { schedule(): void } {
  const spill = createSpiller({ router: o.clusterRouter, local: o.router, journal: o.journal });
  /** Whether a ready endpoint of the service is delivered by another server. */
  const elsewhere = (service: string) =>
    (o.endpoints.of(service) ?? []).some((e) => {
      const server = o.holding.deliveredBy(o.informer.get("Container", e), o.containers.record(e));
      return server !== "" && server !== o.self();
    });
  let scheduled = false;
  return {
    schedule() {
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        for (const service of o.router.waitingServices()) if (elsewhere(service)) spill(service);
      });
    },
  };
}

/** The containers a change of session records touches (all after a relisting). */
function touchedBy(touched: readonly SessionName[] | undefined, bound: BoundContainers): Iterable<string> | undefined {
  if (!touched) return undefined;
  const names = new Set<string>();
  for (const t of touched) {
    if (t.kind === "attached") names.add(t.name);
    else for (const n of bound.on(t.name)) names.add(n);
  }
  return names;
}

/**
 * A change of session records (those `touched`; all after a relisting): the containers on those
 * sessions are looked at again and the calls waiting for them routed again; and a service's
 * endpoint may be delivered by another server now (its host moved there): what waits here for an
 * endpoint goes on to it.
 */
function sessionsChanged(
  touched: readonly SessionName[] | undefined,
  o: { holding: Holding; bound: BoundContainers; containers: ContainerController; clusterRouter: ClusterRouter; spills: { schedule(): void } },
): void {
  o.holding.closeReplaced();
  o.spills.schedule();
  const names = touchedBy(touched, o.bound);
  if (!names) {
    o.containers.recheckAll();
    o.clusterRouter.wake();
    return;
  }
  for (const name of names) {
    o.containers.enqueue(name);
    o.clusterRouter.wake(name);
  }
}

/** The leader's controllers of a server of a cluster (its scheduler binds in the store). */
function createClusterLeaders(o: {
  locator: SessionLocator;
  informer: Informer;
  cluster: ClusterPlaneOptions;
  containers: ContainerController;
  events: EventRecorder;
  links: LinkRegistry;
  /** The cluster's store (the member records) and this server's messaging plane, for the departed servers' journals. */
  sessionRecords: Store;
  messaging: MessagingPlane;
  onError: ControlPlaneOptions["onError"];
  onReconcile: (r: ReconcileReport) => void;
}): Controller[] {
  const { locator, informer, cluster, containers, events, links, onError, onReconcile } = o;
  const binder = createStoreBinder({
    locator,
    informer,
    resources: cluster.leaderResources,
    retry: (name) => containers.enqueue(name),
    onError,
    restartsOf: (name) => containers.record(name)?.restarts ?? 0,
  });
  const departed = createDepartedJournals({ store: o.sessionRecords, readDeparted: o.messaging.readDeparted, onError });
  return [...createLeaderControllers({ informer, resources: cluster.leaderResources, events, containers, hosts: () => links.hosts(), binder, onError, onReconcile }), departed];
}

/**
 * Creates the control plane of a server of a cluster over etcd (nothing runs until start()):
 * the holder plane for the sessions this server holds, its router in front of the cluster
 * router (what another server delivers goes over the peer link to it), and, while it leads, the
 * ReplicaSet and Service controllers and the scheduler, which binds in the store.
 */
export function createClusterControlPlane(options: ControlPlaneOptions & { cluster: ClusterPlaneOptions; sessionRecords: Store }): ClusterControlPlane {
  const { events, logs, metrics, onError, credentials, cluster } = options;
  const onReconcile = (r: ReconcileReport) => metrics.reconciles.inc({ controller: r.controller, result: r.error ? "error" : "ok" });
  const informer = createInformer({ resources: options.resources, kinds: KINDS, onError, name: "server informer" });
  const locator: SessionLocator = createSessionLocator({ store: options.sessionRecords, onError });
  let leading = false;
  let holding: ReturnType<typeof createHolding> | undefined;
  let reroute: ReturnType<typeof createRerouter> | undefined;
  let spills: { schedule(): void } | undefined;
  const { messaging, containers, load } = createHolderPlane(
    options,
    informer,
    onReconcile,
    (obj, rec) => holding!.holds(obj, rec),
    (name, envs) => reroute!(name, envs),
    () => spills?.schedule(),
  );
  const { router, links, heartbeatIntervalMs } = messaging;
  holding = createHolding({ self: cluster.self, links, locator, leading: () => leading });
  const peers = createPeerLinks(cluster);
  const endpoints = createClusterEndpoints(informer);
  const clusterRouter = createPlaneRouter({ router, peers, cluster, informer, containers, endpoints, holding: () => holding!, leading: () => leading });
  const bound = createBoundContainers(informer);
  // The calls waiting for a place are routed again when where it is may have changed: a
  // container's stored object (its binding, phase), any endpoint of a service, a session record.
  informer.subscribe((e) => {
    const kind = kindOf(e.object);
    if (kind !== "Container" && kind !== "Service") return;
    if (kind === "Container") clusterRouter.wake(e.object.metadata?.name ?? "");
    clusterRouter.wakeServices();
    spills?.schedule();
  });
  // A host whose session opens here: its containers are delivered here (before its record is in etcd).
  links.onOpened((link) => {
    if (link.role === "host") for (const name of bound.on(link.name)) clusterRouter.wake(name);
  });
  // What waited here for a container another server holds now goes there.
  reroute = createRerouter({ router: clusterRouter, journal: options.journal, events, onError });
  // What waits here for an endpoint of a service goes to its endpoints on other servers.
  spills = createSpills({ router, clusterRouter, endpoints, holding, informer, containers, self: cluster.self, journal: options.journal });
  // The sessions other servers forward calls over (a stopping server's last answers go there).
  const peerSessions = new Set<WorkerLink>();
  links.onOpened((link) => link.peer && peerSessions.add(link));
  links.onLost((link) => {
    peerSessions.delete(link);
    if (link.role === "attached") cluster.releaseAttach(link.container, link.id).catch((err: unknown) => onError(`cluster: releasing the attach of "${link.container}" failed`, err));
  });
  let leaders: Controller[] = [];
  let markStarted!: (ok: boolean) => void;
  // Rejected when the start failed: a session waiting for it ends, and no leadership change runs.
  const started = new Promise<void>((resolve, reject) => (markStarted = (ok) => (ok ? resolve() : reject(new ConnectError("k4s server failed to start", Code.Unavailable)))));
  started.catch(() => {});
  /** Set by stop(): a plane that stops never leads again (its member leaves the cluster after it). */
  let stopping = false;
  const turn = async (leads: boolean) => {
    if (leads === leading || (leads && stopping)) return;
    leading = leads;
    for (const c of leaders) await c.stop();
    leaders = [];
    if (leads) {
      leaders = createClusterLeaders({ locator, informer, cluster, containers, events, links, sessionRecords: options.sessionRecords, messaging, onError, onReconcile });
      for (const c of leaders) await c.start();
    }
    // What this server holds changed: the unbound and orphaned containers are the leader's.
    containers.recheckAll();
  };
  const { lead, follow } = leadership(started, turn, onError);
  let stopListening: (() => void) | undefined;
  /** The parts started (or starting): stop() stops only those, so a plane that never started has nothing to stop. */
  const up = { informer: false, locator: false, messaging: false, containers: false };
  async function stopParts() {
    const was = { ...up };
    up.informer = up.locator = up.messaging = up.containers = false;
    if (was.messaging) {
      // Calls for what this server holds go elsewhere from now on; what its workers have, or
      // were sent, is delivered before their sessions end (a send accepted here is not lost).
      clusterRouter.leave();
      await drained(router);
      handOver(router, reroute!, options.journal);
    }
    if (was.containers) await containers.stop();
    if (was.locator) locator.stop();
    await peers.stop("server is stopping");
    if (was.messaging) {
      await flushed(peerSessions);
      messaging.stop("server is stopping");
    }
    if (was.informer) {
      await options.journal?.close();
      await informer.stop();
    }
  }
  return {
    load,
    messagingService: createMessagingService({ router: clusterRouter, metrics }),
    workerService: createWorkerService({
      router: clusterRouter,
      lifecycle: containers,
      links,
      logs,
      heartbeatIntervalMs,
      ready: started,
      metrics,
      credentials,
      provePeer: options.provePeer,
      workersRefused: cluster.workersRefused,
      claimAttach: cluster.claimAttach,
    }),
    lead,
    follow,
    endSessions(why) {
      for (const link of [...links.workers()]) links.lose(link, new ConnectError(why, Code.Unavailable));
    },
    async start() {
      try {
        await credentials?.load();
        // Each part is counted as up before it starts: one that failed halfway is stopped too.
        up.informer = true;
        await informer.start();
        up.locator = true;
        await locator.start();
        up.messaging = true;
        messaging.start();
        up.containers = true;
        await containers.start();
        stopListening = locator.onChange((touched) => sessionsChanged(touched, { holding: holding!, bound, containers, clusterRouter, spills: spills! }));
        markStarted(true);
      } catch (err) {
        // What started is stopped, and what waits for the start (sessions, leadership) is told.
        markStarted(false);
        await stopParts().catch((e: unknown) => onError("stopping the parts of a control plane that failed to start failed", e));
        throw err;
      }
    },
    async stop() {
      stopping = true;
      if (stopListening) {
        stopListening();
        stopListening = undefined;
        await follow();
      }
      await stopParts();
    },
  };
}
