/**
 * Payload encoding shared by the client SDK and the workers: message bodies travel as bytes plus
 * a content type, and the router never looks inside. JSON is the default.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** The content type of JSON payloads (the default). */
export const JSON_CONTENT_TYPE = "application/json";
/** The content type of raw byte payloads. */
export const BYTES_CONTENT_TYPE = "application/octet-stream";
/** The content type of plain text payloads. */
export const TEXT_CONTENT_TYPE = "text/plain";

/** Payload is an encoded message body. */
export interface Payload {
  data: Uint8Array;
  contentType: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });
const EMPTY = new Uint8Array(0);

/** Whether a content type is JSON (empty counts as JSON, the default). */
export function isJsonContentType(contentType: string): boolean {
  if (contentType === "" || contentType === JSON_CONTENT_TYPE) return true;
  // The other common exact form, on every message of a byte-payload path: no string work.
  if (contentType === "application/octet-stream") return false;
  const base = contentType.split(";", 1)[0]!.trim().toLowerCase();
  return base === JSON_CONTENT_TYPE || base.endsWith("+json");
}

function isTextContentType(contentType: string): boolean {
  return contentType.startsWith("text/");
}

/**
 * Encodes a value into a payload: a Uint8Array is sent as is (application/octet-stream unless a
 * content type is given), a string with a text content type as UTF-8 text, anything else as
 * JSON. `undefined` encodes to an empty JSON payload (decoded back to undefined).
 */
export function encodePayload(value: unknown, contentType?: string): Payload {
  if (value instanceof Uint8Array) return { data: value, contentType: contentType || BYTES_CONTENT_TYPE };
  const type = contentType || JSON_CONTENT_TYPE;
  if (isJsonContentType(type)) {
    if (value === undefined) return { data: EMPTY, contentType: type };
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      throw new ConnectError(`payload cannot be encoded as JSON: ${(err as Error).message}`, Code.InvalidArgument);
    }
    // JSON.stringify answers undefined for functions and symbols.
    if (text === undefined) throw new ConnectError(`payload of type ${typeof value} cannot be encoded as JSON`, Code.InvalidArgument);
    return { data: encoder.encode(text), contentType: type };
  }
  if (typeof value === "string") return { data: encoder.encode(value), contentType: type };
  throw new ConnectError(
    `payload for content type "${type}" must be a string or a Uint8Array, got ${value === null ? "null" : typeof value}`,
    Code.InvalidArgument,
  );
}

/**
 * Decodes a payload by its content type: JSON (or empty type) → the parsed value (undefined for
 * empty data), text/* → string, anything else → the bytes. Invalid JSON → INVALID_ARGUMENT.
 */
export function decodePayload(data: Uint8Array, contentType: string): unknown {
  if (isJsonContentType(contentType)) {
    if (data.length === 0) return undefined;
    const text = decoder.decode(data);
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ConnectError(`payload is not valid JSON: ${(err as Error).message}`, Code.InvalidArgument);
    }
  }
  if (isTextContentType(contentType)) return decoder.decode(data);
  return data;
}

/** Decodes a payload's bytes as UTF-8 text, whatever its content type. */
export function payloadText(data: Uint8Array): string {
  return decoder.decode(data);
}
