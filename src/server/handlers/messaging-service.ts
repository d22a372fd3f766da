/**
 * The unary MessagingService (Send, Request) for grpcurl and simple clients: the same router as
 * the worker streams, with the JSON `Value` form for hand-typed payloads.
 */
import { fromJsonString, toJson } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { badField } from "../../api/bad-request.js";
import { MAX_NESTING_DEPTH, textNestingDepth, valueNestingDepth } from "../../api/nesting-depth.js";
import { parseTarget } from "../../api/target.js";
import type { MessagingService } from "../../gen/k4s/v1/messaging_service_pb.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import type { Metrics } from "../metrics.js";
import { JSON_CONTENT_TYPE, isJsonContentType } from "../../api/payload.js";
import { DEFAULT_REQUEST_TIMEOUT_MS } from "../../transport/limits.js";
import { Envelope } from "../messaging/envelope.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function payloadOf(req: { data: Uint8Array; contentType: string; json?: Value }): [Uint8Array, string] {
  if (req.data.length === 0 && req.json) {
    const value = toJson(ValueSchema, req.json);
    if (valueNestingDepth(value) > MAX_NESTING_DEPTH) {
      throw badField("json", `nests more than ${MAX_NESTING_DEPTH} levels deep`);
    }
    return [encoder.encode(JSON.stringify(value)), JSON_CONTENT_TYPE];
  }
  return [req.data, req.contentType || JSON_CONTENT_TYPE];
}

/** The reply as a JSON Value, when it is JSON that the caller's protobuf decoder can take. */
function replyJson(data: Uint8Array, contentType: string): Value | undefined {
  if (!isJsonContentType(contentType) || data.length === 0) return undefined;
  const text = decoder.decode(data);
  if (textNestingDepth(text, MAX_NESTING_DEPTH).depth > MAX_NESTING_DEPTH) return undefined;
  try {
    return fromJsonString(ValueSchema, text);
  } catch {
    // Not valid JSON despite its content type: the bytes still go back as they are.
    return undefined;
  }
}

/** Creates the MessagingService handlers over a router. */
export function createMessagingService(options: { router: CallRouter; metrics?: Metrics }): ServiceHandlers<typeof MessagingService> {
  const { router } = options;
  return {
    async send(req, ctx) {
      const target = parseTarget(req.target);
      const [data, contentType] = payloadOf(req);
      options.metrics?.messages.inc({ kind: "send" });
      return new Promise((resolve, reject) => {
        // A caller that gives up while its send waits for a service endpoint takes it back.
        const onAbort = () => {
          if (!env.answered) router.abandon(env, Code.Canceled, "cancelled by the caller");
        };
        const env: Letter = new Envelope({
          data,
          contentType,
          expectsReply: false,
          // For a send the deadline only bounds the wait for a service endpoint.
          deadline: ctx.deadline,
          onAnswer: ({ code, message, container }) => {
            ctx.signal.removeEventListener("abort", onAbort);
            if (code) reject(new ConnectError(message, code));
            else resolve({ container });
          },
        });
        ctx.signal.addEventListener("abort", onAbort);
        router.route(env, target);
      });
    },
    async request(req, ctx) {
      const target = parseTarget(req.target);
      const [data, contentType] = payloadOf(req);
      if (req.timeoutMs < 0) throw badField("timeoutMs", `must be 0 (default) or more, got ${req.timeoutMs}`, `timeoutMs must be 0 (default) or more, got ${req.timeoutMs}`);
      options.metrics?.messages.inc({ kind: "request" });
      return new Promise((resolve, reject) => {
        const onAbort = () => router.abandon(env, Code.Canceled, "cancelled by the caller");
        const timeout = req.timeoutMs > 0 ? req.timeoutMs : DEFAULT_REQUEST_TIMEOUT_MS;
        const env: Letter = new Envelope({
          data,
          contentType,
          expectsReply: true,
          deadline: Math.min(Date.now() + timeout, ctx.deadline ?? Infinity),
          onAnswer: (answer) => {
            ctx.signal.removeEventListener("abort", onAbort);
            if (answer.code) {
              reject(new ConnectError(answer.message, answer.code));
              return;
            }
            resolve({ data: answer.data, contentType: answer.contentType, json: replyJson(answer.data, answer.contentType), container: answer.container });
          },
        });
        if (ctx.signal.aborted) {
          reject(new ConnectError("cancelled by the caller", Code.Canceled));
          return;
        }
        ctx.signal.addEventListener("abort", onAbort);
        router.route(env, target);
      });
    },
  };
}
