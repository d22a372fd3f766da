/**
 * The server's TCP listener. It hands each connection to grpc-js (its connection injector),
 * which does HTTP/2 and TLS; owning the socket lets the server bound how many connections it
 * holds at once, which grpc-js's own listener cannot, and drop a socket that never becomes a
 * working connection.
 */
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import type * as grpc from "@grpc/grpc-js";

/** ListenerOptions say where to listen and what to bound. */
export interface ListenerOptions {
  host: string;
  port: number;
  /** Connections held at once; more are closed as they arrive (Node's net.Server maxConnections). */
  maxConnections: number;
  /**
   * A socket that receives nothing for this long (up to twice as long) is closed (ms). Live
   * HTTP/2 connections never reach it: the server pings each of them every keepalive interval.
   */
  silentSocketMs: number;
  /** Told, at most once a minute, that connections were refused at the limit. */
  onRefused?: (message: string) => void;
}

/** Listener is a bound port feeding a grpc-js server. */
export interface Listener {
  readonly port: number;
  /** Connections open now. */
  connections(): number;
  /**
   * Stops accepting connections (the first step of a shutdown: a client that reconnects while
   * the server is stopping is refused, instead of handed to a grpc-js server that is going away).
   */
  stopAccepting(): void;
  /**
   * Stops accepting and closes every connection left: call it once the grpc-js server has shut
   * down, which ends the connections it serves; what remains is a socket it never took up.
   */
  close(): Promise<void>;
}

/** How often the refusal at the connection limit is reported, at most (ms). */
const REFUSAL_REPORT_INTERVAL_MS = 60_000;

/** Listens on host:port and injects every accepted connection into `server`. */
export async function listen(server: grpc.Server, credentials: grpc.ServerCredentials, options: ListenerOptions): Promise<Listener> {
  const injector = server.createConnectionInjector(credentials);
  const sockets = new Set<Socket>();
  let refused = 0;
  let lastReport = 0;
  // No Nagle: every write of a stream message is a complete answer the peer is waiting for, and
  // holding a small one back until the last segment is acknowledged only adds latency.
  const tcp: TcpServer = createTcpServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    // Not socket.setTimeout: once HTTP/2 owns the socket its reads bypass the socket's timer,
    // which would then close every connection silentSocketMs after it opened, however busy.
    // The byte count does see them (a live client answers the server's keepalive pings).
    let seen = -1;
    const silence = setInterval(() => {
      if (socket.bytesRead === seen) socket.destroy();
      else seen = socket.bytesRead;
    }, options.silentSocketMs);
    silence.unref();
    socket.once("close", () => {
      sockets.delete(socket);
      clearInterval(silence);
    });
    injector.injectConnection(socket);
  });
  tcp.maxConnections = options.maxConnections;
  tcp.on("drop", () => {
    refused++;
    const now = Date.now();
    if (now - lastReport < REFUSAL_REPORT_INTERVAL_MS) return;
    lastReport = now;
    options.onRefused?.(`${options.maxConnections} connections open (the limit): refused ${refused} new one(s)`);
    refused = 0;
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(options.port, options.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const address = tcp.address();
  let closed: Promise<void> | undefined;
  const stopAccepting = () => (closed ??= new Promise<void>((resolve) => tcp.close(() => resolve())));
  return {
    port: typeof address === "object" && address ? address.port : options.port,
    connections: () => sockets.size,
    stopAccepting() {
      void stopAccepting();
    },
    async close() {
      const done = stopAccepting();
      injector.destroy();
      // A connection that arrived as grpc-js shut down is never served nor ended by it, and
      // net.Server's close waits for every connection: without this a stop could hang for good.
      for (const socket of sockets) socket.destroy();
      await done;
    },
  };
}
