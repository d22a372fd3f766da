/**
 * Builders of the server's outgoing frames, so the rest of the plane speaks in plain values.
 * The per-message frames (delivery, call result, cancel, heartbeat) are written as complete
 * message literals rather than through create(): protobuf-es fills a message by reflection,
 * which cost more than the rest of the router on the message path.
 */
import { create } from "@bufbuild/protobuf";
import type { ContainerSpec } from "../../gen/k4s/v1/resources_pb.js";
import {
  AssignSchema,
  CallResultSchema,
  CancelDeliverySchema,
  DeliverySchema,
  ErrorSchema,
  HeartbeatSchema,
  ServerFrameSchema,
  StopSchema,
  WelcomeSchema,
  type Error as WireError,
  type ServerFrame,
} from "../../gen/k4s/v1/worker_service_pb.js";
import type { Envelope } from "./envelope.js";

const EMPTY = new Uint8Array(0);

/** Builds a wire Error, or undefined for code 0. */
export function wireError(code: number, message: string): WireError | undefined {
  return code === 0 ? undefined : { $typeName: ErrorSchema.typeName, code, message };
}

/** Builds a Welcome frame. */
export function welcomeFrame(sessionId: string, name: string, heartbeatIntervalMs: number, credential = ""): ServerFrame {
  return create(ServerFrameSchema, {
    frame: { case: "welcome", value: create(WelcomeSchema, { sessionId, name, heartbeatIntervalMs, credential }) },
  });
}

/** Builds an Assign frame. */
export function assignFrame(assign: { container: string; uid: string; spec: ContainerSpec; token: string; restarts: number }): ServerFrame {
  return create(ServerFrameSchema, { frame: { case: "assign", value: create(AssignSchema, assign) } });
}

/** Builds a Stop frame. */
export function stopFrame(stop: { container: string; uid: string; graceMs: number }): ServerFrame {
  return create(ServerFrameSchema, { frame: { case: "stop", value: create(StopSchema, stop) } });
}

/**
 * Builds the Delivery frame of an envelope's current attempt to a container's worker;
 * `timeoutMs` is what remains of a request's deadline (0: none).
 */
export function deliveryFrame(env: Envelope, container: string, timeoutMs: number): ServerFrame {
  return {
    $typeName: ServerFrameSchema.typeName,
    frame: {
      case: "delivery",
      value: {
        $typeName: DeliverySchema.typeName,
        id: BigInt(env.deliveryId),
        container,
        data: env.data,
        contentType: env.contentType,
        expectsReply: env.expectsReply,
        timeoutMs,
        sender: env.sender,
        attempt: env.attempt,
      },
    },
  };
}

/** Builds a CancelDelivery frame. */
export function cancelDeliveryFrame(id: number, reason: string): ServerFrame {
  return {
    $typeName: ServerFrameSchema.typeName,
    frame: { case: "cancelDelivery", value: { $typeName: CancelDeliverySchema.typeName, id: BigInt(id), reason } },
  };
}

/** Builds the CallResult frame of a reply: its payload and the container that answered. */
export function callReplyFrame(id: bigint, data: Uint8Array, contentType: string, container: string): ServerFrame {
  return {
    $typeName: ServerFrameSchema.typeName,
    frame: { case: "callResult", value: { $typeName: CallResultSchema.typeName, id, data, contentType, error: undefined, container, refused: false } },
  };
}

/**
 * Builds the CallResult frame of a failed call; `container` names who failed it, when one did.
 * `refused`: this server refused it before any worker had it (it ran nowhere); never for an
 * error a worker gave.
 */
export function callErrorFrame(id: bigint, code: number, message: string, container = "", refused = false): ServerFrame {
  return {
    $typeName: ServerFrameSchema.typeName,
    frame: {
      case: "callResult",
      value: { $typeName: CallResultSchema.typeName, id, data: EMPTY, contentType: "", error: wireError(code, message), container, refused },
    },
  };
}

/** Builds a Heartbeat frame. */
export function heartbeatFrame(): ServerFrame {
  return {
    $typeName: ServerFrameSchema.typeName,
    frame: { case: "heartbeat", value: { $typeName: HeartbeatSchema.typeName, sentAtMs: BigInt(Date.now()) } },
  };
}
