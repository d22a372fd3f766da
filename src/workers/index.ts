/**
 * The k4s worker SDK: define workers, run a worker host, attach a process to a container, and
 * the built-in "workers" module.
 */
export { defineWorker, isWorkerDefinition, type WorkerDefinition, type WorkerFunction } from "./runtime/define-worker.js";
export type { WorkerContext, WorkerMessage, SendOptions, RequestOptions } from "./runtime/worker-context.js";
export { createContainerRuntime, type ContainerRuntime, type ContainerLink, type IncomingDelivery } from "./runtime/container-runtime.js";
export { runWorkerHost, type WorkerHost, type WorkerHostOptions } from "./runtime/worker-host.js";
export { attach, type Attached, type AttachWorkerOptions } from "./runtime/attach.js";
export { openSession, type Session, type SessionOptions, type CallOptions, type CallReply } from "../transport/session.js";
export type { TlsOptions } from "../transport/channel.js";
// What a worker fails a message with: new ConnectError("why", Code.InvalidArgument).
export { Code, ConnectError } from "@connectrpc/connect";
export {
  BUILTIN_MODULE,
  builtinWorkers,
  echoWorker,
  processorWorker,
  aggregatorWorker,
  generatorWorker,
  calculatorWorker,
} from "./builtin/index.js";

import { builtinWorkers } from "./builtin/index.js";

/** The built-in workers under their seed names, as the "workers" module exports them. */
export const echo_worker = builtinWorkers.echo_worker;
/** processor_worker of the built-in module. */
export const processor_worker = builtinWorkers.processor_worker;
/** aggregator_worker of the built-in module. */
export const aggregator_worker = builtinWorkers.aggregator_worker;
/** generator_worker of the built-in module. */
export const generator_worker = builtinWorkers.generator_worker;
/** calculator_worker of the built-in module. */
export const calculator_worker = builtinWorkers.calculator_worker;
