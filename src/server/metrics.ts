/**
 * The server's Prometheus metrics (prom-client), on a registry of its own so that several
 * servers in one process (tests) do not share counters. Served as text at `/metrics`.
 */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { bearerMatches } from "./auth.js";

/** Metrics are the instruments every part of the server reports to. */
export interface Metrics {
  readonly registry: Registry;
  /** RPCs served, by method and status code name. */
  readonly rpcs: Counter<"method" | "code">;
  /** Messages accepted by the router, by kind (send | request). */
  readonly messages: Counter<"kind">;
  /** Request round trips through the router, caller to reply, by outcome code name. */
  readonly requestSeconds: Histogram<"code">;
  /** Deliveries handed to workers; redeliveries after a lost worker counted apart. */
  readonly deliveries: Counter;
  readonly redeliveries: Counter;
  /** Durable sends read back from the journal after a server restart (delivered again). */
  readonly journalRecovered: Counter;
  /** Reconciles run, by controller and result (ok | error). */
  readonly reconciles: Counter<"controller" | "result">;
  /** Store write transactions committed. */
  readonly storeWrites: Counter;
  /** Messages waiting in container inboxes (sampled at scrape time through a callback). */
  readonly inboxDepth: Gauge<"container">;
  /** Live worker sessions by role. */
  readonly sessions: Gauge<"role">;
  /** Containers held for a process attaching to them (sampled at scrape time). */
  readonly attachHolds: Gauge;
  /** Sets the function that reports inbox depths at scrape time. */
  onCollectInboxes(fn: () => Iterable<[string, number]>): void;
  /** Sets the function that reports, at scrape time, how many containers are held for a process attaching to them. */
  onCollectAttachHolds(fn: () => number): void;
}

/** Creates the metrics of one server, including Node's process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "k4s_" });
  let inboxes: () => Iterable<[string, number]> = () => [];
  let attachHolds: () => number = () => 0;
  const inboxDepth = new Gauge({
    name: "k4s_inbox_depth",
    help: "Messages waiting in a container's inbox",
    labelNames: ["container"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [container, depth] of inboxes()) this.set({ container }, depth);
    },
  });
  return {
    registry,
    rpcs: new Counter({ name: "k4s_rpcs_total", help: "RPCs served", labelNames: ["method", "code"] as const, registers: [registry] }),
    messages: new Counter({ name: "k4s_messages_total", help: "Messages accepted by the router", labelNames: ["kind"] as const, registers: [registry] }),
    requestSeconds: new Histogram({
      name: "k4s_request_duration_seconds",
      help: "Request round trips through the router",
      labelNames: ["code"] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    deliveries: new Counter({ name: "k4s_deliveries_total", help: "Deliveries handed to workers", registers: [registry] }),
    redeliveries: new Counter({ name: "k4s_redeliveries_total", help: "Deliveries handed again after a lost worker", registers: [registry] }),
    journalRecovered: new Counter({
      name: "k4s_journal_recovered_total",
      help: "Durable sends read back from the journal after a server restart",
      registers: [registry],
    }),
    reconciles: new Counter({ name: "k4s_reconciles_total", help: "Reconciles run", labelNames: ["controller", "result"] as const, registers: [registry] }),
    storeWrites: new Counter({ name: "k4s_store_writes_total", help: "Store write transactions committed", registers: [registry] }),
    inboxDepth,
    sessions: new Gauge({ name: "k4s_worker_sessions", help: "Live worker sessions", labelNames: ["role"] as const, registers: [registry] }),
    attachHolds: new Gauge({
      name: "k4s_attach_holds",
      help: "Containers held by this server for a process attaching to them now",
      registers: [registry],
      collect() {
        this.set(attachHolds());
      },
    }),
    onCollectInboxes(fn) {
      inboxes = fn;
    },
    onCollectAttachHolds(fn) {
      attachHolds = fn;
    },
  };
}

/**
 * Serves `GET /metrics` of a registry over HTTP; resolves to the bound port. With a token, a
 * scrape must send it as the gRPC port's clients do (`authorization: Bearer TOKEN`, Prometheus'
 * `authorization` or `bearer_token_file` setting); without one the server listens on loopback.
 */
export async function serveMetrics(registry: Registry, host: string, port: number, token?: string): Promise<{ port: number; close(): Promise<void> }> {
  const http: HttpServer = createHttpServer((req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404).end("not found: try GET /metrics\n");
      return;
    }
    if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
      res
        .writeHead(401, { "www-authenticate": 'Bearer realm="k4s"' })
        .end(`${req.headers.authorization === undefined ? "missing" : "invalid"} bearer token: send "authorization: Bearer <token>" with the server's token\n`);
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve, reject) => http.once("error", reject).listen(port, host, resolve));
  const address = http.address();
  return {
    port: typeof address === "object" && address ? address.port : port,
    close: () => new Promise<void>((resolve) => http.close(() => resolve())),
  };
}
