/**
 * The stored forms of a batch of new objects made from one template (a ReplicaSet's replicas:
 * copies of one object under their own names and uids), encoded once: every kind's metadata is
 * its field 3, and an ObjectMeta's name and uid are its first two fields, so protobuf-es writes
 * an object as [fields before metadata][metadata: name, uid, the rest][fields after]. The
 * template's encoding is cut into those parts once; each copy's bytes are the parts with its
 * own name and uid records (and the metadata's new length) put in: byte for byte what encoding
 * the copy whole gives. Encoding a thousand copies whole was the largest cost of a scale-up's
 * creates.
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ObjectMetaSchema } from "../../gen/k4s/v1/resources_pb.js";
import type { AnyObject } from "../../api/kinds.js";

/** The field number of `metadata` in every kind. */
const METADATA_FIELD = 3;

const nameField = ObjectMetaSchema.fields[0]!;
const uidField = ObjectMetaSchema.fields[1]!;
/** Whether ObjectMeta still starts with name (1) and uid (2), which the splice relies on. */
const LAYOUT_HOLDS = nameField.localName === "name" && nameField.number === 1 && uidField.localName === "uid" && uidField.number === 2;

/** A template's encoding, cut where a copy's own parts go. */
export interface NewObjectParts {
  /** The fields before the metadata record. */
  head: Uint8Array;
  /** The metadata's fields after its name and uid. */
  metaRest: Uint8Array;
  /** The fields after the metadata record. */
  tail: Uint8Array;
}

/**
 * Cuts `encoded` (an object's encoding with `schema`) into the parts of NewObjectParts;
 * undefined when it is not laid out as described above (then encode each object whole).
 */
export function newObjectParts(encoded: Uint8Array): NewObjectParts | undefined {
  if (!LAYOUT_HOLDS) return undefined;
  const reader = new BinaryReader(encoded);
  let meta: { start: number; end: number; value: Uint8Array } | undefined;
  while (reader.pos < encoded.byteLength) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    if (field === METADATA_FIELD) {
      // A second metadata record (which a parser would merge) is not the layout this relies on.
      if (meta || wireType !== WireType.LengthDelimited) return undefined;
      const value = reader.bytes();
      meta = { start, end: reader.pos, value };
      continue;
    }
    reader.skip(wireType, field);
  }
  if (!meta) return undefined;
  // The metadata's name and uid records, when present, come first: skip them.
  const m = new BinaryReader(meta.value);
  let restStart = 0;
  while (m.pos < meta.value.byteLength) {
    const [field, wireType] = m.tag();
    if (field !== 1 && field !== 2) break;
    if (wireType !== WireType.LengthDelimited) return undefined;
    m.skip(wireType, field);
    restStart = m.pos;
  }
  return { head: encoded.subarray(0, meta.start), metaRest: meta.value.subarray(restStart), tail: encoded.subarray(meta.end) };
}

/** The bytes of a copy of the template of `parts` under `name` and `uid`. */
export function newObjectBytes(parts: NewObjectParts, name: string, uid: string): Uint8Array {
  const ids = new BinaryWriter();
  // Empty strings are not written (proto3), as protobuf-es does.
  if (name !== "") ids.tag(1, WireType.LengthDelimited).string(name);
  if (uid !== "") ids.tag(2, WireType.LengthDelimited).string(uid);
  const idBytes = ids.finish();
  const metaLength = idBytes.byteLength + parts.metaRest.byteLength;
  const prefix = new BinaryWriter().tag(METADATA_FIELD, WireType.LengthDelimited).uint32(metaLength).finish();
  const out = new Uint8Array(parts.head.byteLength + prefix.byteLength + metaLength + parts.tail.byteLength);
  let at = 0;
  for (const part of [parts.head, prefix, idBytes, parts.metaRest, parts.tail]) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * Tells whether `a` and `b` are copies of one template: every field the same value (the very
 * same object, for messages, maps and lists) but the metadata's name and uid.
 */
export function sameTemplate(a: AnyObject, b: AnyObject): boolean {
  if (!sameExcept(a, b, "metadata")) return false;
  const am = a.metadata;
  const bm = b.metadata;
  if (!am || !bm) return am === bm;
  return sameExcept(am, bm, "name", "uid");
}

function sameExcept(a: object, b: object, ...except: string[]): boolean {
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const k of keys) {
    if (except.includes(k)) continue;
    if (!(k in y) || x[k] !== y[k]) return false;
  }
  return true;
}
