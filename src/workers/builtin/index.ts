/**
 * The built-in "workers" module: the seed's five worker functions, under their seed names and
 * short aliases.
 */
import type { WorkerDefinition } from "../runtime/define-worker.js";
import { aggregatorWorker } from "./aggregator-worker.js";
import { calculatorWorker } from "./calculator-worker.js";
import { echoWorker } from "./echo-worker.js";
import { generatorWorker } from "./generator-worker.js";
import { processorWorker } from "./processor-worker.js";

export { aggregatorWorker, calculatorWorker, echoWorker, generatorWorker, processorWorker };
export { calculate } from "./calculator-worker.js";

/** The module name containers use for the built-in workers (spec.module). */
export const BUILTIN_MODULE = "workers";

/** The built-in workers by function name (seed names and short aliases). */
export const builtinWorkers: Readonly<Record<string, WorkerDefinition<never>>> = Object.freeze({
  echo_worker: echoWorker,
  processor_worker: processorWorker,
  aggregator_worker: aggregatorWorker,
  generator_worker: generatorWorker,
  calculator_worker: calculatorWorker,
  echo: echoWorker,
  processor: processorWorker,
  aggregator: aggregatorWorker,
  generator: generatorWorker,
  calculator: calculatorWorker,
} as Record<string, WorkerDefinition<never>>);
