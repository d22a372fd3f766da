/**
 * defineWorker: how a worker function is declared, so hosts can tell worker exports from
 * anything else a module exports.
 */
import type { WorkerContext } from "./worker-context.js";

const WORKER_BRAND = Symbol.for("k4s.worker");

/** WorkerFunction is the body of a worker: it handles messages until they end, then returns. */
export type WorkerFunction<P = Record<string, unknown>> = (ctx: WorkerContext<P>) => Promise<void>;

/** WorkerDefinition is a worker function marked by defineWorker. */
export interface WorkerDefinition<P = Record<string, unknown>> {
  readonly [WORKER_BRAND]: true;
  /** Runs the worker on a context. */
  readonly run: WorkerFunction<P>;
}

/**
 * Declares a worker: a function of a context that handles messages (`for await (const msg of
 * ctx.messages)` or `ctx.handle(fn)`) and returns when done. Returning means Succeeded;
 * throwing means Failed with the error's message.
 */
export function defineWorker<P = Record<string, unknown>>(fn: WorkerFunction<P>): WorkerDefinition<P> {
  return Object.freeze({ [WORKER_BRAND]: true as const, run: fn });
}

/** Whether a value is a defineWorker result. */
export function isWorkerDefinition(value: unknown): value is WorkerDefinition<unknown> {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[WORKER_BRAND] === true;
}

/** Turns a module export into a worker definition: a defineWorker result or a plain async function. */
export function toWorkerDefinition(value: unknown): WorkerDefinition<unknown> | undefined {
  if (isWorkerDefinition(value)) return value;
  if (typeof value === "function") return defineWorker(value as WorkerFunction<unknown>);
  return undefined;
}
