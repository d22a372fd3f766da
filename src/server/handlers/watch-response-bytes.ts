/**
 * The binary form of a WatchResponse built from the objects' stored bytes, without encoding
 * the objects again: a scale-up of a thousand replicas sends every new version of every replica
 * to each API watch, and protobuf-es's toBinary of those objects was the watch's main cost.
 *
 * A stored object is its protobuf encoding with an empty resourceVersion (the revision is the
 * key's, not stored). The event's object is those bytes followed by a second `metadata` record
 * holding only `resource_version`: protobuf parsers merge repeated records of a singular message
 * field, so every client decodes the object with its metadata whole and the revision set.
 */
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

/** The sizes one event's record is made of, computed once for the measuring and the writing. */
interface EventLayout {
  stored: Uint8Array;
  kindTag: number;
  type: Uint8Array;
  /** The resourceVersion's ASCII digits (empty: no metadata record is appended). */
  rv: string;
  meta: number;
  inner: number;
  object: number;
  event: number;
}

function layout(e: ObjectEvent & { value: Uint8Array }): EventLayout {
  const rv = e.object.metadata?.resourceVersion ?? "";
  const meta = rv === "" ? 0 : recordSize(rv.length);
  const inner = e.value.byteLength + (meta === 0 ? 0 : recordSize(meta));
  const type = TYPE_BYTES[e.type];
  const object = recordSize(inner);
  return { stored: e.value, kindTag: KIND_TAG[e.object.$typeName], type, rv, meta, inner, object, event: recordSize(type.byteLength) + recordSize(object) };
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
    out.bytes(l.stored);
    if (l.meta > 0) {
      out.head(TAG_3, l.meta); // metadata, merged into the stored one
      out.head(TAG_5, l.rv.length); // ObjectMeta.resource_version
      out.ascii(l.rv);
    }
  }
  if (resourceVersion !== "") {
    out.head(TAG_2, resourceVersion.length); // WatchResponse.resource_version
    out.ascii(resourceVersion);
  }
  return out.buf;
}
