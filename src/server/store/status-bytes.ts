/**
 * The stored form of an object whose status alone changed, made from the stored form of the
 * version it was read at: every kind's status is its last field (number 5), and protobuf-es
 * writes fields in order, so the stored bytes up to the status record stay as they are and only
 * the new status is encoded. A scale-up writes thousands of statuses; encoding each whole object
 * again (its spec, parameters, labels) was the largest cost of those writes.
 */
import { toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/** The field number of `status` in every kind. */
const STATUS_FIELD = 5;

/**
 * Returns `stored` (an object's stored bytes) with its status record replaced by `status`
 * encoded with `schema` (none when undefined); undefined when the stored bytes do not end with
 * their status record, for the caller to encode the whole object.
 */
export function withStatusBytes(stored: Uint8Array, schema: DescMessage, status: Message | undefined): Uint8Array | undefined {
  const reader = new BinaryReader(stored);
  let statusStart = stored.byteLength;
  while (reader.pos < stored.byteLength) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    reader.skip(wireType, field);
    // A field numbered after the status (one this version does not know) goes after it in the
    // encoding: the splice would put the status last, so encode the whole object instead.
    if (field > STATUS_FIELD) return undefined;
    if (field !== STATUS_FIELD) continue;
    // A field after the status (or a second status record): not the layout this relies on.
    if (reader.pos !== stored.byteLength || wireType !== WireType.LengthDelimited) return undefined;
    statusStart = start;
  }
  const tail = status === undefined ? new Uint8Array(0) : new BinaryWriter().tag(STATUS_FIELD, WireType.LengthDelimited).bytes(toBinary(schema, status)).finish();
  const out = new Uint8Array(statusStart + tail.byteLength);
  out.set(stored.subarray(0, statusStart));
  out.set(tail, statusStart);
  return out;
}
