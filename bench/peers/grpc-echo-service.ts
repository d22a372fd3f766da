/**
 * The grpc-js peer's hand-made service: unary Echo (replies the request bytes) and Send (counts
 * and answers empty, the nearest one-hop equivalent of fire-and-forget), with Buffer passthrough
 * serializers so no protobuf cost is measured.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";

const passthrough = {
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
} as const;

/** The bench.Echo service definition for grpc-js. */
export const grpcEchoService: ServiceDefinition = {
  echo: { path: "/bench.Echo/Echo", originalName: "Echo", ...passthrough },
  send: { path: "/bench.Echo/Send", originalName: "Send", ...passthrough },
};
