/**
 * Which of two stored versions of one object is the newer: the one whose resourceVersion (the
 * revision that wrote it) is higher. Holders of the newest version seen (the resource store's
 * held versions, the status writer's known objects) keep an object only if it is newer.
 */
import type { AnyObject } from "../../api/kinds.js";

/** Tells whether `obj` is a newer stored version than `than` (any version is newer than none). */
export function isNewerVersion(obj: AnyObject, than: AnyObject | undefined): boolean {
  return !than || Number(than.metadata?.resourceVersion) < Number(obj.metadata?.resourceVersion);
}
