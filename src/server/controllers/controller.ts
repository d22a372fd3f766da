/**
 * The controller framework: a watch feeds a keyed work queue, and workers call an idempotent
 * reconcile(key) that re-reads state (Kubernetes' sample-controller pattern).
 */

/** Controller is a running reconcile loop. */
export interface Controller {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}
