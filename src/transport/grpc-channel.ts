/**
 * The grpc-js channel of a WorkerService session, with the settings of channel.ts. Kept apart
 * from them so that only code that opens a session loads grpc-js.
 */
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { CLIENT_WINDOW_BYTES, KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, type TlsOptions } from "./channel.js";
import { decodeConnectResponse, encodeConnectRequest } from "./frame-codec.js";
import type { StreamChannel } from "./stream-channel.js";
import type { ConnectRequest, ConnectResponse } from "../gen/k4s/v1/worker_service_pb.js";

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

/**
 * A session's stream on grpc-js's client call: the transport selected by
 * `K4S_WORKER_TRANSPORT=grpc-js` (see stream-channel.ts). A fresh channel per connection attempt,
 * with a subchannel of its own, so grpc-js holds no back-off of its own between attempts.
 */
export function grpcJsStreamChannel(address: string, tls: boolean | TlsOptions | undefined): StreamChannel {
  const channel = grpcChannel(address, tls);
  const client = new grpc.Client(address, channel.credentials, { ...channel.options, "grpc.use_local_subchannel_pool": 1 });
  return {
    open(path, headers, listener) {
      const metadata = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
      const stream: grpc.ClientDuplexStream<Pick<ConnectRequest, "frames">, ConnectResponse> = client.makeBidiStreamRequest(
        path,
        encodeConnectRequest,
        decodeConnectResponse,
        metadata,
      );
      stream.on("data", (res: ConnectResponse) => listener.message(res));
      // Every failure also arrives as a status; the listener only keeps the emitter from throwing.
      stream.on("error", () => {});
      stream.on("status", (status: grpc.StatusObject) => listener.status(status.code, status.details));
      return {
        write: (req) => void stream.write(req),
        end: () => stream.end(),
        cancel: () => stream.cancel(),
      };
    },
    close: () => client.close(),
  };
}
