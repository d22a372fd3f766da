/**
 * The binary form of a WatchResponse built from the objects' stored bytes, without encoding
 * the objects again: a scale-up of a thousand replicas sends every new version of every replica
 * to each API watch, and protobuf-es's toBinary of those objects was the watch's main cost.
 *
 * A stored object is its protobuf encoding with an empty resourceVersion (the revision is the
 * key's, not stored). The event's object is those bytes with the `resource_version` field added
 * at the end of their one `metadata` record (its length rewritten): one metadata record, as every
 * protobuf parser reads it. (A second `metadata` record after the stored one would rely on the
 * parser merging the two, which protobuf.js, behind @grpc/proto-loader, does not: it keeps the
 * last record alone.) A scalar field given twice keeps its last value in every parser, so the
 * revision written here wins over any a stored form might carry.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { AnyObject } from "../../api/kinds.js";
import type { ObjectEvent } from "../store/resource-store.js";
import { messageFieldSize, Writer } from "../../transport/frame-codec.js";

/** Wire tags (field number << 3 | length-delimited) of the fields written here. */
const TAG_1 = 0x0a;
const TAG_2 = 0x12;
const TAG_3 = 0x1a;
const TAG_5 = 0x2a;

/** The `Object` oneof's tag of each kind (container = 1, replica_set = 2, service = 3). */
const KIND_TAG: Record<AnyObject["$typeName"], number> = {
  "k4s.v1.Container": TAG_1,
  "k4s.v1.ReplicaSet": TAG_2,
  "k4s.v1.Service": TAG_3,
};

const TYPE_BYTES: Record<ObjectEvent["type"], Uint8Array> = {
  ADDED: new TextEncoder().encode("ADDED"),
  MODIFIED: new TextEncoder().encode("MODIFIED"),
  DELETED: new TextEncoder().encode("DELETED"),
};

/** The field number of `metadata` in every kind. */
const METADATA_FIELD = 3;

/**
 * Where the stored object's metadata record lies: from its tag (`start`) through its content
 * (`content` to `end`); start = end = the stored length when it has none; undefined when it has
 * more than one, or one that is not length-delimited (the caller encodes the message then).
 */
function metadataRecord(stored: Uint8Array): { start: number; content: number; end: number } | undefined {
  const reader = new BinaryReader(stored);
  let found: { start: number; content: number; end: number } | undefined;
  while (reader.pos < stored.byteLength) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    if (field !== METADATA_FIELD) {
      reader.skip(wireType, field);
      continue;
    }
    if (found || wireType !== WireType.LengthDelimited) return undefined;
    const len = reader.uint32();
    found = { start, content: reader.pos, end: reader.pos + len };
    reader.pos = found.end;
  }
  return found ?? { start: stored.byteLength, content: stored.byteLength, end: stored.byteLength };
}

/** The sizes one event's record is made of, computed once for the measuring and the writing. */
interface EventLayout {
  stored: Uint8Array;
  kindTag: number;
  type: Uint8Array;
  /** The resourceVersion's ASCII digits (empty: the stored bytes are sent as they are). */
  rv: string;
  /** The stored metadata record's place (see metadataRecord). */
  at: { start: number; content: number; end: number };
  /** The length of the metadata record's content with the resourceVersion added. */
  meta: number;
  inner: number;
  object: number;
  event: number;
}

function layout(e: ObjectEvent & { value: Uint8Array }): EventLayout | undefined {
  const rv = e.object.metadata?.resourceVersion ?? "";
  const stored = e.value;
  const at = rv === "" ? { start: stored.byteLength, content: stored.byteLength, end: stored.byteLength } : metadataRecord(stored);
  if (!at) return undefined;
  const meta = rv === "" ? 0 : at.end - at.content + messageFieldSize(rv.length);
  const inner = rv === "" ? stored.byteLength : at.start + messageFieldSize(meta) + (stored.byteLength - at.end);
  const type = TYPE_BYTES[e.type];
  const object = messageFieldSize(inner);
  return { stored, kindTag: KIND_TAG[e.object.$typeName], type, rv, at, meta, inner, object, event: messageFieldSize(type.byteLength) + messageFieldSize(object) };
}

/**
 * Encodes a WatchResponse of `events` with `resourceVersion` from the events' stored bytes;
 * undefined when an event does not carry them (the caller encodes the message then).
 */
export function encodeWatchResponse(events: readonly ObjectEvent[], resourceVersion: string): Uint8Array | undefined {
  const layouts: EventLayout[] = [];
  let total = resourceVersion === "" ? 0 : messageFieldSize(resourceVersion.length);
  for (const e of events) {
    if (!e.value) return undefined;
    const l = layout(e as ObjectEvent & { value: Uint8Array });
    if (!l) return undefined;
    layouts.push(l);
    total += messageFieldSize(l.event);
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  for (const l of layouts) {
    w.head(TAG_1, l.event); // WatchResponse.events
    w.head(TAG_1, l.type.byteLength); // WatchEvent.type
    w.raw(l.type);
    w.head(TAG_2, l.object); // WatchEvent.object
    w.head(l.kindTag, l.inner); // Object.kind
    if (l.rv === "") {
      w.raw(l.stored);
      continue;
    }
    const { start, content, end } = l.at;
    w.raw(l.stored.subarray(0, start));
    w.head(TAG_3, l.meta); // metadata: the stored record's fields, then the revision
    w.raw(l.stored.subarray(content, end));
    w.stringField(TAG_5, l.rv); // ObjectMeta.resource_version
    w.raw(l.stored.subarray(end));
  }
  w.stringField(TAG_2, resourceVersion); // WatchResponse.resource_version (not written when empty)
  // Every byte is written: the sizes above are exact (a mistake would send uninitialised memory).
  if (w.pos !== total) throw new Error(`watch response: wrote ${w.pos} of ${total} bytes`);
  return w.buf;
}
