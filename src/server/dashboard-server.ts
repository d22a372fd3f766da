/**
 * The web dashboard's HTTP server: the built page (static files) and the server's public API
 * over the Connect protocol (connect-node's adapter), on a port of its own. The page is one
 * more client of that API; every call carries the same bearer token the gRPC port requires.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import type { Socket } from "node:net";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { joinHostPort } from "../api/address.js";
import { createConnectAuthInterceptor, isLoopback } from "./auth.js";
import { peerKey } from "./connect-adapter.js";

/** DashboardServerOptions configure the dashboard's HTTP server. */
export interface DashboardServerOptions {
  /** Interface to listen on. */
  host: string;
  /** Port (0 picks a free one). */
  port: number;
  /** Bearer token every API call must carry; none on loopback without a token. */
  token?: string;
  /** Serve HTTPS (HTTP/2 with HTTP/1.1 fallback) with this certificate chain and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Folder of the built page (index.html and its assets); default: the package's `dist/dashboard`. */
  assetsDir?: string;
  /** Registers the API services on the Connect router. */
  routes: (router: ConnectRouter) => void;
  /** Largest request message accepted (bytes), as on the gRPC port. */
  readMaxBytes?: number;
}

/** DashboardServer is a listening dashboard HTTP server. */
export interface DashboardServer {
  readonly port: number;
  /** The page's address, e.g. http://127.0.0.1:50052/ */
  readonly url: string;
  /** Stops listening and ends open calls (watches, log follows). */
  close(): Promise<void>;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

/**
 * Headers of every static answer: the page loads only its own scripts and talks only to its own
 * origin, is never framed, and sends no Referer (the token travels in the URL fragment, which
 * browsers never send, but a referrer policy costs nothing).
 */
const STATIC_HEADERS = {
  "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};

/** The folder of the page built by `npm run build` (or `npm ci`, through `prepare`). */
export function defaultAssetsDir(): string {
  // Found from the package root, so it is the same from src/ (tsx) and from a compiled dist/.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, "dist", "dashboard");
}

/** Reads the built page into memory: a few hundred KiB, served many times. */
function loadAssets(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  if (!existsSync(join(dir, "index.html"))) return files;
  for (const name of readdirSync(dir)) {
    if (CONTENT_TYPES[extname(name)]) files.set(`/${name}`, readFileSync(join(dir, name)));
  }
  return files;
}

/** The host part of a Host header: `127.0.0.1:8080` → `127.0.0.1`, `[::1]:80` → `::1`. */
function hostOf(header: string | undefined): string {
  if (!header) return "";
  if (header.startsWith("[")) return header.slice(1, header.indexOf("]"));
  const colon = header.lastIndexOf(":");
  return colon >= 0 ? header.slice(0, colon) : header;
}

/** The host of an Origin header; "" when it is not a URL (e.g. `null` from a sandboxed frame). */
function originHost(origin: string): string {
  try {
    return hostOf(new URL(origin).host);
  } catch {
    return "";
  }
}

type Request = IncomingMessage | Http2ServerRequest;
type Response = ServerResponse | Http2ServerResponse;

/** Starts the dashboard's HTTP server; resolves once it listens. */
export async function serveDashboard(options: DashboardServerOptions): Promise<DashboardServer> {
  const assetsDir = options.assetsDir ?? defaultAssetsDir();
  const assets = loadAssets(assetsDir);
  const notBuilt = `the dashboard page is not built (no ${join(assetsDir, "index.html")}): run npm run build\n`;
  const serveStatic = (req: Request, res: Response) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const path = (req.url ?? "/").split(/[?#]/)[0]!;
    const body = assets.get(path === "/" ? "/index.html" : path);
    if (!body) {
      const missing = assets.size === 0 && path === "/";
      res.writeHead(missing ? 503 : 404, { "content-type": "text/plain; charset=utf-8" }).end(missing ? notBuilt : "not found\n");
      return;
    }
    const type = CONTENT_TYPES[extname(path === "/" ? "/index.html" : path)]!;
    res.writeHead(200, { "content-type": type, "content-length": body.length, ...STATIC_HEADERS });
    if (req.method === "HEAD") res.end();
    else res.end(body);
  };
  const api = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.token ? [createConnectAuthInterceptor(options.token)] : [],
    readMaxBytes: options.readMaxBytes,
    contextValues: (req) => createContextValues().set(peerKey, `${req.socket.remoteAddress}:${req.socket.remotePort}`),
    fallback: serveStatic as never,
  });
  const handler = (req: Request, res: Response) => {
    // Without a token the API is open to whoever reaches the loopback port, so a page from
    // another site must not reach it through DNS rebinding (a Host of its own name) or a
    // cross-origin request.
    if (!options.token) {
      const origin = req.headers.origin;
      if (!isLoopback(hostOf(req.headers.host ?? req.headers[":authority"] as string | undefined)) || (origin !== undefined && !isLoopback(originHost(origin)))) {
        res.writeHead(403, { "content-type": "text/plain; charset=utf-8" }).end("forbidden: this dashboard answers loopback addresses only\n");
        return;
      }
    }
    api(req as never, res as never);
  };

  const server = options.tls
    ? createSecureServer({ cert: options.tls.cert, key: options.tls.key, allowHTTP1: true }, handler)
    : createHttpServer(handler);
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(options.port, options.host, resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  return {
    port,
    url: `${options.tls ? "https" : "http"}://${joinHostPort(options.host === "0.0.0.0" ? "127.0.0.1" : options.host, port)}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Watches and log follows never end on their own: end them with their connections.
        for (const s of sockets) s.destroy();
      }),
  };
}
