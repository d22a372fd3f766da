/**
 * The typed k4s client: resource CRUD and watch over ResourceService, container output and
 * cluster events over LogService, and messages (send / request) over one pipelined
 * WorkerService session, so a busy caller never pays a unary call per message.
 */
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient as createConnectClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { DEFAULT_PORT, normalizeAddresses } from "../api/address.js";
import { createFailoverTransport } from "./failover-transport.js";
import { parseKind, unwrap, wrap, type AnyObject, type Kind, type ObjectOf } from "../api/kinds.js";
import { decodePayload } from "../api/payload.js";
import { LogService, type Event, type LogLine } from "../gen/k4s/v1/log_service_pb.js";
import { StatsService, type Stats } from "../gen/k4s/v1/stats_service_pb.js";
import { InfoService, type ClusterServer } from "../gen/k4s/v1/info_service_pb.js";
import { ResourceService } from "../gen/k4s/v1/resource_service_pb.js";
import { ObjectSchema, type ReplicaSet } from "../gen/k4s/v1/resources_pb.js";
import { http2ConnectOptions, KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, type TlsOptions } from "../transport/channel.js";
import { ENV, tlsFromEnvironment } from "../transport/environment.js";
import { createMessageCaller } from "./message-caller.js";
import { resumeStream, retryRefusedCalls, type ResumeOptions } from "./resume.js";

/**
 * ClientOptions say where the server is and how to authenticate; what is omitted comes from the
 * environment (K4S_ADDRESS, K4S_TOKEN, K4S_TLS, K4S_TLS_CA, K4S_TLS_SERVERNAME), as for the CLI.
 */
export interface ClientOptions {
  /**
   * The server's host:port, e.g. "127.0.0.1:50051" (default env K4S_ADDRESS, else
   * 127.0.0.1:50051); or the servers of one cluster, as an array or comma-separated: calls and
   * the messaging session move to the next one when theirs is gone.
   */
  address?: string | readonly string[];
  /** Bearer token sent with every call when the server requires one (default env K4S_TOKEN). */
  token?: string;
  /** Name this client announces on its messaging session (default `client-<hostname>-<pid>`). */
  name?: string;
  /**
   * Connect over TLS: true trusts the system's CAs; `ca` adds a PEM certificate to trust
   * (default from the environment: K4S_TLS=1 or K4S_TLS_CA).
   */
  tls?: boolean | TlsOptions;
  /**
   * Re-open the messaging session when it breaks, so calls wait (within their timeout) for the
   * server to come back (default true). A one-shot program sets false to fail at once when the
   * server cannot be reached; the next call then opens a new session.
   */
  reconnect?: boolean;
}

/** KindName is a kind or any of its aliases ("Container", "containers", "c", "rs", "svc", ...). */
export type KindName = Kind | (string & {});

/** ApplyOutcome is what apply did to one object of a manifest. */
export interface ApplyOutcome {
  kind: Kind;
  name: string;
  /** created | configured | unchanged */
  action: string;
  /** The object as stored (or as it would be, for a dry run); objectToJson() makes it plain JSON. */
  object: AnyObject;
}

/** ListFilter selects objects by a glob over their names and by their labels. */
export interface ListFilter {
  /** minimatch glob over names; empty means all. */
  nameGlob?: string;
  /** Labels the objects must all carry with these values. */
  labels?: Record<string, string>;
  /**
   * A label selector as kubectl's `-l` takes it, evaluated by the server: `app=web`,
   * `tier!=db`, `env in (a,b)`, `env notin (a)`, `canary`, `!canary`, comma-separated.
   */
  labelSelector?: string;
}

/** ListOptions filter a listing and, optionally, ask for one page of it. */
export interface ListOptions extends ListFilter {
  /**
   * Read one page of at most this many objects (0: the server's default page size) and return
   * its continueToken. Undefined: read every page and return all the objects.
   */
  limit?: number;
  /** Read the page after the one this token came with (same kind and filter). */
  continueToken?: string;
}

/** ListOutcome is a consistent listing (or one page of it) and the resource version it was read at. */
export interface ListOutcome<T extends AnyObject = AnyObject> {
  /** Sorted by name. */
  items: T[];
  /** Pass to watch() to follow changes from exactly this listing on. */
  resourceVersion: string;
  /** When one page was asked for and more follow: pass it as ListOptions.continueToken. */
  continueToken?: string;
  /** An estimate of the objects on the following pages, when the server knows it. */
  remainingItemCount?: number;
}

/** WatchOptions select the changes a watch streams. */
export interface WatchOptions extends ListFilter {
  /** A kind or alias; undefined watches every kind. */
  kind?: KindName;
  /** Stream changes after this version; undefined first lists current objects as ADDED. */
  resourceVersion?: string;
  /** Ends the watch; the iteration then simply finishes. */
  signal?: AbortSignal;
  /**
   * When the watch loses its server, re-open it from the last resource version it delivered
   * (as Kubernetes' reflector does) once the server is back, instead of failing (default false).
   * A watch cut during its initial listing lists again.
   */
  resume?: boolean | ResumeOptions;
}

/**
 * WatchEvent is one change of one object, in Kubernetes' watch vocabulary; T is the object's
 * type when the watch is of one kind.
 */
export interface WatchEvent<T extends AnyObject = AnyObject> {
  type: "ADDED" | "MODIFIED" | "DELETED";
  /** The object after the change (for DELETED, as it was last stored). */
  object: T;
  /**
   * The revision of the change. Several objects changed by one write (one Apply) share it, so
   * it is not where to resume a cut watch: WatchStream.resourceVersion is.
   */
  resourceVersion: string;
}

/** WatchStream is a running watch: its events, and the point to resume it from. */
export interface WatchStream<T extends AnyObject = AnyObject> extends AsyncIterable<WatchEvent<T>> {
  /**
   * Where a new watch picks up with nothing lost and nothing of the listing missing: every
   * change up to this version has been yielded and consumed (it moves past a revision only
   * once its last event was handed over and the next one asked for; bookmarks from the server
   * move it while nothing selected changes). Empty until the initial listing is complete.
   * After the stream broke, resume with `watch({ ..., resourceVersion: stream.resourceVersion })`
   * (empty: start over with a listing).
   */
  readonly resourceVersion: string;
}

/** LogsOptions select a container's output. */
export interface LogsOptions {
  /** Keep streaming new lines until signal aborts. */
  follow?: boolean;
  /** Only the last N kept lines (0 or undefined: all kept). */
  tail?: number;
  /** Only lines after this position (a LogLine's seq already seen). */
  afterSeq?: bigint;
  /**
   * When a follow loses its server, re-open it after the last line received (no line repeated
   * or skipped) once the server is back, instead of failing (default false).
   */
  resume?: boolean | ResumeOptions;
  signal?: AbortSignal;
}

/** EventsOptions select cluster events. */
export interface EventsOptions {
  follow?: boolean;
  /** Only events about objects of this kind (aliases accepted). */
  kind?: KindName;
  /** Only events about objects of this name. */
  name?: string;
  /** Only events after this position (an Event's seq already seen). */
  afterSeq?: bigint;
  /** When a follow loses its server, re-open it after the last event received (default false). */
  resume?: boolean | ResumeOptions;
  signal?: AbortSignal;
}

/** SendOptions shape a fire-and-forget message. */
export interface SendOptions {
  /** Payload content type; a string with "text/plain" travels as text, default JSON. */
  contentType?: string;
  /**
   * Milliseconds to wait: for a send, until an inbox took the message (a service waits for a
   * ready endpoint); for a request, until the reply (default 30000).
   */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** RequestOptions shape a request. */
export interface RequestOptions extends SendOptions {}

/** ServerVersion is which server a client talks to. */
export interface ServerVersion {
  /** The k4s release the server runs, e.g. "0.2.0". */
  version: string;
  /** The API version of its objects, "k4s/v1". */
  apiVersion: string;
  /** The Node.js version it runs on. */
  runtimeVersion: string;
  /** Its operating system and CPU architecture, e.g. "linux/x64". */
  platform: string;
}

/** SendReceipt tells which container's inbox took a message. */
export interface SendReceipt {
  container: string;
}

/** K4sClient is a connection to a k4s server. Errors are ConnectErrors with the server's code. */
export interface K4sClient {
  /** The server's host:port. */
  readonly address: string;
  /** Creates or updates every object of a manifest (YAML/JSON text or typed objects), all or nothing. */
  apply(manifest: string | readonly AnyObject[], options?: { dryRun?: boolean }): Promise<ApplyOutcome[]>;
  /** Reads one object; NOT_FOUND when there is none. */
  get<K extends Kind>(kind: K, name: string): Promise<ObjectOf<K>>;
  get(kind: KindName, name: string): Promise<AnyObject>;
  /**
   * Lists the objects of a kind, sorted by name: every page, read at one version, unless
   * options.limit asks for a single page.
   */
  list<K extends Kind>(kind: K, options?: ListOptions): Promise<ListOutcome<ObjectOf<K>>>;
  list(kind: KindName, options?: ListOptions): Promise<ListOutcome>;
  /** Stores a new object; ALREADY_EXISTS when the name is taken. */
  create<T extends AnyObject>(object: T): Promise<T>;
  /** Replaces an object's labels, annotations and spec; a set resourceVersion is a precondition (ABORTED). */
  update<T extends AnyObject>(object: T): Promise<T>;
  /** Sets a ReplicaSet's replica count. */
  scale(name: string, replicas: number): Promise<ReplicaSet>;
  /** Deletes an object (a ReplicaSet with its replicas); resolves to the object as deleted. */
  delete(kind: KindName, name: string, options?: { resourceVersion?: string }): Promise<AnyObject>;
  /**
   * Streams object changes until the signal aborts or the consumer stops iterating. A watch of
   * one kind, named by its kind ("Container"), yields objects of that kind.
   */
  watch<K extends Kind>(options: WatchOptions & { kind: K }): WatchStream<ObjectOf<K>>;
  watch(options?: WatchOptions): WatchStream;
  /** Streams a container's output lines, one by one. */
  logs(container: string, options?: LogsOptions): AsyncIterable<LogLine>;
  /** Streams cluster events. */
  events(options?: EventsOptions): AsyncIterable<Event>;
  /** The latest snapshot of the live load per container, service and host. */
  stats(): Promise<Stats>;
  /** The server's release and platform, as `k4s version` shows them. */
  serverVersion(): Promise<ServerVersion>;
  /** The servers of the cluster, which one leads, and the worker sessions each holds (`k4s get servers`). */
  servers(): Promise<ClusterServer[]>;
  /** The latest load snapshot at once, then one per sampling window (about a second), until signal aborts. */
  watchStats(options?: { signal?: AbortSignal }): AsyncIterable<Stats>;
  /** Queues a fire-and-forget message at a target ("container/NAME", "service/NAME" or NAME). */
  send(target: string, value: unknown, options?: SendOptions): Promise<SendReceipt>;
  /** Sends a request and resolves to the decoded reply (at most once). */
  request<T = unknown>(target: string, value: unknown, options?: RequestOptions): Promise<T>;
  /** Ends the messaging session and the connection. */
  close(): Promise<void>;
}

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/**
 * Iterates a server stream and ends quietly when the caller's own signal aborted it: a watch
 * the caller stopped is a finished watch, not an error.
 */
async function* quietOnAbort<T>(source: AsyncIterable<T>, signal: AbortSignal | undefined): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (err) {
    if (signal?.aborted) return;
    throw err;
  }
}

/** The resume options of a `resume` setting (true: the defaults). */
function resumeOptions(resume: true | ResumeOptions): ResumeOptions {
  return resume === true ? {} : resume;
}

/** How long the resource client's HTTP/2 connection may sit idle before it is closed (ms). */
const IDLE_CONNECTION_TIMEOUT_MS = 60_000;

function noObject(kind: string, name: string): never {
  throw new ConnectError(`the server's apply result for ${kind} "${name}" carries no object`, Code.Internal);
}

function sendResult(res: { container: string }): { container: string } {
  return { container: res.container };
}

/** Where a client connects and how (options first, then the environment), and its HTTP/2 transport. */
function connect(options: ClientOptions) {
  // Accept "http(s)://host:port" too, as copied from a URL; https means TLS. A bare host means
  // the default port, as for the server. Several addresses (an array, or comma-separated) are
  // the servers of one cluster.
  const given = options.address ?? process.env[ENV.address] ?? `127.0.0.1:${DEFAULT_PORT}`;
  const addresses = normalizeAddresses(given);
  const token = options.token ?? (process.env[ENV.token] || undefined);
  const tlsOption = options.tls ?? ([given].flat().some((a) => /^https:\/\//.test(a)) ? true : tlsFromEnvironment());
  const tls = tlsOption === true ? {} : tlsOption || undefined;
  // Our own session managers, so close() can drop the HTTP/2 connections instead of leaving
  // them to keep the process alive until their idle timeout.
  const sessionManagers: Http2SessionManager[] = [];
  const transports = addresses.map((address) => {
    const baseUrl = `${tls ? "https" : "http"}://${address}`;
    const sessionManager = new Http2SessionManager(
      baseUrl,
      { pingIntervalMs: KEEPALIVE_TIME_MS, pingTimeoutMs: KEEPALIVE_TIMEOUT_MS, idleConnectionTimeoutMs: IDLE_CONNECTION_TIMEOUT_MS },
      http2ConnectOptions(tls),
    );
    sessionManagers.push(sessionManager);
    return createGrpcTransport({
      baseUrl,
      sessionManager,
      // A call the server refused while stopping did not run: wait for the server and send it
      // again (with several servers, the next one takes it).
      interceptors: [...(addresses.length === 1 ? [retryRefusedCalls()] : []), ...(token ? [bearer(token)] : [])],
    });
  });
  const transport = transports.length === 1 ? transports[0]! : createFailoverTransport(transports);
  return { address: addresses.join(","), token, tls, sessionManagers, transport };
}

/** Lists objects of one kind: one page when asked for (limit or continueToken), else every page. */
async function listResources(resources: Client<typeof ResourceService>, kind: KindName, opts: ListOptions): Promise<ListOutcome> {
  const req = { kind: parseKind(kind), nameGlob: opts.nameGlob ?? "", labels: opts.labels ?? {}, labelSelector: opts.labelSelector ?? "" };
  const page = async (limit: number, continueToken: string): Promise<ListOutcome> => {
    const res = await resources.list({ ...req, limit, continueToken });
    return {
      items: res.items.map((o) => unwrap(o)),
      resourceVersion: res.resourceVersion,
      ...(res.continueToken ? { continueToken: res.continueToken } : {}),
      ...(res.remainingItemCount > 0n ? { remainingItemCount: Number(res.remainingItemCount) } : {}),
    };
  };
  if (opts.limit !== undefined || opts.continueToken) return page(opts.limit ?? 0, opts.continueToken ?? "");
  // Every page, as Kubernetes' pager does; a listing whose version was compacted away
  // between pages starts over.
  for (let attempt = 1; ; attempt++) {
    try {
      const first = await page(0, "");
      const items = first.items;
      for (let token = first.continueToken; token; ) {
        const next = await page(0, token);
        items.push(...next.items);
        token = next.continueToken;
      }
      return { items, resourceVersion: first.resourceVersion };
    } catch (err) {
      if (ConnectError.from(err).code !== Code.OutOfRange || attempt >= 3) throw err;
    }
  }
}

/** Watches objects through the ResourceService; with opts.resume the stream re-opens from its last version after a connection loss. */
function watchResources(resources: Client<typeof ResourceService>, address: string, opts: WatchOptions): WatchStream {
  // The resume point: a version whose changes were all delivered and consumed (a response's,
  // after its last event; never one of the initial listing's objects, which carry their own
  // older versions). Empty until the listing is complete: a watch cut during it lists again.
  let from = opts.resourceVersion ?? "";
  const open = (established?: () => void) =>
    (async function* (): AsyncGenerator<WatchEvent> {
      const req = {
        kind: opts.kind ? parseKind(opts.kind) : "",
        nameGlob: opts.nameGlob ?? "",
        labels: opts.labels ?? {},
        labelSelector: opts.labelSelector ?? "",
        resourceVersion: from,
      };
      for await (const res of resources.watch(req, { signal: opts.signal, onHeader: established })) {
        for (const e of res.events) {
          const object = unwrap(e.object);
          yield { type: e.type as WatchEvent["type"], object, resourceVersion: object.metadata?.resourceVersion ?? "" };
        }
        // Reached once the consumer asks for more after the response's last event.
        if (res.resourceVersion) from = res.resourceVersion;
      }
    })();
  const events = opts.resume ? resumeStream(address, open, opts.signal, resumeOptions(opts.resume)) : quietOnAbort(open(), opts.signal);
  return {
    [Symbol.asyncIterator]: () => events[Symbol.asyncIterator](),
    get resourceVersion() {
      return from;
    },
  };
}

/** Creates a client for the k4s server at options.address; nothing connects until the first call. */
export function createClient(options: ClientOptions = {}): K4sClient {
  const { address, token, tls, sessionManagers, transport } = connect(options);
  const resources = createConnectClient(ResourceService, transport);
  const logService = createConnectClient(LogService, transport);
  const statsService = createConnectClient(StatsService, transport);
  const infoService = createConnectClient(InfoService, transport);
  const messages = createMessageCaller({
    address,
    token,
    tls,
    name: options.name ?? `client-${hostname()}-${process.pid}`,
    reconnect: options.reconnect ?? true,
  });
  let closed = false;

  const kindName = (kind: KindName): Kind => parseKind(kind);

  const client: K4sClient = {
    address,

    async apply(manifest, opts = {}) {
      const req =
        typeof manifest === "string"
          ? { manifest, dryRun: opts.dryRun ?? false }
          : { objects: manifest.map((o) => wrap(o)), dryRun: opts.dryRun ?? false };
      const res = await resources.apply(req);
      return res.results.map((r) => ({
        kind: parseKind(r.kind),
        name: r.name,
        action: r.action,
        object: r.object?.kind.value ?? noObject(r.kind, r.name),
      }));
    },

    async get(kind: KindName, name: string) {
      const res = await resources.get({ kind: kindName(kind), name });
      return unwrap(res.object);
    },

    list: (kind: KindName, opts: ListOptions = {}) => listResources(resources, kind, opts),

    async create<T extends AnyObject>(object: T) {
      const res = await resources.create({ object: wrap(object) });
      return unwrap(res.object) as T;
    },

    async update<T extends AnyObject>(object: T) {
      const res = await resources.update({ object: wrap(object) });
      return unwrap(res.object) as T;
    },

    async scale(name, replicas) {
      if (!Number.isInteger(replicas) || replicas < 0) {
        throw new ConnectError(`replicas must be a whole number >= 0, got ${replicas}`, Code.InvalidArgument);
      }
      const res = await resources.scale({ name, replicas });
      if (!res.replicaSet) throw new ConnectError(`scale of replicaset "${name}" returned no object`, Code.Internal);
      return res.replicaSet;
    },

    async delete(kind, name, opts = {}) {
      const res = await resources.delete({ kind: kindName(kind), name, resourceVersion: opts.resourceVersion ?? "" });
      return unwrap(res.object ?? create(ObjectSchema));
    },

    watch: (opts: WatchOptions = {}) => watchResources(resources, address, opts),

    logs(container, opts = {}) {
      let afterSeq = opts.afterSeq ?? 0n;
      let tail = opts.tail ?? 0;
      const open = (established?: () => void) =>
        (async function* () {
          const req = { container, follow: opts.follow ?? false, tail, afterSeq };
          for await (const res of logService.logs(req, { signal: opts.signal, onHeader: established })) {
            for (const line of res.lines) {
              afterSeq = line.seq;
              // A resumed follow wants every line after the last one seen, not the last N.
              tail = 0;
              yield line;
            }
          }
        })();
      return opts.resume && opts.follow ? resumeStream(address, open, opts.signal, resumeOptions(opts.resume)) : quietOnAbort(open(), opts.signal);
    },

    events(opts = {}) {
      let afterSeq = opts.afterSeq ?? 0n;
      const open = (established?: () => void) =>
        (async function* () {
          const req = { follow: opts.follow ?? false, kind: opts.kind ? kindName(opts.kind) : "", name: opts.name ?? "", afterSeq };
          for await (const res of logService.events(req, { signal: opts.signal, onHeader: established })) {
            if (!res.event) continue;
            afterSeq = res.event.seq;
            yield res.event;
          }
        })();
      return opts.resume && opts.follow ? resumeStream(address, open, opts.signal, resumeOptions(opts.resume)) : quietOnAbort(open(), opts.signal);
    },

    async stats() {
      return (await statsService.getStats({})).stats!;
    },

    async servers() {
      return (await infoService.listServers({})).servers;
    },

    async serverVersion() {
      const { version, apiVersion, runtimeVersion, platform } = await infoService.getVersion({});
      return { version, apiVersion, runtimeVersion, platform };
    },

    watchStats(opts = {}) {
      return (async function* () {
        for await (const res of quietOnAbort(statsService.watchStats({}, { signal: opts.signal }), opts.signal)) {
          if (res.stats) yield res.stats;
        }
      })();
    },

    send(target, value, opts = {}) {
      return messages.call(target, value, false, opts).then(sendResult);
    },

    request<T>(target: string, value: unknown, opts: RequestOptions = {}): Promise<T> {
      return messages.call(target, value, true, opts).then((res) => decodePayload(res.data, res.contentType) as T);
    },

    async close() {
      if (closed) return;
      closed = true;
      await messages.close();
      for (const m of sessionManagers) m.abort();
    },
  } as K4sClient;
  return client;
}

