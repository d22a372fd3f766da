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

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/** Bytes of a length-delimited record of `len` bytes under a one-byte tag. */
function recordSize(len: number): number {
  return 1 + varintSize(len) + len;
}

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
  const meta = rv === "" ? 0 : at.end - at.content + recordSize(rv.length);
  const inner = rv === "" ? stored.byteLength : at.start + recordSize(meta) + (stored.byteLength - at.end);
  const type = TYPE_BYTES[e.type];
  const object = recordSize(inner);
  return { stored, kindTag: KIND_TAG[e.object.$typeName], type, rv, at, meta, inner, object, event: recordSize(type.byteLength) + recordSize(object) };
}

/** Writes protobuf-encoded values at a moving offset into a buffer of the exact size. */
class Out {
  offset = 0;
  constructor(readonly buf: Uint8Array) {}
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.offset++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.offset++] = n;
  }
  head(tag: number, len: number): void {
    this.buf[this.offset++] = tag;
    this.varint(len);
  }
  bytes(b: Uint8Array): void {
    this.buf.set(b, this.offset);
    this.offset += b.byteLength;
  }
  ascii(s: string): void {
    for (let i = 0; i < s.length; i++) this.buf[this.offset++] = s.charCodeAt(i);
  }
}

/**
 * Encodes a WatchResponse of `events` with `resourceVersion` from the events' stored bytes;
 * undefined when an event does not carry them (the caller encodes the message then).
 */
export function encodeWatchResponse(events: readonly ObjectEvent[], resourceVersion: string): Uint8Array | undefined {
  const layouts: EventLayout[] = [];
  let total = resourceVersion === "" ? 0 : recordSize(resourceVersion.length);
  for (const e of events) {
    if (!e.value) return undefined;
    const l = layout(e as ObjectEvent & { value: Uint8Array });
    if (!l) return undefined;
    layouts.push(l);
    total += recordSize(l.event);
  }
  const out = new Out(new Uint8Array(total));
  for (const l of layouts) {
    out.head(TAG_1, l.event); // WatchResponse.events
    out.head(TAG_1, l.type.byteLength); // WatchEvent.type
    out.bytes(l.type);
    out.head(TAG_2, l.object); // WatchEvent.object
    out.head(l.kindTag, l.inner); // Object.kind
    if (l.rv === "") {
      out.bytes(l.stored);
      continue;
    }
    const { start, content, end } = l.at;
    out.bytes(l.stored.subarray(0, start));
    out.head(TAG_3, l.meta); // metadata: the stored record's fields, then the revision
    out.bytes(l.stored.subarray(content, end));
    out.head(TAG_5, l.rv.length); // ObjectMeta.resource_version
    out.ascii(l.rv);
    out.bytes(l.stored.subarray(end));
  }
  if (resourceVersion !== "") {
    out.head(TAG_2, resourceVersion.length); // WatchResponse.resource_version
    out.ascii(resourceVersion);
  }
  return out.buf;
}
