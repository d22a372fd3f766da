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
import { DEFAULT_PORT } from "../api/address.js";
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
import { createControlPlane } from "./control-plane.js";
import { createHostCredentials } from "./messaging/host-credentials.js";
import { createSendJournal } from "./messaging/send-journal.js";
import { createEventRecorder, type EventRecorder } from "./event-recorder.js";
import { createAuthInterceptor, guardUnknownMethods, isLoopback } from "./auth.js";
import { addService, type AdapterOptions, type ServiceHandlers } from "./grpc-adapter.js";
import { addConnectService } from "./connect-adapter.js";
import { serveDashboard, type DashboardServer } from "./dashboard-server.js";
import { createInfoService } from "./handlers/info-service.js";
import { createLogService } from "./handlers/log-service.js";
import { createResourceService } from "./handlers/resource-service.js";
import { createMetrics, serveMetrics, type Metrics } from "./metrics.js";
import { createLogStore, type LogStore } from "./log-store.js";
import { createResourceStore } from "./store/create-resource-store.js";
import type { ResourceStore } from "./store/resource-store.js";
import { openStore, parseEtcdUrl } from "./store/open-store.js";
import type { ClusterMember, SessionEntry } from "./cluster/cluster-member.js";
import type { WorkerLink } from "./messaging/worker-link.js";
import { createStandbyPlane } from "./cluster/standby-plane.js";
import { createLeaderGatedPlane, standbyError, type LeaderGatedPlane } from "./cluster/leader-gated-plane.js";
import type { Store } from "./store/store.js";
import { createStatsCollector } from "./stats/stats-collector.js";
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
  /** TLS certificate chain and private key (PEM text); plaintext HTTP/2 when absent. */
  tls?: { cert: string | Buffer; key: string | Buffer };
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

/** Opens the dashboard's port, serving the given Connect routes. */
function startDashboard(
  options: ServerOptions,
  dashboard: NonNullable<ServerOptions["dashboard"]>,
  dashboardHost: string,
  routes: (router: ConnectRouter) => void,
): Promise<DashboardServer> {
  const { port: dashboardPort, assetsDir } = dashboard;
  const dashboardAddress = `${dashboardHost.includes(":") ? `[${dashboardHost}]` : dashboardHost}:${dashboardPort}`;
  return serveDashboard({
    host: dashboardHost,
    port: dashboardPort,
    token: options.token,
    tls: options.tls,
    assetsDir,
    routes,
    readMaxBytes: MAX_MESSAGE_BYTES,
  }).catch((err) => {
    throw listenError(err, "serve the dashboard", dashboardAddress, "dashboardPort");
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
  // Output lines and events are kept in the store too (a bounded tail, flushed every second),
  // so `k4s logs` and `k4s events` still show them after a restart.
  const logJournal = createTailJournal({ store: kv, prefix: LOG_PREFIX, ...protoChunks(LogLineSchema), seqOf: (l) => l.seq, onError });
  const eventJournal = createTailJournal({ store: kv, prefix: EVENT_PREFIX, ...protoChunks(EventSchema), seqOf: (e) => e.seq, onError });
  const events = createEventRecorder({ journal: eventJournal });
  const logs = createLogStore({ journal: logJournal });
  const credentials = createHostCredentials(kv);
  const startedAtMs = Date.now();
  // The sessions held here: recorded in etcd too when in a cluster, for every server to see.
  const sessions = new Map<string, SessionEntry>();
  const entryOf = (link: WorkerLink): SessionEntry => ({
    kind: link.role === "attached" ? "attached" : "host",
    name: link.role === "attached" ? link.container : link.name,
    sessionId: link.id,
  });
  const sessionHooks = {
    opened(link: WorkerLink) {
      const e = entryOf(link);
      sessions.set(e.sessionId, e);
      cluster?.sessionStarted(e);
    },
    ended(link: WorkerLink) {
      const e = entryOf(link);
      if (sessions.delete(e.sessionId)) cluster?.sessionEnded(e);
    },
  };
  const makePlane = () =>
    createControlPlane({
      resources,
      credentials,
      // A new plane (a new leadership term) reads back what earlier ones left unsettled.
      journal: createSendJournal({ store: kv, maxMessages: options.journalMaxMessages, maxBytes: options.journalMaxBytes, onError }),
      events,
      logs,
      metrics,
      onError,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      countLoad: options.stats ?? true,
      sessions: sessionHooks,
      maxSessionBufferBytes: options.maxSessionBufferBytes,
      maxInboxBytes: options.maxInboxBytes,
    });
  const standby = () => standbyError(cluster?.advertise ?? "", cluster?.knownLeader);
  // A standby routes its clients' calls to the leader over a peer link.
  const makeStandby = () =>
    createStandbyPlane({
      self: () => cluster?.advertise ?? "",
      leader: () => cluster?.knownLeader,
      standby,
      token: options.token,
      // The servers of one cluster are expected to share their certificate (see docs/cluster.md).
      tls: options.tls ? { ca: options.tls.cert } : undefined,
      logs,
      metrics,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      maxSessionBufferBytes: options.maxSessionBufferBytes,
    });
  // Over etcd, several servers may share the state: only the elected leader runs the controllers.
  const etcdEndpoints = etcdEndpointsOf(options.store);
  let cluster: ClusterMember | undefined;
  const gated: LeaderGatedPlane | undefined = etcdEndpoints
    ? createLeaderGatedPlane({ make: makePlane, makeStandby, standby, onError })
    : undefined;
  const plane = gated ?? makePlane();
  const stats = createStatsCollector({ source: plane.load });
  const statsService = options.stats === false ? statsOff() : createStatsService(stats);
  const shutdown = new AbortController();
  const grpcServer = newGrpcServer(options);
  const adapter: AdapterOptions = {
    onInternalError: (method, err) => onError(`internal error in ${method.parent.typeName}/${method.name}`, err),
    onCallEnd: (method, code) => metrics.rpcs.inc({ method: `${method.parent.name}/${method.name}`, code: codeName(code) }),
    shutdown: shutdown.signal,
  };
  const resourceService = createResourceService({ resources: requests, bookmarkIntervalMs: options.watchBookmarkIntervalMs });
  const logService = createLogService({ logs, events, resources });
  addService(grpcServer, ResourceService, resourceService, adapter);
  addService(grpcServer, MessagingService, plane.messagingService, adapter);
  addService(grpcServer, WorkerService, plane.workerService, adapter);
  addService(grpcServer, LogService, logService, adapter);
  addService(grpcServer, StatsService, statsService, adapter);
  const selfAddress = () => cluster?.advertise ?? `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const infoService = createInfoService({
    self: selfAddress,
    // Over SQLite the server is a cluster of one.
    servers: async () =>
      cluster ? cluster.servers() : [{ advertise: selfAddress(), startedAtMs, leader: true, sessions: [...sessions.values()] }],
  });
  addService(grpcServer, InfoService, infoService, adapter);
  // The dashboard's port serves the same handler objects (not the worker protocol, whose bidi
  // stream browsers cannot open over HTTP/1.1).
  const dashboardRoutes = (router: ConnectRouter) => {
    addConnectService(router, ResourceService, resourceService, adapter);
    addConnectService(router, MessagingService, plane.messagingService, adapter);
    addConnectService(router, LogService, logService, adapter);
    addConnectService(router, StatsService, statsService, adapter);
    addConnectService(router, InfoService, infoService, adapter);
  };
  const health = addHealthAndReflection(grpcServer);
  const serviceNames = [ResourceService, MessagingService, WorkerService, LogService, StatsService, InfoService].map((s) => s.typeName);

  let port = 0;
  let listener: Listener | undefined;
  let metricsServer: { port: number; close(): Promise<void> } | undefined;
  let dashboardServer: DashboardServer | undefined;
  const tlsCredentials = serverCredentials(options.tls);
  return {
    get address() {
      return `${host.includes(":") ? `[${host}]` : host}:${port}`;
    },
    get port() {
      return port;
    },
    resources,
    events,
    logs,
    metrics,
    get metricsPort() {
      return metricsServer?.port;
    },
    get dashboardUrl() {
      return dashboardServer?.url;
    },
    get cluster() {
      return cluster;
    },
    async start() {
      // Ports first, then the data dir: a server that cannot listen leaves no trace behind.
      const hostPart = host.includes(":") ? `[${host}]` : host;
      const wanted = `${hostPart}:${options.port ?? DEFAULT_PORT}`;
      try {
        listener = await listen(grpcServer, tlsCredentials, {
          host: host.replace(/^\[(.*)\]$/, "$1"),
          port: options.port ?? DEFAULT_PORT,
          maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
          silentSocketMs: SILENT_SOCKET_MS,
          onRefused: (message) => onError(message),
        }).catch((err) => {
          throw listenError(err, "listen", wanted, "port");
        });
        port = listener.port;
        if (options.metricsPort !== undefined) {
          const metricsPort = options.metricsPort;
          metricsServer = await serveMetrics(metrics.registry, host, metricsPort, options.token).catch((err) => {
            throw listenError(err, "serve metrics", `${hostPart}:${metricsPort}`, "metricsPort");
          });
        }
        if (options.dashboard) dashboardServer = await startDashboard(options, options.dashboard, dashboardHost, dashboardRoutes);
        store = await openStore({
          url: options.store ?? (options.dataDir ? `sqlite:${options.dataDir}` : undefined),
          historyLimit: options.historyLimit,
          historyBytes: options.historyBytes,
          compactIntervalMs: options.compactIntervalMs,
          onError,
        });
      } catch (err) {
        await metricsServer?.close();
        metricsServer = undefined;
        await dashboardServer?.close();
        dashboardServer = undefined;
        await listener?.close();
        listener = undefined;
        grpcServer.forceShutdown();
        throw err;
      }
      await events.restore();
      await logs.restore();
      await plane.start();
      if (gated && etcdEndpoints) {
        // Loaded here, as the etcd store is: the etcd client is not imported by SQLite servers.
        const { createClusterMember } = await import("./cluster/cluster-member.js");
        cluster = createClusterMember({
          endpoints: etcdEndpoints,
          advertise: options.advertise ?? `${host === "0.0.0.0" || host === "::" ? hostname() : hostPart}:${port}`,
          leaseTtlSeconds: options.leaseTtlSeconds,
          onLeadership(leader) {
            void (leader ? gated.lead() : gated.follow());
            options.onLeadership?.(leader);
          },
          onError,
        });
        await cluster.start();
      }
      logs.retain(new Set((await resources.list("Container")).items.map((c) => c.metadata?.name ?? "")));
      logJournal.start();
      eventJournal.start();
      if (options.stats !== false) stats.start();
      health.setStatus("", "SERVING");
      for (const s of serviceNames) health.setStatus(s, "SERVING");
    },
    async stop() {
      // From now on new calls are refused with a status that says "retry", not run halfway.
      shutdown.abort();
      health.setStatus("", "NOT_SERVING");
      await metricsServer?.close();
      await dashboardServer?.close();
      stats.stop();
      await cluster?.stop();
      await plane.stop();
      await shutdownGrpcServer(grpcServer);
      await listener?.close();
      await logJournal.stop();
      await eventJournal.stop();
      await store?.close();
    },
  };
}
