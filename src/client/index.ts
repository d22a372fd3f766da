/**
 * The public k4s SDK: `createClient` and the message types of the k4s API, so an application
 * needs no import from generated files.
 */
export {
  createClient,
  type ApplyOutcome,
  type ClientOptions,
  type EventsOptions,
  type K4sClient,
  type KindName,
  type ListFilter,
  type ListOptions,
  type ListOutcome,
  type LogsOptions,
  type RequestOptions,
  type SendOptions,
  type SendReceipt,
  type ServerVersion,
  type WatchEvent,
  type WatchOptions,
  type WatchStream,
} from "./client.js";
export type { ResumeOptions } from "./resume.js";
export { API_VERSION, KINDS, kindOf, parseKind, type AnyObject, type Kind, type ObjectOf } from "../api/kinds.js";
export { listToJson, objectToJson } from "../api/object-json.js";
export {
  ContainerSchema,
  ContainerSpecSchema,
  ContainerStatusSchema,
  ContainerTemplateSchema,
  ObjectMetaSchema,
  OwnerReferenceSchema,
  ReplicaSetSchema,
  ReplicaSetSpecSchema,
  ReplicaSetStatusSchema,
  ServiceSchema,
  ServiceSpecSchema,
  ServiceStatusSchema,
  type Container,
  type ContainerSpec,
  type ContainerStatus,
  type ContainerTemplate,
  type ObjectMeta,
  type OwnerReference,
  type ReplicaSet,
  type ReplicaSetSpec,
  type ReplicaSetStatus,
  type Service,
  type ServiceSpec,
  type ServiceStatus,
} from "../gen/k4s/v1/resources_pb.js";
export { EventSchema, LogLineSchema, type Event, type LogLine } from "../gen/k4s/v1/log_service_pb.js";
export { BadRequestSchema, type BadRequest, type BadRequest_FieldViolation } from "../gen/google/rpc/error_details_pb.js";
export { fieldViolations } from "../api/bad-request.js";
export { ClusterServerSchema, ClusterSessionSchema, type ClusterServer, type ClusterSession } from "../gen/k4s/v1/info_service_pb.js";
export {
  ContainerStatsSchema,
  HostStatsSchema,
  LoadSchema,
  ServiceStatsSchema,
  StatsSchema,
  type ContainerStats,
  type HostStats,
  type Load,
  type ServiceStats,
  type Stats,
} from "../gen/k4s/v1/stats_service_pb.js";
export { create, clone, toJson, fromJson } from "@bufbuild/protobuf";
export { Code, ConnectError } from "@connectrpc/connect";
export type { TlsOptions } from "../transport/channel.js";
