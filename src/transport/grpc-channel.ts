/**
 * The grpc-js channel of a WorkerService session, with the settings of channel.ts. Kept apart
 * from them so that only code that opens a session loads grpc-js.
 */
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { CLIENT_WINDOW_BYTES, KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, type TlsOptions } from "./channel.js";

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
      // No channelz: k4s never serves it, and it stamps a Date on every message sent and received.
      "grpc.enable_channelz": 0,
      ...secure?.options,
    },
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
