/**
 * Validation failures in the standard machine-readable form: an INVALID_ARGUMENT status whose
 * message is the human-readable text and whose details hold a `google.rpc.BadRequest` listing
 * each field violation (the path of the field in the request, and why it is wrong). gRPC carries
 * the details in the `grpc-status-details-bin` trailer, which every gRPC library can decode.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, type BadRequest_FieldViolation } from "../gen/google/rpc/error_details_pb.js";

/** FieldIssue is one broken rule of an object: the field path (e.g. "spec.replicas") and the reason. */
export interface FieldIssue {
  path: string;
  reason: string;
}

/** FieldViolation is one broken rule: where in the request (a field path) and why. */
export interface FieldViolation {
  /** Path of the field in the request, in JSON names: `objects[0].container.spec.replicas`. */
  field: string;
  /** Why the value is wrong, in words. */
  description: string;
}

/**
 * The most violations an error carries: trailers travel in HTTP/2 headers, which gRPC clients
 * cap (8 KiB by default in several), so a manifest with thousands of errors still gets an answer.
 */
export const MAX_FIELD_VIOLATIONS = 20;

/** Violations of issues found in an object that sits at `prefix` in the request ("" for the top). */
export function violationsOf(issues: readonly FieldIssue[], prefix: string): FieldViolation[] {
  return issues.map((i) => ({ field: prefix === "" ? i.path : i.path === "" ? prefix : `${prefix}.${i.path}`, description: i.reason }));
}

/** Creates the INVALID_ARGUMENT error of a validation failure: `message`, and the violations as details. */
export function badRequest(message: string, violations: readonly FieldViolation[]): ConnectError {
  const kept = violations.slice(0, MAX_FIELD_VIOLATIONS);
  return new ConnectError(message, Code.InvalidArgument, undefined, [{ desc: BadRequestSchema, value: { fieldViolations: kept } }]);
}

/**
 * Creates the INVALID_ARGUMENT error of one bad request field, with `reason` as its violation's
 * description; the message is `message` when given, else "field: reason".
 */
export function badField(field: string, reason: string, message = `${field}: ${reason}`): ConnectError {
  return badRequest(message, [{ field, description: reason }]);
}

/**
 * The field violations an error carries (its `google.rpc.BadRequest` details), as a caller reads
 * them from a ConnectError; empty for other errors.
 */
export function fieldViolations(err: unknown): BadRequest_FieldViolation[] {
  return ConnectError.from(err).findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
}
