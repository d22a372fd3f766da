/**
 * calculator_worker: answers requests {operation: sum|product|average, operands: number[]} with
 * a number; anything else is refused with INVALID_ARGUMENT.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { defineWorker } from "../runtime/define-worker.js";
import { show } from "./show.js";

/** CalculatorRequest is what calculator_worker computes. */
export interface CalculatorRequest {
  operation: "sum" | "product" | "average";
  operands: number[];
}

/** Computes a calculator request, or throws INVALID_ARGUMENT naming what is wrong. */
export function calculate(request: unknown): number {
  if (typeof request !== "object" || request === null || Array.isArray(request)) {
    throw new ConnectError(`calculator_worker: expected {operation, operands}, got ${show(request)}`, Code.InvalidArgument);
  }
  const { operation, operands } = request as Record<string, unknown>;
  if (!Array.isArray(operands) || !operands.every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw new ConnectError(`calculator_worker: operands must be an array of numbers, got ${show(operands)}`, Code.InvalidArgument);
  }
  const nums = operands as number[];
  switch (operation) {
    case "sum":
      return nums.reduce((a, b) => a + b, 0);
    case "product":
      return nums.reduce((a, b) => a * b, 1);
    case "average":
      if (nums.length === 0) throw new ConnectError("calculator_worker: average needs at least one operand", Code.InvalidArgument);
      return nums.reduce((a, b) => a + b, 0) / nums.length;
    default:
      throw new ConnectError(
        `calculator_worker: unknown operation ${JSON.stringify(operation) ?? "(none)"}: expected sum, product or average`,
        Code.InvalidArgument,
      );
  }
}

/** calculator_worker: replies sum/product/average of the operands; logs and ignores non-requests. */
export const calculatorWorker = defineWorker(async (ctx) => {
  await ctx.handle((msg) => {
    if (!msg.expectsReply) {
      ctx.log(`warning: calculator_worker only answers requests; ignored message ${show(msg.value)}`);
      return undefined;
    }
    const result = calculate(msg.value);
    const { operation, operands } = msg.value as CalculatorRequest;
    ctx.log(`${operation}(${operands.join(", ")}) = ${result}`);
    return result;
  });
});
