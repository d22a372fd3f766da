/**
 * Rolling restarts of a ReplicaSet, as `kubectl rollout restart` does them: the time of the
 * restart is written into the template's annotations (RESTARTED_AT_ANNOTATION); a replica whose
 * own annotation differs is out of date, and the ReplicaSet controller replaces such replicas one
 * at a time, each new one ready before an old one goes.
 */
import type { Container, ReplicaSet } from "../gen/k4s/v1/resources_pb.js";

/** The template annotation whose change restarts every replica (an RFC 3339 time). */
export const RESTARTED_AT_ANNOTATION = "k4s.io/restartedAt";

/**
 * Tells whether a replica was made from the ReplicaSet template's current restart (always true
 * when the template was never restarted).
 */
export function isUpToDate(replica: Container, templateAnnotations: Readonly<Record<string, string>> | undefined): boolean {
  const wanted = templateAnnotations?.[RESTARTED_AT_ANNOTATION];
  return wanted === undefined || replica.metadata?.annotations?.[RESTARTED_AT_ANNOTATION] === wanted;
}

/** The template annotations of a ReplicaSet with an inline template; undefined for the spec.container form. */
export function templateAnnotations(rs: ReplicaSet): Record<string, string> | undefined {
  return rs.spec?.template?.spec ? { ...rs.spec.template.metadata?.annotations } : undefined;
}
