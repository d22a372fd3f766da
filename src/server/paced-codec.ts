/**
 * Encoding and decoding of big messages a slice at a time, so that one large Apply request or
 * response (thousands of objects, megabytes) does not hold the event loop while worker
 * heartbeats and other clients wait.
 *
 * protobuf's wire format allows it without any change on the other end: a repeated field's
 * elements may be written as separate records anywhere in the message, so a message is the
 * bytes of its other fields followed by one record per element, each encoded (or decoded) on
 * its own with yieldToLoop() in between.
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { fromBinary, toBinary, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { yieldToLoop } from "./yielder.js";

/** Messages smaller than this are encoded or decoded in one step. */
export const PACE_BYTES = 256 * 1024;

/** Repeated fields with more elements than this are encoded element by element. */
const PACE_ELEMENTS = 64;

type ListOfMessages = DescField & { fieldKind: "list"; listKind: "message" };

function listsOfMessages(schema: DescMessage): ListOfMessages[] {
  return schema.fields.filter((f): f is ListOfMessages => f.fieldKind === "list" && f.listKind === "message");
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Encodes a message like toBinary, its long repeated message fields one element per slice. */
export async function encodePaced(schema: DescMessage, message: Message): Promise<Uint8Array> {
  const record = message as unknown as Record<string, Message[]>;
  const long = listsOfMessages(schema).filter((f) => record[f.localName]!.length > PACE_ELEMENTS);
  if (long.length === 0) return toBinary(schema, message);
  const rest = { ...record } as Record<string, unknown>;
  for (const f of long) rest[f.localName] = [];
  const parts: Uint8Array[] = [toBinary(schema, rest as unknown as Message)];
  for (const f of long) {
    for (const element of record[f.localName]!) {
      await yieldToLoop();
      parts.push(new BinaryWriter().tag(f.number, WireType.LengthDelimited).bytes(toBinary(f.message, element)).finish());
    }
  }
  return concat(parts);
}

/** Decodes bytes like fromBinary, the elements of its repeated message fields one per slice. */
export async function decodePaced<S extends DescMessage>(schema: S, bytes: Uint8Array): Promise<Message> {
  const lists = new Map(listsOfMessages(schema).map((f) => [f.number, f]));
  if (bytes.byteLength < PACE_BYTES || lists.size === 0) return fromBinary(schema, bytes);
  const reader = new BinaryReader(bytes);
  const rest: Uint8Array[] = [];
  const elements: { field: ListOfMessages; bytes: Uint8Array }[] = [];
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [no, wireType] = reader.tag();
    const field = lists.get(no);
    if (field && wireType === WireType.LengthDelimited) {
      elements.push({ field, bytes: reader.bytes() });
    } else {
      reader.skip(wireType, no);
      rest.push(bytes.subarray(start, reader.pos));
    }
  }
  const message = fromBinary(schema, concat(rest)) as unknown as Record<string, Message[]>;
  for (const e of elements) {
    await yieldToLoop();
    message[e.field.localName]!.push(fromBinary(e.field.message, e.bytes));
  }
  return message as unknown as Message;
}
