/**
 * How a k4s client reaches the server: TLS settings, keepalive, message limits and HTTP/2
 * windows, in one place for the gRPC channel of a WorkerService session (grpc-channel.ts) and
 * the HTTP/2 connection of the resource client alike. Free of grpc-js, so a client that only
 * reads resources never loads it.
 */

/** TlsOptions make a connection use TLS; `ca` is the PEM of a certificate to trust. */
export interface TlsOptions {
  ca?: string | Buffer;
  /** Name to check the server's certificate against (default: the address's host). */
  servername?: string;
}

/** Interval of keepalive pings on an idle connection, both ways (ms). */
export const KEEPALIVE_TIME_MS = 15_000;
/** How long a keepalive ping may go unanswered before the connection is dropped (ms). */
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/**
 * HTTP/2 flow-control window a client grants (per stream and connection): one stream carries
 * every message of a process, and Node's 64 KiB default caps large payloads at one window per
 * round trip.
 */
export const CLIENT_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * Node HTTP/2 connect options for the same server, for clients built on connect-node: the TLS
 * trust and server name, and session memory for large (16 MiB) messages, which Node's default
 * (10 MB of buffered data) would reset with ENHANCE_YOUR_CALM.
 */
export function http2ConnectOptions(tls: TlsOptions | undefined): { maxSessionMemory: number; ca?: string | Buffer; servername?: string } {
  return {
    maxSessionMemory: 64,
    ...(tls?.ca ? { ca: tls.ca } : {}),
    ...(tls?.servername ? { servername: tls.servername } : {}),
  };
}
