/**
 * The messaging plane: worker sessions (WorkerService.Connect), the scheduler and container
 * lifecycle, container inboxes and the router, and the unary MessagingService.
 */
import type { MessagingService } from "../../gen/k4s/v1/messaging_service_pb.js";
import type { WorkerService } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../events.js";
import type { ServiceImpl } from "../grpc-adapter.js";
import type { LogStore } from "../logs.js";
import type { ResourceStore } from "../resource-store.js";

/** MessagingPlaneOptions are the plane's dependencies and limits. */
export interface MessagingPlaneOptions {
  resources: ResourceStore;
  events: EventRecorder;
  logs: LogStore;
  /** Heartbeat interval announced to sessions (default 5000 ms); lost after 3 silent intervals. */
  heartbeatIntervalMs?: number;
}

/** MessagingPlane serves the worker and messaging APIs. */
export interface MessagingPlane {
  readonly workerService: ServiceImpl<typeof WorkerService>;
  readonly messagingService: ServiceImpl<typeof MessagingService>;
  start(): Promise<void>;
  /** Ends every session and fails every waiting call with UNAVAILABLE. */
  stop(): Promise<void>;
}

/** Creates the messaging plane. */
export function createMessagingPlane(options: MessagingPlaneOptions): MessagingPlane {
  void options;
  throw new Error("createMessagingPlane: not implemented yet");
}
