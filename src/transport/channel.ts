/**
 * How a k4s client reaches the server: TLS settings, keepalive, message limits and HTTP/2
 * windows, in one place for the gRPC channel of a WorkerService session and the HTTP/2
 * connection of the resource client alike.
 */
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";

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

/** A gRPC channel's credentials and options. */
export interface Channel {
  credentials: grpc.ChannelCredentials;
  options: grpc.ChannelOptions;
}

/**
 * The grpc-js channel of a session: TLS when asked (true: trust the system's CAs), keepalive,
 * no receive limit (the server bounds what it sends, and a batch of deliveries may well exceed
 * grpc-js's 4 MiB default), and wide HTTP/2 windows.
 */
export function grpcChannel(address: string, tls: boolean | TlsOptions | undefined): Channel {
  const secure = tls ? tlsCredentials(address, tls === true ? {} : tls) : undefined;
  return {
    credentials: secure?.credentials ?? grpc.credentials.createInsecure(),
    options: {
      "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
      "grpc-node.flow_control_window": CLIENT_WINDOW_BYTES,
      ...secure?.options,
    },
  };
}

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

/**
 * Channel credentials and options for TLS. The certificate is checked against `servername`
 * when given, else against the address's host. grpc-js always sends its target host as the TLS
 * server name, which for an IP address makes Node print a DEP0123 warning on every process
 * (RFC 6066 has no IP server names); then the name sent is "localhost" and the certificate is
 * still checked against the IP address itself.
 */
function tlsCredentials(address: string, tls: TlsOptions): Channel {
  const ca = tls.ca ? Buffer.from(tls.ca) : null;
  if (tls.servername) {
    return { credentials: grpc.credentials.createSsl(ca), options: { "grpc.ssl_target_name_override": tls.servername } };
  }
  const host = address.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  if (!isIP(host)) return { credentials: grpc.credentials.createSsl(ca), options: {} };
  const credentials = grpc.credentials.createSsl(ca, null, null, {
    checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert),
  });
  return { credentials, options: { "grpc.ssl_target_name_override": "localhost" } };
}
