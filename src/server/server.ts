/**
 * The k4s server: one gRPC port serving the resource, messaging, worker, log and stats APIs,
 * with server reflection and the standard health service, over a durable store and its
 * controllers; and, on an HTTP port of its own, the web dashboard with the same APIs over the
 * Connect protocol.
 */
import * as grpc from "@grpc/grpc-js";
import { hostname } from "node:os";
import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { untilAborted } from "../api/abortable-delay.js";
import { DEFAULT_PORT, joinHostPort } from "../api/address.js";
import { codeName } from "../api/code-name.js";
import { KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS } from "../transport/channel.js";
import { MAX_MESSAGE_BYTES } from "../transport/limits.js";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { EventSchema, LogLineSchema, LogService, file_k4s_v1_log_service } from "../gen/k4s/v1/log_service_pb.js";
import { StatsService, file_k4s_v1_stats_service } from "../gen/k4s/v1/stats_service_pb.js";
import { InfoService, file_k4s_v1_info_service } from "../gen/k4s/v1/info_service_pb.js";
import { MessagingService, file_k4s_v1_messaging_service } from "../gen/k4s/v1/messaging_service_pb.js";
import { ResourceService, file_k4s_v1_resource_service } from "../gen/k4s/v1/resource_service_pb.js";
import { WorkerService, file_k4s_v1_worker_service } from "../gen/k4s/v1/worker_service_pb.js";
import { createClusterControlPlane, createControlPlane, type ClusterControlPlane, type ControlPlane, type ControlPlaneOptions } from "./control-plane.js";
import { createHostCredentials, type HostCredentials } from "./messaging/host-credentials.js";
import { createSendJournal } from "./messaging/send-journal.js";
import { createEventRecorder, type EventRecorder } from "./event-recorder.js";
import { createAuthInterceptor, guardUnknownMethods, isLoopback } from "./auth.js";
import { addService, type AdapterOptions, type ServiceHandlers } from "./grpc-adapter.js";
import { addConnectService } from "./connect-adapter.js";
import { serveDashboard, type DashboardServer } from "./dashboard-server.js";
import { createInfoService } from "./handlers/info-service.js";
import { createLogService } from "./handlers/log-service.js";
import type { PeerProof } from "./handlers/worker-service.js";
import { createResourceService } from "./handlers/resource-service.js";
import { createMetrics, serveMetrics, type Metrics } from "./metrics.js";
import { createLogStore, type LogStore } from "./log-store.js";
import { createResourceStore } from "./store/create-resource-store.js";
import type { ResourceStore } from "./store/resource-store.js";
import { openStore, parseEtcdUrl } from "./store/open-store.js";
import type { ClusterMember } from "./cluster/cluster-member.js";
import { createFencedStore } from "./cluster/fenced-store.js";
import { createSessionTable, type SessionTable } from "./cluster/session-table.js";
import type { Store } from "./store/store.js";
import { createStatsCollector, type StatsCollector } from "./stats/stats-collector.js";
import { createStatsService } from "./stats/stats-service.js";
import { listenError } from "./startup-error.js";
import { listen, type Listener } from "./listener.js";
import { createTailJournal, protoChunks } from "./tail-journal.js";

/** ServerOptions configure a k4s server. */
export interface ServerOptions {
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 50051; 0 picks a free one). */
  port?: number;
  /**
   * Where the state lives: `sqlite:DIR` or `etcd://HOST:PORT[,HOST:PORT...]`. Unset: `dataDir`
   * (SQLite), or in memory when that is unset too.
   */
  store?: string;
  /** Folder for the durable state (the same as store `sqlite:DIR`); undefined keeps state in memory (tests). */
  dataDir?: string;
  /**
   * Bearer token required on every RPC. Without one the server refuses to listen on anything
   * but loopback.
   */
  token?: string;
  /**
   * TLS certificate chain and private key (PEM text); plaintext HTTP/2 when absent. `ca`: the CA
   * that signed the certificates of every server of the cluster, which this server's peer links
   * verify the other servers against (default: this server's own certificate, for a cluster whose
   * servers share one).
   */
  tls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer };
  /** Store revisions kept for watches to resume from (default 10000). */
  historyLimit?: number;
  /** Bytes of values the SQLite store's history may hold (default 64 MiB). */
  historyBytes?: number;
  /** Time between the etcd store's compaction rounds (default 60 s). */
  compactIntervalMs?: number;
  /** Most journaled, unsettled durable sends per container or service (default 10,000). */
  journalMaxMessages?: number;
  /** Most payload bytes of journaled, unsettled durable sends per container or service (default 64 MiB). */
  journalMaxBytes?: number;
  /** How often a quiet watch gets a BOOKMARK (default 5000 ms). */
  watchBookmarkIntervalMs?: number;
  /** Port of the HTTP `/metrics` endpoint (Prometheus); undefined: not served. */
  metricsPort?: number;
  /**
   * The web dashboard: the page and the resource, messaging, log and stats APIs over the Connect
   * protocol on an HTTP port of its own (HTTPS with the server's certificate), with the same
   * token. Undefined: not served.
   */
  dashboard?: {
    /** Interface to listen on (default 127.0.0.1). */
    host?: string;
    /** Port (0 picks a free one). */
    port: number;
    /** Folder of the built page (default: the package's dist/dashboard). */
    assetsDir?: string;
  };
  /**
   * Collect the live stats (per-container message counts and latency histograms) served by
   * StatsService (default true). Off only to measure what they cost.
   */
  stats?: boolean;
  /** Heartbeat interval announced to worker sessions (ms). */
  heartbeatIntervalMs?: number;
  /**
   * Bytes of frames a worker session may leave unread (queued, not yet written to its stream)
   * before the server ends it with RESOURCE_EXHAUSTED naming this bound (default 64 MiB). Its
   * in-flight deliveries go back to their inboxes.
   */
  maxSessionBufferBytes?: number;
  /**
   * Bytes of message payloads one container's inbox (or one service's queue of calls waiting
   * for an endpoint) holds; past it a send or request is refused RESOURCE_EXHAUSTED naming this
   * bound (default 64 MiB). Applies besides the container's `spec.queueLimit` (a count).
   */
  maxInboxBytes?: number;
  /** Connections the gRPC port holds at once; more are closed as they arrive (default 1024). */
  maxConnections?: number;
  /**
   * A connection with no call open for this long is closed (GOAWAY; ms, default 120000). Clients
   * open a new one for their next call; worker sessions, watches and follows keep theirs busy.
   */
  idleConnectionTimeoutMs?: number;
  /**
   * With an etcd store, the address other servers and clients reach this server at: its name in
   * the cluster (default: the bound host:port).
   */
  advertise?: string;
  /** With an etcd store, the TTL of the server's lease (s, default 3): how long a dead leader keeps its place. */
  leaseTtlSeconds?: number;
  /** Called when this server becomes the leader (true) or stops being it (false); etcd stores only. */
  onLeadership?: (leader: boolean) => void;
  /** Where the server reports problems it cannot answer to a caller (default stderr). */
  onError?: (message: string, err?: unknown) => void;
}

/** K4sServer is a running or startable k4s server. */
export interface K4sServer {
  /** host:port once started. */
  readonly address: string;
  readonly port: number;
  readonly resources: ResourceStore;
  readonly events: EventRecorder;
  readonly logs: LogStore;
  readonly metrics: Metrics;
  /** Port of the `/metrics` endpoint once started, when served. */
  readonly metricsPort: number | undefined;
  /** The dashboard's address (http://host:port/) once started, when served. */
  readonly dashboardUrl: string | undefined;
  /** This server's place in its cluster, with an etcd store once started. */
  readonly cluster: ClusterMember | undefined;
  /**
   * Binds the port (and the metrics and dashboard ports), then opens the data dir and the store, then starts
   * the controllers. A failure rejects with a StartupError naming the address or path and the
   * reason, and leaves nothing bound and nothing written.
   */
  start(): Promise<void>;
  /** Stops controllers and sessions, then the port, then closes the store. */
  stop(): Promise<void>;
}

/** The file descriptors served by reflection: every k4s API file and its imports. */
function reflectionPackage(files: DescFile[]): Record<string, { fileDescriptorProtos: Buffer[] }> {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    f.dependencies.forEach(visit);
  };
  files.forEach(visit);
  const protos = [...seen.values()].map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
  return { k4s: { fileDescriptorProtos: protos } };
}

/**
 * The server's Store, opened when the server starts (so a server that cannot bind its port
 * writes nothing), with every committed write transaction counted.
 */
function countWrites(current: () => Store, metrics: Metrics): Store {
  return {
    revision: () => current().revision(),
    get: (key) => current().get(key),
    range: (prefix, o) => current().range(prefix, o),
    async txn(compares, ops) {
      const result = await current().txn(compares, ops);
      if (result.succeeded && ops.length > 0) metrics.storeWrites.inc();
      return result;
    },
    watch: (prefix, from, signal) => current().watch(prefix, from, signal),
    compactRevision: () => current().compactRevision(),
    close: () => current().close(),
  };
}

/** The etcd endpoints of a `--store etcd://...`, or undefined for any other store (a bad one fails at start). */
function etcdEndpointsOf(store: string | undefined): string[] | undefined {
  try {
    return store ? parseEtcdUrl(store) : undefined;
  } catch {
    return undefined;
  }
}

/** The StatsService of a server whose stats are off: every call says so. */
function statsOff(): ServiceHandlers<typeof StatsService> {
  const off = () => new ConnectError("live stats are off on this server", Code.Unavailable);
  return {
    getStats: () => Promise.reject(off()),
    watchStats: async function* () {
      throw off();
    },
  };
}

/** Key prefixes of the persisted tails of container output and of events (beside the objects' /k4s/). */
const LOG_PREFIX = "/k4s-logs/";
const EVENT_PREFIX = "/k4s-events/";

/** Connections the gRPC port holds at once by default. */
const DEFAULT_MAX_CONNECTIONS = 1024;
/** How long a connection without calls stays open by default (ms). */
const DEFAULT_IDLE_CONNECTION_TIMEOUT_MS = 120_000;
/**
 * A socket silent this long is dropped (ms): one that never finished its TLS handshake or
 * HTTP/2 preface. Live connections carry the server's keepalive ping every 15 s.
 */
const SILENT_SOCKET_MS = 4 * KEEPALIVE_TIME_MS;

/** Throws when a port would be reachable from other machines without a token to guard it. */
function refuseOpenPortsWithoutToken(options: ServerOptions, host: string, dashboardHost: string): void {
  if (!options.token && !isLoopback(host)) {
    throw new Error(`refusing to listen on ${host} without a token: set --token (or K4S_TOKEN), or listen on 127.0.0.1`);
  }
  if (options.dashboard && !options.token && !isLoopback(dashboardHost)) {
    throw new Error(`refusing to serve the dashboard on ${dashboardHost} without a token: set --token (or K4S_TOKEN), or serve it on 127.0.0.1`);
  }
}

/** The gRPC server with k4s's keepalive, size and idle limits, guarded by the token if there is one. */
function newGrpcServer(options: ServerOptions): grpc.Server {
  const grpcServer = new grpc.Server({
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_connection_idle_ms": options.idleConnectionTimeoutMs ?? DEFAULT_IDLE_CONNECTION_TIMEOUT_MS,
    // No channelz: nothing serves it, and it stamps a Date on every message of every stream.
    "grpc.enable_channelz": 0,
    interceptors: options.token ? [createAuthInterceptor(options.token)] : [],
  });
  if (options.token) guardUnknownMethods(grpcServer);
  return grpcServer;
}

/** Adds the standard health service (NOT_SERVING until started) and reflection to a gRPC server. */
function addHealthAndReflection(grpcServer: grpc.Server): HealthImplementation {
  const health = new HealthImplementation({ "": "NOT_SERVING" });
  health.addToServer(grpcServer);
  new ReflectionService(
    reflectionPackage([
      file_k4s_v1_resource_service,
      file_k4s_v1_messaging_service,
      file_k4s_v1_worker_service,
      file_k4s_v1_log_service,
      file_k4s_v1_stats_service,
      file_k4s_v1_info_service,
      file_grpc_health_v1_health,
    ]) as never,
  ).addToServer(grpcServer);
  return health;
}

/** The credentials of the gRPC port: TLS with the given certificate, or plaintext. */
function serverCredentials(tls: ServerOptions["tls"]): grpc.ServerCredentials {
  return tls
    ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }])
    : grpc.ServerCredentials.createInsecure();
}

/**
 * The server's output lines and events, kept in the store too (a bounded tail, flushed every
 * second) so that `k4s logs` and `k4s events` still show them after a restart.
 */
function createTails(store: Store, onError: (message: string, err?: unknown) => void) {
  const logJournal = createTailJournal({ store, prefix: LOG_PREFIX, ...protoChunks(LogLineSchema), seqOf: (l) => l.seq, onError });
  const eventJournal = createTailJournal({ store, prefix: EVENT_PREFIX, ...protoChunks(EventSchema), seqOf: (e) => e.seq, onError });
  return { logJournal, eventJournal, events: createEventRecorder({ journal: eventJournal }), logs: createLogStore({ journal: logJournal }) };
}

/** What every control plane of one server works over, and the store its send journals live in. */
type PlaneParts = Pick<ControlPlaneOptions, "resources" | "credentials" | "provePeer" | "events" | "logs" | "metrics" | "sessions" | "sessionRecords" | "onError"> & {
  store: Store;
};

/** The options of a server's control plane, with a send journal of its own (which reads back what earlier runs left unsettled). */
function planeOptions(options: ServerOptions, parts: PlaneParts, writer?: () => string | undefined): ControlPlaneOptions {
  const { store, ...shared } = parts;
  return {
    ...shared,
    journal: createSendJournal({ store, maxMessages: options.journalMaxMessages, maxBytes: options.journalMaxBytes, writer, onError: parts.onError }),
    heartbeatIntervalMs: options.heartbeatIntervalMs,
    countLoad: options.stats ?? true,
    maxSessionBufferBytes: options.maxSessionBufferBytes,
    maxInboxBytes: options.maxInboxBytes,
  };
}

/**
 * The control plane of a server over etcd: the holder plane writing through `parts.store`
 * (fenced by its member record), the leader's controllers through a store fenced by its
 * election key (a frozen old leader's writes are refused).
 */
function clusterPlaneOf(options: ServerOptions, parts: PlaneParts, kv: Store, member: () => ClusterMember | undefined): ClusterControlPlane {
  const self = () => member()?.advertise ?? "";
  const leaderKv = createFencedStore(kv, { fence: () => member()?.fence, self, onFenced: () => member()?.fenced(), onError: parts.onError });
  return createClusterControlPlane({
    // Its journal names this member in its keys: whose entries they are (see departed-journals.ts).
    ...planeOptions(options, parts, () => member()?.advertise),
    sessionRecords: kv,
    cluster: {
      self,
      token: options.token,
      // The peer links check the other server's certificate against the cluster's CA (each
      // server has a certificate of its own), or, without one, against this server's own.
      tls: options.tls ? { ca: options.tls.ca ?? options.tls.cert } : undefined,
      peerCredential: () => parts.credentials!.issuePeer(self()),
      leaderResources: createResourceStore(leaderKv),
      claimAttach: (container, sessionId) => member()?.claimAttach(container, sessionId) ?? Promise.resolve("(none: this server is joining the cluster)"),
      releaseAttach: async (container, sessionId) => member()?.releaseAttach(container, sessionId),
      leader: () => member()?.knownLeader ?? "",
      workersRefused: () =>
        member()?.lapsed ? new ConnectError(`k4s server ${self()} cannot renew its lease in etcd now: hosts and attached processes connect to another server`, Code.Unavailable) : undefined,
    },
  });
}

/** Makes the control plane of a server over SQLite. */
function planeMaker(options: ServerOptions, parts: PlaneParts): () => ControlPlane {
  return () => createControlPlane(planeOptions(options, parts));
}

/** How the API adapters report: internal errors to onError, every call's end to the metrics. */
function adapterOptions(metrics: Metrics, onError: (message: string, err?: unknown) => void, shutdown: AbortSignal): AdapterOptions {
  return {
    onInternalError: (method, err) => onError(`internal error in ${method.parent.typeName}/${method.name}`, err),
    onCallEnd: (method, code) => metrics.rpcs.inc({ method: `${method.parent.name}/${method.name}`, code: codeName(code) }),
    shutdown,
  };
}

/** The handlers of the k4s APIs one server serves. */
interface ApiHandlers {
  resource: ServiceHandlers<typeof ResourceService>;
  messaging: ServiceHandlers<typeof MessagingService>;
  worker: ServiceHandlers<typeof WorkerService>;
  log: ServiceHandlers<typeof LogService>;
  stats: ServiceHandlers<typeof StatsService>;
  info: ServiceHandlers<typeof InfoService>;
}

/** The k4s services, by name, for the health service's per-service status. */
const SERVICE_NAMES = [ResourceService, MessagingService, WorkerService, LogService, StatsService, InfoService].map((s) => s.typeName);

/**
 * Adds the k4s APIs to the gRPC server and returns the dashboard's routes: the same handler
 * objects, but not the worker protocol, whose bidi stream browsers cannot open over HTTP/1.1.
 */
function addApis(grpcServer: grpc.Server, apis: ApiHandlers, adapter: AdapterOptions): (router: ConnectRouter) => void {
  addService(grpcServer, ResourceService, apis.resource, adapter);
  addService(grpcServer, MessagingService, apis.messaging, adapter);
  addService(grpcServer, WorkerService, apis.worker, adapter);
  addService(grpcServer, LogService, apis.log, adapter);
  addService(grpcServer, StatsService, apis.stats, adapter);
  addService(grpcServer, InfoService, apis.info, adapter);
  return (router) => {
    addConnectService(router, ResourceService, apis.resource, adapter);
    addConnectService(router, MessagingService, apis.messaging, adapter);
    addConnectService(router, LogService, apis.log, adapter);
    addConnectService(router, StatsService, apis.stats, adapter);
    addConnectService(router, InfoService, apis.info, adapter);
  };
}

/** The ports a started server holds: gRPC's, and those of /metrics and the dashboard when served. */
interface BoundPorts {
  listener: Listener;
  metricsServer?: { port: number; close(): Promise<void> };
  dashboardServer?: DashboardServer;
}

/** What bindPorts binds besides what the server's options say. */
interface PortPlan {
  grpcServer: grpc.Server;
  credentials: grpc.ServerCredentials;
  host: string;
  dashboardHost: string;
  metrics: Metrics;
  dashboardRoutes: (router: ConnectRouter) => void;
  onError: (message: string, err?: unknown) => void;
}

/**
 * Binds the gRPC port, then the metrics and dashboard ports when they are asked for. A failure
 * rejects with a StartupError naming the address, after closing whatever was bound already.
 */
async function bindPorts(options: ServerOptions, plan: PortPlan): Promise<BoundPorts> {
  const { host, dashboardHost } = plan;
  const bound: Partial<BoundPorts> = {};
  try {
    const port = options.port ?? DEFAULT_PORT;
    bound.listener = await listen(plan.grpcServer, plan.credentials, {
      host: host.replace(/^\[(.*)\]$/, "$1"),
      port,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      silentSocketMs: SILENT_SOCKET_MS,
      onRefused: (message) => plan.onError(message),
    }).catch((err) => {
      throw listenError(err, "listen", joinHostPort(host, port), "port");
    });
    if (options.metricsPort !== undefined) {
      const metricsPort = options.metricsPort;
      bound.metricsServer = await serveMetrics(plan.metrics.registry, host, metricsPort, options.token).catch((err) => {
        throw listenError(err, "serve metrics", joinHostPort(host, metricsPort), "metricsPort");
      });
    }
    if (options.dashboard) {
      const { port: dashboardPort, assetsDir } = options.dashboard;
      bound.dashboardServer = await serveDashboard({
        host: dashboardHost,
        port: dashboardPort,
        token: options.token,
        tls: options.tls,
        assetsDir,
        routes: plan.dashboardRoutes,
        readMaxBytes: MAX_MESSAGE_BYTES,
      }).catch((err) => {
        throw listenError(err, "serve the dashboard", joinHostPort(dashboardHost, dashboardPort), "dashboardPort");
      });
    }
    return bound as BoundPorts;
  } catch (err) {
    await closePorts(bound, plan.grpcServer);
    throw err;
  }
}

/** Closes the ports of a start that failed (metrics, dashboard, then gRPC), cutting any call. */
async function closePorts(bound: Partial<BoundPorts>, grpcServer: grpc.Server): Promise<void> {
  await bound.metricsServer?.close();
  await bound.dashboardServer?.close();
  await bound.listener?.close();
  grpcServer.forceShutdown();
}

/**
 * This server's membership of its etcd cluster, not yet started: as leader its plane runs the
 * leader's controllers; when its lease lapses, the sessions it holds end (they move on).
 */
async function newClusterMember(
  options: ServerOptions,
  endpoints: string[],
  plane: ClusterControlPlane,
  boundAddress: { host: string; port: number },
  onError: (message: string, err?: unknown) => void,
): Promise<ClusterMember> {
  // Loaded here, as the etcd store is: the etcd client is not imported by SQLite servers.
  const { createClusterMember } = await import("./cluster/cluster-member.js");
  const { host, port } = boundAddress;
  return createClusterMember({
    endpoints,
    advertise: options.advertise ?? joinHostPort(host === "0.0.0.0" || host === "::" ? hostname() : host, port),
    leaseTtlSeconds: options.leaseTtlSeconds,
    onLeadership(leader) {
      void (leader ? plane.lead() : plane.follow());
      options.onLeadership?.(leader);
    },
    // Its lease may expire from now on, and the records of what it holds with it: another server
    // may then take those hosts' containers. It lets them go first (they reconnect elsewhere).
    onLapse(lapsed) {
      if (lapsed) plane.endSessions("this server cannot renew its lease in etcd: its sessions move to another server");
    },
    onError,
  });
}

/** Lets running calls finish for up to 2 s, then cuts the rest. */
function shutdownGrpcServer(grpcServer: grpc.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      grpcServer.forceShutdown();
      resolve();
    }, 2000);
    grpcServer.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** What the k4s APIs of a server serve. */
interface ApiParts {
  /** The store API requests go through (they take turns before the controllers). */
  requests: ResourceStore;
  resources: ResourceStore;
  plane: ControlPlane;
  logs: LogStore;
  events: EventRecorder;
  stats: StatsCollector;
  self(): string;
  cluster(): ClusterMember | undefined;
  startedAtMs: number;
  sessions: SessionTable;
}

/** The handlers of the k4s APIs of a server. */
function apiHandlers(options: ServerOptions, p: ApiParts): ApiHandlers {
  const { requests, resources, plane, logs, events, stats, startedAtMs, sessions } = p;
  const selfAddress = p.self;
  return {
    resource: createResourceService({ resources: requests, bookmarkIntervalMs: options.watchBookmarkIntervalMs }),
    messaging: plane.messagingService,
    worker: plane.workerService,
    log: createLogService({ logs, events, resources }),
    stats: options.stats === false ? statsOff() : createStatsService(stats),
    info: createInfoService({
      self: selfAddress,
      // Over SQLite the server is a cluster of one.
      servers: async () => {
        const cluster = p.cluster();
        return cluster ? cluster.servers() : [{ advertise: selfAddress(), startedAtMs, leader: true, sessions: sessions.list() }];
      },
    }),
  };
}

/** Opens the store the server's options name (options.store, else SQLite in options.dataDir), with their history bounds. */
function openServerStore(options: ServerOptions, onError: (message: string, err?: unknown) => void, signal: AbortSignal): Promise<Store> {
  return openStore({
    signal,
    url: options.store ?? (options.dataDir ? `sqlite:${options.dataDir}` : undefined),
    historyLimit: options.historyLimit,
    historyBytes: options.historyBytes,
    compactIntervalMs: options.compactIntervalMs,
    onError,
  });
}

/** A peer session is believed only from a live member of the cluster showing its peer credential. */
function peerProver(member: () => ClusterMember | undefined, credentials: HostCredentials): (advertise: string, credential: string) => Promise<PeerProof> {
  return async (advertise, credential) => {
    const cluster = member();
    if (cluster === undefined || !credentials.verifyPeer(advertise, credential)) return "invalid";
    return (await cluster.isMember(advertise)) ? "member" : "lapsed";
  };
}

/** Why a start under way ended: stop() was called. */
function stoppedWhileStarting(): ConnectError {
  return new ConnectError("the k4s server was stopped while it was starting", Code.Unavailable);
}

/** What stopParts stops, in order: what a server started (a plane or journals not started: none). */
interface StoppedParts {
  shutdown: AbortController;
  ports: BoundPorts | undefined;
  health: HealthImplementation;
  stats: StatsCollector;
  plane: ControlPlane | undefined;
  cluster(): ClusterMember | undefined;
  grpcServer: grpc.Server;
  journals: Array<{ stop(): Promise<void> }>;
  store(): Store | undefined;
}

/** Stops a server's parts: calls are refused first, the store closes last. */
async function stopParts(s: StoppedParts): Promise<void> {
  const { ports, health, stats, plane, grpcServer } = s;
  // From now on new calls are refused with a status that says "retry", not run halfway.
  s.shutdown.abort();
  // Clients that reconnect at once are refused until a server is back, not half-served.
  ports?.listener.stopAccepting();
  health.setStatus("", "NOT_SERVING");
  await ports?.metricsServer?.close();
  await ports?.dashboardServer?.close();
  stats.stop();
  // The plane first (its sessions end, their records go), then the cluster: this server
  // delivers nothing once another may take over what it held.
  await plane?.stop();
  await s.cluster()?.stop();
  await shutdownGrpcServer(grpcServer);
  await ports?.listener.close();
  for (const j of s.journals) await j.stop();
  await s.store()?.close();
}

/** Creates a k4s server; call start() to open its store and port. */
export function createServer(options: ServerOptions = {}): K4sServer {
  const host = options.host ?? "127.0.0.1";
  const dashboardHost = options.dashboard?.host ?? "127.0.0.1";
  refuseOpenPortsWithoutToken(options, host, dashboardHost);
  const onError = options.onError ?? ((message, err) => console.error(`k4s: ${message}`, err ?? ""));
  let store: Store | undefined;
  const current = (): Store => {
    if (!store) throw new ConnectError("the k4s server is not started", Code.Unavailable);
    return store;
  };
  const metrics = createMetrics();
  const kv = countWrites(current, metrics);
  // Controllers and the messaging plane work in the background; API requests take turns first.
  const resources = createResourceStore(kv);
  const requests = createResourceStore(kv, { priority: "request" });
  const { logJournal, eventJournal, events, logs } = createTails(kv, onError);
  const startedAtMs = Date.now();
  let cluster: ClusterMember | undefined;
  const sessions = createSessionTable({ cluster: () => cluster });
  const credentials = createHostCredentials(kv);
  const provePeer = peerProver(() => cluster, credentials);
  // Over etcd, several servers share the state. Every server holds the sessions connected to it:
  // the lifecycle of their containers writes through its member record (a server whose lease
  // expired writes nothing), and so does its journal of durable sends. The leader also runs the
  // ReplicaSet and Service controllers and the scheduler, whose writes compare its election key
  // (a frozen old leader's are refused).
  const etcdEndpoints = etcdEndpointsOf(options.store);
  const memberKv = etcdEndpoints
    ? createFencedStore(kv, { fence: () => cluster?.memberFence, self: () => cluster?.advertise ?? "", onFenced: () => {}, onError, fencedBy: "membership" })
    : kv;
  const planeParts = { store: memberKv, resources: etcdEndpoints ? createResourceStore(memberKv) : resources, credentials, provePeer, events, logs, metrics, sessions, onError };
  const clusterPlane = etcdEndpoints ? clusterPlaneOf(options, planeParts, kv, () => cluster) : undefined;
  const plane = clusterPlane ?? planeMaker(options, planeParts)();
  const stats = createStatsCollector({ source: plane.load });
  const shutdown = new AbortController();
  const grpcServer = newGrpcServer(options);
  const adapter = adapterOptions(metrics, onError, shutdown.signal);
  let port = 0;
  const selfAddress = () => cluster?.advertise ?? joinHostPort(host, port);
  const apis = apiHandlers(options, { requests, resources, plane, logs, events, stats, self: selfAddress, cluster: () => cluster, startedAtMs, sessions });
  const dashboardRoutes = addApis(grpcServer, apis, adapter);
  const health = addHealthAndReflection(grpcServer);

  let ports: BoundPorts | undefined;
  const portPlan: PortPlan = { grpcServer, credentials: serverCredentials(options.tls), host, dashboardHost, metrics, dashboardRoutes, onError };
  let starting: Promise<void> | undefined;
  /** Aborted by stop(): a start step waiting for etcd (reaching it, joining the cluster) gives up at once. */
  const startCancel = new AbortController();
  let stopping: Promise<void> | undefined;
  /** What start() started (or began to start): stop() stops only those. */
  const started = { plane: false, journals: false };
  return {
    get address() {
      return joinHostPort(host, port);
    },
    get port() {
      return port;
    },
    resources,
    events,
    logs,
    metrics,
    get metricsPort() {
      return ports?.metricsServer?.port;
    },
    get dashboardUrl() {
      return ports?.dashboardServer?.url;
    },
    get cluster() {
      return cluster;
    },
    start() {
      starting ??= startParts();
      return starting;
    },
    async stop() {
      // A start still under way ends: a step waiting for etcd (reaching it, joining the cluster)
      // gives up at once, any other finishes and the next one does not begin; then whatever it
      // started is stopped (once: a start that failed stopped it).
      startCancel.abort(stoppedWhileStarting());
      await starting?.catch(() => {});
      await stopStarted();
    },
  };

  /** Stops what start() started, once. */
  function stopStarted(): Promise<void> {
    const journals = started.journals ? [logJournal, eventJournal] : [];
    stopping ??= stopParts({ shutdown, ports, health, stats, plane: started.plane ? plane : undefined, cluster: () => cluster, grpcServer, journals, store: () => store });
    return stopping;
  }

  /** Throws when stop() was called: a start under way takes no further step. */
  function notStopping(): void {
    startCancel.signal.throwIfAborted();
  }

  async function startParts(): Promise<void> {
    // Ports first, then the data dir: a server that cannot listen leaves no trace behind.
    const bound = await bindPorts(options, portPlan);
    ports = bound;
    port = bound.listener.port;
    notStopping();
    try {
      store = await openServerStore(options, onError, startCancel.signal);
    } catch (err) {
      ports = undefined;
      await closePorts(bound, grpcServer);
      throw err;
    }
    try {
      await startOn();
    } catch (err) {
      // A start that failed halfway (the plane, the member) stops what it started: no port, no
      // member record, no leadership campaign is left behind for a lease's TTL.
      await stopStarted().catch((e: unknown) => onError("stopping what a failed start started failed", e));
      throw err;
    }
  }

  /** What start() does once its port is bound and its store open. */
  async function startOn(): Promise<void> {
    await events.restore();
    await logs.restore();
    notStopping();
    if (clusterPlane && etcdEndpoints) {
      // The member first: every session the plane takes is recorded under its lease, and its
      // leadership (which may come at once) starts the leader's controllers once the plane runs.
      await credentials.load();
      cluster = await newClusterMember(options, etcdEndpoints, clusterPlane, { host, port }, onError);
      notStopping();
      await untilAborted(cluster.start(), startCancel.signal);
      notStopping();
    }
    started.plane = true;
    await plane.start();
    logs.retain(new Set((await resources.list("Container")).items.map((c) => c.metadata?.name ?? "")));
    notStopping();
    started.journals = true;
    logJournal.start();
    eventJournal.start();
    if (options.stats !== false) stats.start();
    health.setStatus("", "SERVING");
    for (const s of SERVICE_NAMES) health.setStatus(s, "SERVING");
  }
}
