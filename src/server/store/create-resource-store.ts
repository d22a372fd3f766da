/**
 * The implementation of ResourceStore (see resource-store.ts for the contract): typed
 * objects as protobuf binary under `/k4s/<plural>/<name>`, with Kubernetes' API machinery
 * rules applied on every write.
 */
import { randomUUID } from "node:crypto";
import { clone, create, equals, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ObjectMetaSchema, OwnerReferenceSchema, type OwnerReference } from "../../gen/k4s/v1/resources_pb.js";
import { formatBytes } from "../../api/byte-size.js";
import { API_VERSION, KINDS, kindInfo, kindOf, type AnyObject, type Kind, type ObjectOf } from "../../api/kinds.js";
import { matchesGlob, matchesSelector } from "../../api/selector.js";
import { sameStringMap } from "../../api/string-map.js";
import { assertValid, formatIssues, validateObject } from "../../api/validate.js";
import type { ApplyOptions, ApplyOutcome, BatchResult, DeleteTarget, ListOptions, ListResult, ObjectBatch, ObjectEvent, PageOptions, ResourceStore, StatusUpdate, WatchOptions } from "./resource-store.js";
import { yieldToLoop, type Priority } from "../yielder.js";
import { heldVersionsOf, type HeldVersions } from "./held-versions.js";
import { withStatusBytes } from "./status-bytes.js";
import { newObjectBytes, newObjectParts, sameTemplate, type NewObjectParts } from "./new-object-bytes.js";
import { futureRevisionError, MAX_BATCH_WRITES, type Compare, type KeyValue, type Op, type Store, type StoreEvent } from "./store.js";

/** The key prefix of every object. */
export const KEY_PREFIX = "/k4s/";

/**
 * The largest object, in bytes of its stored (protobuf) form: what counts is the object as
 * stored, after a manifest's aliases were expanded, whatever form it arrived in.
 */
export const MAX_OBJECT_BYTES = 1024 * 1024;

/**
 * The most objects one Apply may hold (manifest documents and typed objects together): one
 * transaction the server commits, and all its watchers digest, while yielding to other work
 * (see README "Limits" for the measured cost).
 */
export const MAX_APPLY_OBJECTS = 10_000;

/** Reads issued at once while an apply looks up the current versions of its objects. */
const APPLY_READ_CONCURRENCY = 256;

/** Objects of one kind in an apply from which their current versions are read with one range. */
const APPLY_RANGE_THRESHOLD = 256;

/** Tries of a batched status write's chunk (each re-reads it) before its objects are written one by one. */
const CHUNK_ATTEMPTS = 3;

/** Optimistic-concurrency retries before a write without precondition gives up with ABORTED. */
const MAX_RETRIES = 50;

/** Phases in which a bound Container is not running, so deleting it removes it at once. */
const NOT_RUNNING_PHASES = new Set(["Succeeded", "Failed", "Pending"]);

/** Returns the store key of an object. */
export function objectKey(kind: Kind, name: string): string {
  return `${KEY_PREFIX}${kindInfo(kind).plural}/${name}`;
}

/** Returns the key prefix of a kind, or of every kind. */
export function kindPrefix(kind: Kind | undefined): string {
  return kind ? `${KEY_PREFIX}${kindInfo(kind).plural}/` : KEY_PREFIX;
}

const KIND_BY_PLURAL = new Map<string, Kind>(KINDS.map((k) => [kindInfo(k).plural, k]));

/** The kind of an object key; undefined for other keys under the prefix (e.g. the etcd compactor's). */
function kindOfKey(key: string): Kind | undefined {
  if (!key.startsWith(KEY_PREFIX)) return undefined;
  const rest = key.slice(KEY_PREFIX.length);
  const slash = rest.indexOf("/");
  return slash < 0 ? undefined : KIND_BY_PLURAL.get(rest.slice(0, slash));
}

function nameOfKey(key: string): string {
  return key.slice(key.lastIndexOf("/") + 1);
}

function schemaOf(kind: Kind): DescMessage {
  return kindInfo(kind).schema;
}

function subSchema(kind: Kind, field: "spec" | "status"): DescMessage {
  const f = schemaOf(kind).fields.find((x) => x.localName === field);
  if (f?.fieldKind !== "message") throw new Error(`${kind} has no message field ${field}`);
  return f.message;
}

const SPEC = new Map<Kind, DescMessage>(KINDS.map((k) => [k, subSchema(k, "spec")]));
const STATUS = new Map<Kind, DescMessage>(KINDS.map((k) => [k, subSchema(k, "status")]));

/** Decodes a stored value into a fresh object whose resourceVersion is the key's modRevision. */
function decode(kind: Kind, kv: Pick<KeyValue, "value" | "modRevision">, revision = kv.modRevision): AnyObject {
  const obj = fromBinary(schemaOf(kind), kv.value) as AnyObject;
  obj.metadata ??= create(ObjectMetaSchema);
  obj.metadata.resourceVersion = String(revision);
  return obj;
}

/**
 * Runs a batch MAX_BATCH_WRITES items to a chunk: `batched` writes a chunk in one transaction
 * (undefined when one of its objects changed meanwhile, nothing written; tried CHUNK_ATTEMPTS
 * times, each re-reading); a chunk that keeps changing under it (a scale-down marking them,
 * statuses written meanwhile) goes `alone`, item by item, all at once, so one busy object does
 * not hold back the others.
 */
async function inChunks<T, R>(
  items: readonly T[],
  batched: (chunk: readonly T[], attempt: number) => Promise<R[] | undefined>,
  alone: (item: T) => Promise<R>,
  attempts = CHUNK_ATTEMPTS,
): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += MAX_BATCH_WRITES) {
    const chunk = items.slice(start, start + MAX_BATCH_WRITES);
    let batch: R[] | undefined;
    for (let attempt = 0; !batch && attempt < attempts; attempt++) batch = await batched(chunk, attempt);
    results.push(...(batch ?? (await Promise.all(chunk.map(alone)))));
  }
  return results;
}

/** A single write's outcome as an item of a batch's results. */
function settled<T>(write: Promise<T>): Promise<BatchResult<T>> {
  return write.then(
    (object): BatchResult<T> => ({ object }),
    (err: unknown): BatchResult<T> => ({ error: ConnectError.from(err) }),
  );
}

/**
 * Commits one chunk's writes in one transaction guarded by `compares`; false when one of them
 * changed meanwhile (nothing was written). The objects `written` take the transaction's
 * revision and are pinned until a watch delivers them (see held-versions.ts): shared with
 * watchers from now on, read-only.
 */
async function commitChunk(ctx: Layer, compares: Compare[], ops: Op[], written: readonly AnyObject[]): Promise<boolean> {
  if (ops.length === 0) return true;
  const r = await ctx.store.txn(compares, ops);
  if (!r.succeeded) return false;
  for (const obj of written) {
    obj.metadata!.resourceVersion = String(r.revision);
    ctx.versions.hold(objectKey(kindOf(obj), obj.metadata!.name), obj, true);
  }
  return true;
}

/**
 * Encodes an object owned by this module; resourceVersion is derived from the key, never
 * stored. INVALID_ARGUMENT, naming the object (`label`) and its size, when it is too big.
 */
function encode(obj: AnyObject, label = describe(kindOf(obj), obj.metadata?.name ?? "")): Uint8Array {
  const meta = obj.metadata!;
  const rv = meta.resourceVersion;
  meta.resourceVersion = "";
  let bytes: Uint8Array;
  try {
    bytes = toBinary(schemaOf(kindOf(obj)), obj);
  } finally {
    meta.resourceVersion = rv;
  }
  if (bytes.byteLength > MAX_OBJECT_BYTES) throw tooBig(label, bytes.byteLength);
  return bytes;
}

/**
 * encode(next) for a copy of a stored version (`stored`: its bytes) whose status alone changed:
 * the stored bytes with the new status in place of the old one (see status-bytes.ts).
 */
function encodeStatusChange(kind: Kind, stored: Uint8Array, next: AnyObject): Uint8Array {
  const bytes = withStatusBytes(stored, STATUS.get(kind)!, next.status);
  if (!bytes) return encode(next);
  if (bytes.byteLength > MAX_OBJECT_BYTES) throw tooBig(describe(kind, next.metadata!.name), bytes.byteLength);
  return bytes;
}

function tooBig(label: string, bytes: number): ConnectError {
  return new ConnectError(
    `${label}: is ${formatBytes(bytes, 2)} (${bytes} bytes) when stored, more than the ${formatBytes(MAX_OBJECT_BYTES, 2)} an object may hold (aliases and parameters count as expanded)`,
    Code.InvalidArgument,
  );
}

/** A continue token's content: the revision the listing is read at and the last key it covered. */
interface ContinueToken {
  rv: number;
  key: string;
}

function encodeToken(t: ContinueToken): string {
  return Buffer.from(JSON.stringify({ v: 1, rv: t.rv, key: t.key })).toString("base64url");
}

function decodeToken(token: string, kind: Kind): ContinueToken {
  let t: { v?: unknown; rv?: unknown; key?: unknown };
  try {
    t = JSON.parse(Buffer.from(token, "base64url").toString()) as typeof t;
  } catch {
    t = {};
  }
  if (t.v !== 1 || typeof t.rv !== "number" || !Number.isSafeInteger(t.rv) || t.rv < 0 || typeof t.key !== "string") {
    throw new ConnectError("continueToken: not a continue token from a List of this server", Code.InvalidArgument);
  }
  if (!t.key.startsWith(kindPrefix(kind))) {
    throw new ConnectError(`continueToken: the token continues a listing of another kind, not ${kind}`, Code.InvalidArgument);
  }
  return { rv: t.rv, key: t.key };
}

function copy<T extends AnyObject>(obj: T): T {
  return clone(schemaOf(kindOf(obj)), obj) as T;
}

function sameMessage(schema: DescMessage, a: unknown, b: unknown): boolean {
  const x = (a ?? create(schema)) as never;
  const y = (b ?? create(schema)) as never;
  return equals(schema, x, y);
}

function sameOwner(a: OwnerReference | undefined, b: OwnerReference | undefined): boolean {
  if (!a || !b) return a === b;
  return equals(OwnerReferenceSchema, a, b);
}

function describe(kind: Kind, name: string): string {
  return `${kind} "${name}"`;
}

function notFound(kind: Kind, name: string): ConnectError {
  return new ConnectError(`${describe(kind, name)} not found`, Code.NotFound);
}

function conflict(kind: Kind, name: string, expected: string, actual: number | undefined): ConnectError {
  return new ConnectError(
    actual === undefined
      ? `${describe(kind, name)} was deleted meanwhile (expected resourceVersion ${expected})`
      : `${describe(kind, name)} was modified meanwhile: resourceVersion is ${actual}, not ${expected}; read it again and retry`,
    Code.Aborted,
  );
}

function gaveUp(kind: Kind, name: string): ConnectError {
  return new ConnectError(`${describe(kind, name)} kept changing during the write; retry`, Code.Aborted);
}

/** Tells whether deleting this Container must wait for its host to stop it. */
function mustDrain(obj: AnyObject): boolean {
  if (obj.$typeName !== "k4s.v1.Container") return false;
  const st = obj.status;
  return !!st && st.host !== "" && !NOT_RUNNING_PHASES.has(st.phase);
}

/** Marks a running Container for deletion (a copy): deletionTimestamp and phase Terminating. */
function markForDeletion(obj: AnyObject): AnyObject {
  const next = copy(obj);
  next.metadata!.deletionTimestamp = timestampNow();
  if (next.$typeName === "k4s.v1.Container") {
    next.status!.phase = "Terminating";
    next.status!.ready = false;
  }
  return next;
}

/** Applies the user-owned parts of `input` (labels, annotations, spec, ownerReference) onto a copy of `current`. */
function merge(kind: Kind, current: AnyObject, input: AnyObject, ownerFromInput: boolean): { next: AnyObject; changed: boolean } {
  const cm = current.metadata!;
  const im = input.metadata!;
  const specChanged = !sameMessage(SPEC.get(kind)!, current.spec, input.spec);
  const labelsChanged = !sameStringMap(cm.labels, im.labels);
  const annotationsChanged = !sameStringMap(cm.annotations, im.annotations);
  const ownerChanged = ownerFromInput && !sameOwner(cm.ownerReference, im.ownerReference);
  const changed = specChanged || labelsChanged || annotationsChanged || ownerChanged;
  if (!changed) return { next: current, changed };
  const next = copy(current);
  const nm = next.metadata!;
  nm.labels = { ...im.labels };
  nm.annotations = { ...im.annotations };
  if (ownerFromInput) nm.ownerReference = im.ownerReference ? clone(OwnerReferenceSchema, im.ownerReference) : undefined;
  if (specChanged) {
    next.spec = (input.spec ? clone(SPEC.get(kind)!, input.spec as never) : undefined) as never;
    nm.generation = nm.generation + 1n;
  }
  return { next, changed };
}

/** Prepares a new object for storage: server-set metadata and an empty status. */
function stampNew(kind: Kind, input: AnyObject): AnyObject {
  const obj = copy(input);
  obj.apiVersion = API_VERSION;
  obj.kind = kind;
  const meta = (obj.metadata ??= create(ObjectMetaSchema));
  meta.uid = randomUUID();
  meta.generation = 1n;
  meta.creationTimestamp = timestampNow();
  meta.deletionTimestamp = undefined;
  meta.resourceVersion = "";
  obj.status = create(STATUS.get(kind)!) as never;
  return obj;
}

/** ResourceStoreOptions tune a typed layer. */
export interface ResourceStoreOptions {
  /**
   * Whose work this layer does, for the turns its heavy steps take on the event loop:
   * "request" for the API handlers (they go first), "background" (default) for controllers and
   * the messaging plane.
   */
  priority?: Priority;
}

/** What the layer's module-level steps work with: the store, and how to take turns on the event loop. */
interface Layer {
  store: Store;
  pace: () => Promise<void>;
  /** See held-versions.ts: the batched writes' results are shared with watchers, read-only. */
  versions: HeldVersions;
}

/** Reads and decodes one object; many reads at once (a storm of status writes) take turns. */
async function readObject(ctx: Layer, kind: Kind, name: string) {
  const { store, pace } = ctx;
  const kv = await store.get(objectKey(kind, name));
  if (!kv) return undefined;
  await pace();
  return { kv, obj: decode(kind, kv) };
}

/**
 * Reads one object, shared and read-only: the version this process holds (see held-versions.ts)
 * when it is the stored one, else decoded once and held for the next reader and watch event.
 */
async function readShared(ctx: Layer, kind: Kind, name: string) {
  const { store, pace, versions } = ctx;
  const key = objectKey(kind, name);
  const kv = await store.get(key);
  if (!kv) return undefined;
  let obj = versions.get(key, kv.modRevision);
  if (!obj) {
    await pace();
    obj = decode(kind, kv);
    versions.hold(key, obj);
    versions.storedAs(obj, kv.value);
  }
  return { kv, obj };
}

/**
 * The stored versions of an apply's objects: one read per object, or, for a kind with many
 * objects in the apply, one paged range over the kind (ten thousand reads of etcd would be ten
 * thousand round trips).
 */
async function readCurrent(ctx: Layer, inputs: readonly AnyObject[], keys: readonly string[]): Promise<(KeyValue | undefined)[]> {
  const { store, pace } = ctx;
  const byKind = new Map<Kind, number>();
  for (const o of inputs) byKind.set(kindOf(o), (byKind.get(kindOf(o)) ?? 0) + 1);
  const ranged = new Map<string, KeyValue>();
  for (const [kind, n] of byKind) {
    if (n < APPLY_RANGE_THRESHOLD) continue;
    for (const kv of (await store.range(kindPrefix(kind))).kvs) ranged.set(kv.key, kv);
  }
  const current: (KeyValue | undefined)[] = [];
  for (let i = 0; i < keys.length; i += APPLY_READ_CONCURRENCY) {
    const chunk = keys.slice(i, i + APPLY_READ_CONCURRENCY);
    current.push(...(await Promise.all(chunk.map((k, j) => (byKind.get(kindOf(inputs[i + j]!))! >= APPLY_RANGE_THRESHOLD ? ranged.get(k) : store.get(k))))));
    await pace();
  }
  return current;
}

/** Reads a page (or all) of one kind's objects, or of every kind's; see ResourceStore.list. */
async function listPage(
  ctx: Layer,
  kind: Kind | undefined,
  options: PageOptions = {},
): Promise<ListResult<Kind> & { items: AnyObject[]; values: Uint8Array[] }> {
  const { store, pace } = ctx;
  const token = options.continueToken && kind ? decodeToken(options.continueToken, kind) : undefined;
  // Keys end in the name, so a glob's literal head narrows the range and a name that does not
  // match is skipped before its value is decoded (a ReplicaSet's reconcile lists `<rs>-*`).
  const glob = options.nameGlob;
  const head = kind && glob ? glob.slice(0, glob.search(/[*?[{!\\+@(]|$/)) : "";
  const prefix = kindPrefix(kind) + head;
  const filtered = !!glob || Object.keys(options.labels ?? {}).length > 0 || options.labelSelector !== undefined;
  const limit = options.limit && options.limit > 0 ? options.limit : 0;
  const maxBytes = options.maxBytes ?? Infinity;
  const items: AnyObject[] = [];
  const values: Uint8Array[] = [];
  let bytes = 0;
  let after = token?.key;
  let revision = token?.rv;
  for (;;) {
    const want = limit > 0 ? limit - items.length : 0;
    const chunk = limit > 0 ? (filtered ? Math.max(want, 256) : want) : Number.isFinite(maxBytes) ? 500 : 0;
    let r;
    try {
      r = await store.range(prefix, { after, limit: chunk, revision });
    } catch (e) {
      const err = ConnectError.from(e);
      if (token && err.code === Code.OutOfRange) {
        throw new ConnectError(
          `continue token expired: its listing was read at revision ${token.rv}, which is no longer kept (${err.rawMessage}); start a new list without continueToken`,
          Code.OutOfRange,
        );
      }
      throw err;
    }
    revision = r.revision;
    const page = (next: string | undefined, remaining: number) => ({
      items,
      values,
      revision: r.revision,
      ...(next !== undefined ? { continueToken: encodeToken({ rv: r.revision, key: next }) } : {}),
      ...(next !== undefined && !filtered ? { remainingItemCount: remaining } : {}),
    });
    for (let i = 0; i < r.kvs.length; i++) {
      await pace();
      const kv = r.kvs[i]!;
      const k = kindOfKey(kv.key);
      if (!k || (glob && !matchesGlob(nameOfKey(kv.key), glob))) {
        after = kv.key;
        continue;
      }
      const obj = decode(k, kv);
      if (!matchesSelector(obj, options)) {
        after = kv.key;
        continue;
      }
      if (items.length > 0 && bytes + kv.value.byteLength > maxBytes) return page(after, r.kvs.length - i + r.remaining);
      items.push(obj);
      values.push(kv.value);
      bytes += kv.value.byteLength;
      after = kv.key;
      if (limit > 0 && items.length >= limit) {
        const left = r.kvs.length - 1 - i + r.remaining;
        return page(i < r.kvs.length - 1 || r.more ? after : undefined, left);
      }
    }
    if (!r.more) return page(undefined, 0);
  }
}

/** Replaces an object's spec and metadata (not its status); see ResourceStore.update. */
async function updateObject<T extends AnyObject>(ctx: Layer, input: T): Promise<T> {
  const { store } = ctx;
  const kind = kindOf(input);
  assertValid(input);
  const name = input.metadata!.name;
  const key = objectKey(kind, name);
  const precondition = input.metadata!.resourceVersion;
  for (let attempt = 0; ; attempt++) {
    const cur = await readObject(ctx, kind, name);
    if (!cur) throw notFound(kind, name);
    if (precondition && precondition !== String(cur.kv.modRevision)) throw conflict(kind, name, precondition, cur.kv.modRevision);
    const { next, changed } = merge(kind, cur.obj, input, true);
    if (!changed) return cur.obj as T;
    const r = await store.txn([{ key, modRevision: cur.kv.modRevision }], [{ type: "put", key, value: encode(next) }]);
    if (r.succeeded) {
      next.metadata!.resourceVersion = String(r.revision);
      return next as T;
    }
    if (precondition) {
      const now = await store.get(key);
      throw conflict(kind, name, precondition, now?.modRevision);
    }
    if (attempt >= MAX_RETRIES) throw gaveUp(kind, name);
  }
}

/** Deletes an object, or marks it for deletion while it drains; a ReplicaSet takes its Containers along. See ResourceStore.delete. */
async function deleteObject(ctx: Layer, kind: Kind, name: string, options: { resourceVersion?: string } = {}): Promise<AnyObject> {
  const { store, pace } = ctx;
  const key = objectKey(kind, name);
  const precondition = options.resourceVersion;
  for (let attempt = 0; ; attempt++) {
    const cur = await readObject(ctx, kind, name);
    if (!cur) throw notFound(kind, name);
    if (precondition && precondition !== String(cur.kv.modRevision)) throw conflict(kind, name, precondition, cur.kv.modRevision);
    const compares: Compare[] = [{ key, modRevision: cur.kv.modRevision }];
    const ops: Op[] = [];
    let result = cur.obj;
    if (mustDrain(cur.obj)) {
      if (cur.obj.metadata!.deletionTimestamp) return cur.obj;
      result = markForDeletion(cur.obj);
      ops.push({ type: "put", key, value: encode(result) });
    } else {
      ops.push({ type: "delete", key });
    }
    if (kind === "ReplicaSet") {
      const uid = cur.obj.metadata!.uid;
      const containers = await store.range(kindPrefix("Container"));
      for (const kv of containers.kvs) {
        await pace();
        const c = decode("Container", kv);
        const owner = c.metadata!.ownerReference;
        if (owner?.kind !== "ReplicaSet" || owner.uid !== uid) continue;
        compares.push({ key: kv.key, modRevision: kv.modRevision });
        if (!mustDrain(c)) ops.push({ type: "delete", key: kv.key });
        else if (!c.metadata!.deletionTimestamp) ops.push({ type: "put", key: kv.key, value: encode(markForDeletion(c)) });
      }
    }
    const r = await store.txn(compares, ops);
    if (r.succeeded) {
      if (result !== cur.obj) result.metadata!.resourceVersion = String(r.revision);
      return result;
    }
    if (precondition) {
      const now = await store.get(key);
      if (now?.modRevision !== cur.kv.modRevision) throw conflict(kind, name, precondition, now?.modRevision);
    }
    if (attempt >= MAX_RETRIES) throw gaveUp(kind, name);
  }
}

/**
 * Deletes (or marks) the objects of one chunk in one transaction guarded by the revisions read;
 * undefined when one changed meanwhile (nothing was written) or a name comes twice, for the
 * caller to delete them one by one.
 */
async function deleteChunk(ctx: Layer, kind: Kind, chunk: readonly DeleteTarget[]): Promise<BatchResult<AnyObject>[] | undefined> {
  const keys = chunk.map((t) => objectKey(kind, t.name));
  if (new Set(keys).size < keys.length) return undefined;
  const kvs = await Promise.all(keys.map((k) => ctx.store.get(k)));
  // One turn for the chunk, as for a chunk of statuses (see writeStatusChunk).
  await ctx.pace();
  const compares: Compare[] = [];
  const ops: Op[] = [];
  const marked: AnyObject[] = [];
  const out: BatchResult<AnyObject>[] = [];
  for (const [i, t] of chunk.entries()) {
    const kv = kvs[i];
    if (!kv) {
      out.push({ error: notFound(kind, t.name) });
      continue;
    }
    const known = t.known?.metadata?.resourceVersion === String(kv.modRevision) ? t.known : undefined;
    const obj = known ?? decode(kind, kv);
    if (!mustDrain(obj)) {
      compares.push({ key: keys[i]!, modRevision: kv.modRevision });
      ops.push({ type: "delete", key: keys[i]! });
      out.push({ object: obj });
    } else if (obj.metadata!.deletionTimestamp) {
      out.push({ object: obj });
    } else {
      const next = markForDeletion(obj);
      compares.push({ key: keys[i]!, modRevision: kv.modRevision });
      ops.push({ type: "put", key: keys[i]!, value: encode(next) });
      marked.push(next);
      out.push({ object: next });
    }
  }
  return (await commitChunk(ctx, compares, ops, marked)) ? out : undefined;
}

/** Deletes objects MAX_BATCH_WRITES to a transaction; see ResourceStore.deleteAll. */
async function deleteObjects(ctx: Layer, kind: Kind, targets: readonly DeleteTarget[]): Promise<BatchResult<AnyObject>[]> {
  const alone = (t: DeleteTarget) => settled(deleteObject(ctx, kind, t.name));
  // A ReplicaSet's delete reads and writes all its Containers: one transaction each.
  if (kind === "ReplicaSet") return Promise.all(targets.map(alone));
  return inChunks(targets, (chunk) => deleteChunk(ctx, kind, chunk), alone);
}

/** Creates or updates many objects in one transaction, all or none; see ResourceStore.apply. */
async function applyObjects(ctx: Layer, objects: readonly AnyObject[], options: ApplyOptions = {}): Promise<ApplyOutcome[]> {
  const { store, pace } = ctx;
  if (objects.length > MAX_APPLY_OBJECTS) {
    throw new ConnectError(
      `apply of ${objects.length} objects: more than the ${MAX_APPLY_OBJECTS} one apply may hold; split it into several applies`,
      Code.InvalidArgument,
    );
  }
  // Thousands of objects are checked, read and encoded a slice at a time, so heartbeats
  const inputs: AnyObject[] = [];
  const labels: string[] = [];
  const errors: string[] = [];
  const seen = new Map<string, number>();
  for (const [i, o] of objects.entries()) {
    await pace();
    const obj = copy(o);
    const kind = kindOf(obj);
    const name = obj.metadata?.name ?? "";
    const label = options.labels?.[i] ?? `object ${i + 1} (${kind}${name ? ` "${name}"` : ""})`;
    inputs.push(obj);
    labels.push(label);
    const issues = validateObject(obj);
    if (issues.length > 0) errors.push(`${label}: ${formatIssues(issues)}`);
    const key = objectKey(kind, name);
    const first = seen.get(key);
    if (first !== undefined) errors.push(`${label}: duplicate of object ${first + 1}`);
    else seen.set(key, i);
  }
  if (errors.length > 0) throw new ConnectError(errors.join("; "), Code.InvalidArgument);

  const keys = inputs.map((o) => objectKey(kindOf(o), o.metadata!.name));
  for (let attempt = 0; ; attempt++) {
    const current = await readCurrent(ctx, inputs, keys);
    const compares: Compare[] = [];
    const writes: { order: number; op: Op }[] = [];
    const outcomes: ApplyOutcome[] = [];
    for (const [i, input] of inputs.entries()) {
      await pace();
      const kind = kindOf(input);
      const key = keys[i]!;
      const kv = current[i];
      compares.push({ key, modRevision: kv?.modRevision ?? 0 });
      if (!kv) {
        const obj = stampNew(kind, input);
        outcomes.push({ action: "created", object: obj });
        writes.push({ order: KINDS.indexOf(kind), op: { type: "put", key, value: encode(obj, labels[i]) } });
        continue;
      }
      const { next, changed } = merge(kind, decode(kind, kv), input, input.metadata!.ownerReference !== undefined);
      if (!changed) {
        outcomes.push({ action: "unchanged", object: next });
        continue;
      }
      outcomes.push({ action: "configured", object: next });
      writes.push({ order: KINDS.indexOf(kind), op: { type: "put", key, value: encode(next, labels[i]) } });
    }
    if (options.dryRun || writes.length === 0) return outcomes;
    // Templates before their users, so a watcher reading the batch in order sees them first.
    writes.sort((a, b) => a.order - b.order);
    const r = await store.txn(
      compares,
      writes.map((w) => w.op),
    );
    if (r.succeeded) {
      for (const o of outcomes) if (o.action !== "unchanged") o.object.metadata!.resourceVersion = String(r.revision);
      return outcomes;
    }
    if (attempt >= MAX_RETRIES) throw new ConnectError("apply: the objects kept changing during the write; retry", Code.Aborted);
  }
}

/** Read-modify-write of one object's status, retried on conflict; see ResourceStore.updateStatus. */
async function updateStatusOf<K extends Kind>(
  ctx: Layer,
  kind: K,
  name: string,
  mutate: (current: ObjectOf<K>) => ObjectOf<K>["status"] | undefined,
): Promise<ObjectOf<K> | undefined> {
  const key = objectKey(kind, name);
  const statusSchema = STATUS.get(kind)!;
  for (let attempt = 0; ; attempt++) {
    // The stored version as held (shared): mutate and the caller get copies of their own.
    const cur = await readShared(ctx, kind, name);
    if (!cur) return undefined;
    const status = mutate(copy(cur.obj) as ObjectOf<K>);
    if (status === undefined || sameMessage(statusSchema, cur.obj.status, status)) return copy(cur.obj) as ObjectOf<K>;
    const next = copy(cur.obj);
    next.status = clone(statusSchema, status as never) as never;
    const value = encodeStatusChange(kind, cur.kv.value, next);
    const r = await ctx.store.txn([{ key, modRevision: cur.kv.modRevision }], [{ type: "put", key, value }]);
    if (r.succeeded) {
      next.metadata!.resourceVersion = String(r.revision);
      // Held as written (a copy: the caller's may change), for the watch event and the next read.
      const stored = copy(next);
      ctx.versions.hold(key, stored);
      ctx.versions.storedAs(stored, value);
      return next as ObjectOf<K>;
    }
    if (attempt >= MAX_RETRIES) throw gaveUp(kind, name);
  }
}

/**
 * Writes the statuses of one chunk of updates in one transaction guarded by the revisions
 * read; undefined when an object changed meanwhile (nothing was written) or a name comes
 * twice, for the caller to write them one by one.
 *
 * The first try (`attempt` 0) reads nothing for an update whose known object is a version this
 * process wrote or decoded: it takes that version's bytes as the stored ones, and the
 * transaction's guard on its revision (kept even when the update changes nothing) tells
 * whether it still is; when not, nothing was written and the next try reads.
 */
async function writeStatusChunk<K extends Kind>(
  ctx: Layer,
  kind: K,
  chunk: readonly StatusUpdate<K>[],
  attempt: number,
): Promise<BatchResult<ObjectOf<K> | undefined>[] | undefined> {
  const keys = chunk.map((u) => objectKey(kind, u.name));
  if (new Set(keys).size < keys.length) return undefined;
  const statusSchema = STATUS.get(kind)!;
  const kvs = await Promise.all(
    keys.map((k, i): Promise<{ value: Uint8Array; modRevision: number; assumed?: boolean } | undefined> => {
      const known = chunk[i]!.known as AnyObject | undefined;
      const value = attempt === 0 && known ? ctx.versions.bytesOf(known) : undefined;
      const modRevision = Number(known?.metadata?.resourceVersion);
      return value && modRevision > 0 ? Promise.resolve({ value, modRevision, assumed: true }) : ctx.store.get(k);
    }),
  );
  const compares: Compare[] = [];
  const ops: Op[] = [];
  const written: AnyObject[] = [];
  const values: Uint8Array[] = [];
  const out: BatchResult<ObjectOf<K> | undefined>[] = [];
  // One turn for the chunk: it is bounded, and a turn per object would queue each step of the
  // batch behind every other task's (a storm of watch decodes), object after object.
  await ctx.pace();
  for (const [i, u] of chunk.entries()) {
    const kv = kvs[i];
    if (!kv) {
      out.push({ object: undefined });
      continue;
    }
    const known = u.known?.metadata?.resourceVersion === String(kv.modRevision) ? (u.known as AnyObject) : undefined;
    // Decoded for this update alone, mutate may have it (updateStatus gives a copy); only the
    // status it is compared with is kept aside, in case mutate changes it in place.
    const cur = known ?? decode(kind, kv);
    const prior = known ? cur.status : cur.status && clone(statusSchema, cur.status as never);
    let status;
    try {
      status = u.mutate(cur as ObjectOf<K>);
    } catch (err) {
      out.push({ error: ConnectError.from(err) });
      continue;
    }
    if (status === undefined || sameMessage(statusSchema, prior, status)) {
      if (!known) cur.status = prior as never;
      // Nothing to write, as of a version taken for the stored one: the guard checks it was.
      if (kv.assumed) compares.push({ key: keys[i]!, modRevision: kv.modRevision });
      out.push({ object: cur as ObjectOf<K> });
      continue;
    }
    // A known object is shared: the new version shares its unchanged parts but not its metadata.
    const next = known ? ({ ...known, metadata: { ...known.metadata! } } as AnyObject) : cur;
    next.status = clone(statusSchema, status as never) as never;
    let value: Uint8Array;
    try {
      value = known ? encodeStatusChange(kind, kv.value, next) : encode(next);
    } catch (err) {
      // Too big when stored: this update's error, as a mutate's; the others are written.
      out.push({ error: ConnectError.from(err) });
      continue;
    }
    compares.push({ key: keys[i]!, modRevision: kv.modRevision });
    ops.push({ type: "put", key: keys[i]!, value });
    written.push(next);
    values.push(value);
    out.push({ object: next as ObjectOf<K> });
  }
  if (ops.length === 0 && compares.length > 0) return (await ctx.store.txn(compares, [])).succeeded ? out : undefined;
  if (!(await commitChunk(ctx, compares, ops, written))) return undefined;
  written.forEach((obj, i) => ctx.versions.storedAs(obj, values[i]!));
  return out;
}

/** Status writes of many objects, a transaction per chunk; see ResourceStore.updateStatuses. */
function updateStatuses<K extends Kind>(ctx: Layer, kind: K, updates: readonly StatusUpdate<K>[]): Promise<BatchResult<ObjectOf<K> | undefined>[]> {
  return inChunks(
    updates,
    (chunk, attempt) => writeStatusChunk(ctx, kind, chunk, attempt),
    (u) => settled(updateStatusOf(ctx, kind, u.name, u.mutate)),
    // One more: the first may take a known version for the stored one and find it was not.
    CHUNK_ATTEMPTS + 1,
  );
}

/** A new object stamped and encoded for a batched create, with where its result goes. */
interface StagedCreate {
  index: number;
  key: string;
  obj: AnyObject;
  value: Uint8Array;
}

/** Creates objects MAX_BATCH_WRITES to a transaction, each refused alone; see ResourceStore.createAll. */
async function createObjects<T extends AnyObject>(ctx: Layer, inputs: readonly T[]): Promise<BatchResult<T>[]> {
  const { store, pace } = ctx;
  const results: BatchResult<T>[] = new Array<BatchResult<T>>(inputs.length);
  const staged: StagedCreate[] = [];
  const keys = new Set<string>();
  // The last object stamped and encoded whole, with the input it came from: the next input that
  // is a copy of the same template (see new-object-bytes.ts) shares its stamped parts (read-only
  // from now on, as every stored object) and has its bytes spliced from its encoding.
  let template: { input: T; obj: AnyObject; value: Uint8Array; parts?: NewObjectParts | null } | undefined;
  for (const [index, input] of inputs.entries()) {
    // A scale-up of thousands is stamped and encoded a chunk at a time.
    if (index % MAX_BATCH_WRITES === 0) await pace();
    try {
      assertValid(input);
      const kind = kindOf(input);
      const name = input.metadata?.name ?? "";
      const key = objectKey(kind, name);
      if (keys.has(key)) throw alreadyExists(kind, name);
      const parts = template && sameTemplate(template.input, input) ? (template.parts ??= newObjectParts(template.value) ?? null) : undefined;
      let obj: AnyObject;
      let value: Uint8Array;
      if (template && parts) {
        obj = { ...template.obj, metadata: { ...template.obj.metadata!, name, uid: randomUUID() } } as AnyObject;
        value = newObjectBytes(parts, name, obj.metadata!.uid);
        if (value.byteLength > MAX_OBJECT_BYTES) throw tooBig(describe(kind, name), value.byteLength);
      } else {
        obj = stampNew(kind, input);
        value = encode(obj);
        template = { input, obj, value };
      }
      keys.add(key);
      staged.push({ index, key, obj, value });
    } catch (err) {
      results[index] = { error: ConnectError.from(err) };
    }
  }
  for (let start = 0; start < staged.length; start += MAX_BATCH_WRITES) {
    let chunk = staged.slice(start, start + MAX_BATCH_WRITES);
    for (let attempt = 0; chunk.length > 0; attempt++) {
      const compares = chunk.map((c): Compare => ({ key: c.key, modRevision: 0 }));
      const ops = chunk.map((c): Op => ({ type: "put", key: c.key, value: c.value }));
      if (await commitChunk(ctx, compares, ops, chunk.map((c) => c.obj))) {
        for (const c of chunk) {
          ctx.versions.storedAs(c.obj, c.value);
          results[c.index] = { object: c.obj as T };
        }
        break;
      }
      // Some exist already: they are refused, the others go again without them.
      const present = await Promise.all(chunk.map((c) => store.get(c.key)));
      const rest: StagedCreate[] = [];
      chunk.forEach((c, j) => {
        if (present[j] || attempt >= MAX_RETRIES) {
          const kind = kindOf(c.obj);
          results[c.index] = { error: present[j] ? alreadyExists(kind, c.obj.metadata!.name) : gaveUp(kind, c.obj.metadata!.name) };
        } else {
          rest.push(c);
        }
      });
      chunk = rest;
    }
  }
  return results;
}

function alreadyExists(kind: Kind, name: string): ConnectError {
  return new ConnectError(`${describe(kind, name)} already exists`, Code.AlreadyExists);
}

/** Removes a Container marked for deletion once its host reports it stopped; see ResourceStore.finalize. */
async function finalizeContainer(store: Store, name: string): Promise<void> {
  const key = objectKey("Container", name);
  for (let attempt = 0; ; attempt++) {
    const kv = await store.get(key);
    if (!kv) return;
    // Only a marked container goes: a finalize racing a re-created container must not remove it.
    if (!decode("Container", kv).metadata!.deletionTimestamp) return;
    const r = await store.txn([{ key, modRevision: kv.modRevision }], [{ type: "delete", key }]);
    if (r.succeeded) return;
    if (attempt >= MAX_RETRIES) throw gaveUp("Container", name);
  }
}

/**
 * Removes the marked Containers of one chunk in one transaction guarded by the revisions read
 * (an unmarked or missing one is left alone, as finalize does): no error for each name, or
 * undefined when one changed meanwhile (nothing was removed).
 */
async function finalizeChunk(ctx: Layer, names: readonly string[]): Promise<undefined[] | undefined> {
  const keys = names.map((n) => objectKey("Container", n));
  const kvs = await Promise.all(keys.map((k) => ctx.store.get(k)));
  await ctx.pace();
  const compares: Compare[] = [];
  const ops: Op[] = [];
  const seen = new Set<string>();
  kvs.forEach((kv, i) => {
    const key = keys[i]!;
    // The marked version was usually held when it was written (no decode then).
    if (!kv || seen.has(key) || !(ctx.versions.get(key, kv.modRevision) ?? decode("Container", kv)).metadata!.deletionTimestamp) return;
    seen.add(key);
    compares.push({ key, modRevision: kv.modRevision });
    ops.push({ type: "delete", key });
  });
  return (await commitChunk(ctx, compares, ops, [])) ? names.map(() => undefined) : undefined;
}

/** Finalizes Containers MAX_BATCH_WRITES to a transaction; see ResourceStore.finalizeAll. */
function finalizeContainers(ctx: Layer, names: readonly string[]): Promise<(ConnectError | undefined)[]> {
  return inChunks<string, ConnectError | undefined>(
    names,
    (chunk) => finalizeChunk(ctx, chunk),
    (n) => finalizeContainer(ctx.store, n).then(() => undefined, (err: unknown) => ConnectError.from(err)),
  );
}

/** Events of versions held already taken in per turn of the event loop (see createEventDecoder). */
const LOOKUPS_PER_TURN = 32;

/**
 * Makes the decoding of watch batches: a revision's store events turned into the object events
 * a filter selects, yielding between decodes.
 *
 * Every watcher (each controller, the messaging plane, API watches) sees the same events; a
 * version of an object is decoded once and shared by all of them, read-only. The decodes hang
 * off the store's event objects, so they live exactly as long as some watcher still holds
 * the batch: no cache to bound, nothing left behind.
 */
function createEventDecoder(
  pace: () => Promise<void>,
  versions: HeldVersions,
): (batch: readonly StoreEvent[], kind: Kind | undefined, filter: ListOptions) => Promise<ObjectEvent[]> {
  const decodedKv = new WeakMap<KeyValue, AnyObject>();
  const decodedDelete = new WeakMap<StoreEvent, AnyObject>();
  const decodeShared = (kind: Kind, kv: KeyValue): AnyObject => {
    let obj = decodedKv.get(kv);
    if (!obj) {
      obj = versions.get(kv.key, kv.modRevision);
      if (!obj) {
        obj = decode(kind, kv);
        versions.hold(kv.key, obj);
      }
      versions.storedAs(obj, kv.value);
      versions.delivered(kv.key, kv.modRevision);
      decodedKv.set(kv, obj);
    }
    return obj;
  };
  const decodeDeleted = (e: StoreEvent & { prevKv: KeyValue }, previous: AnyObject): AnyObject => {
    let obj = decodedDelete.get(e);
    if (!obj) {
      // The last version as it was, under the revision of its deletion (shared parts, read-only).
      obj = { ...previous, metadata: { ...previous.metadata!, resourceVersion: String(e.kv.modRevision) } } as AnyObject;
      decodedDelete.set(e, obj);
      versions.forget(e.kv.key);
    }
    return obj;
  };

  /** Whether a version is decoded or held already: taking it in is a lookup, not a decode. */
  const ready = (kv: KeyValue | undefined): boolean => !kv || decodedKv.has(kv) || versions.get(kv.key, kv.modRevision) !== undefined;

  return async (batch, kind, filter) => {
    const out: ObjectEvent[] = [];
    let lookups = 0;
    for (const e of batch) {
      const k = kindOfKey(e.kv.key);
      if (!k || (kind && k !== kind)) continue;
      // The name is in the key and never changes: no need to decode what the glob rules out.
      if (filter.nameGlob && !matchesGlob(nameOfKey(e.kv.key), filter.nameGlob)) continue;
      // A turn before each event that decodes; events of versions held already (most of a
      // scale-up's: written by this process, or decoded for another watcher) are lookups,
      // a turn for LOOKUPS_PER_TURN of them.
      if (!ready(e.prevKv) || (e.type !== "delete" && !ready(e.kv)) || ++lookups >= LOOKUPS_PER_TURN) {
        lookups = 0;
        await pace();
      }
      const revision = e.kv.modRevision;
      if (e.type === "delete") {
        if (!e.prevKv) continue;
        const previous = decodeShared(k, e.prevKv);
        if (!matchesSelector(previous, filter)) continue;
        const object = decodeDeleted(e as StoreEvent & { prevKv: KeyValue }, previous);
        out.push({ type: "DELETED", object, previous, revision, size: e.prevKv.value.byteLength, value: e.prevKv.value });
        continue;
      }
      // The previous version first: held with this one (see held-versions.ts), or decoded now.
      const previous = e.prevKv ? decodeShared(k, e.prevKv) : undefined;
      const object = decodeShared(k, e.kv);
      const now = matchesSelector(object, filter);
      const before = previous !== undefined && matchesSelector(previous, filter);
      const value = e.kv.value;
      const size = value.byteLength;
      // As Kubernetes does for label selectors: an object that starts matching is ADDED, one
      // that stops matching is DELETED.
      if (now && before) out.push({ type: "MODIFIED", object, previous, revision, size, value });
      else if (now) out.push({ type: "ADDED", object, previous, revision, size, value });
      else if (before) out.push({ type: "DELETED", object, previous, revision, size, value });
    }
    return out;
  };
}

/**
 * Creates the typed object layer over a key-value store. It keeps no state of its own beyond
 * the store, so several may share one store (the server has one per priority).
 */
export function createResourceStore(store: Store, options: ResourceStoreOptions = {}): ResourceStore {
  const priority = options.priority ?? "background";
  const pace = () => yieldToLoop(priority);
  const layer: Layer = { store, pace, versions: heldVersionsOf(store) };
  const toObjectEvents = createEventDecoder(pace, layer.versions);

  async function* watch(options: WatchOptions, signal: AbortSignal): AsyncGenerator<ObjectBatch> {
    const ended = layer.versions.watchStarted();
    try {
      yield* watchFrom(options, signal);
    } finally {
      ended();
    }
  }

  async function* watchFrom(options: WatchOptions, signal: AbortSignal): AsyncGenerator<ObjectBatch> {
    const filter: ListOptions = { nameGlob: options.nameGlob, labels: options.labels, labelSelector: options.labelSelector };
    let from = options.fromRevision;
    if (from === undefined) {
      const snap = await listPage(layer, options.kind, filter);
      from = snap.revision;
      const events = snap.items.map(
        (object, i): ObjectEvent => ({
          type: "ADDED",
          object,
          previous: undefined,
          revision: Number(object.metadata!.resourceVersion),
          size: snap.values[i]!.byteLength,
          value: snap.values[i],
        }),
      );
      yield { revision: snap.revision, events, listing: true };
    } else {
      const head = await store.revision();
      if (from > head) throw futureRevisionError(from, head);
    }
    // The whole prefix, not the kind's: every write under it (including the etcd compactor's
    for await (const batch of store.watch(KEY_PREFIX, from, signal)) {
      const events = await toObjectEvents(batch.events, options.kind, filter);
      yield { revision: batch.revision, events };
    }
  }

  const resources: ResourceStore = {
    store,

    async get<K extends Kind>(kind: K, name: string) {
      return (await readObject(layer, kind, name))?.obj as ObjectOf<K> | undefined;
    },

    async getShared<K extends Kind>(kind: K, name: string) {
      return (await readShared(layer, kind, name))?.obj as ObjectOf<K> | undefined;
    },

    async list<K extends Kind>(kind: K, options: PageOptions = {}) {
      const { values: _, ...page } = await listPage(layer, kind, options);
      return page as ListResult<K>;
    },

    async create<T extends AnyObject>(input: T): Promise<T> {
      // A storm of writes (a scale-up, a host coming back) takes turns with other work.
      await pace();
      const kind = kindOf(input);
      assertValid(input);
      const obj = stampNew(kind, input);
      const name = obj.metadata!.name;
      const key = objectKey(kind, name);
      const r = await store.txn([{ key, modRevision: 0 }], [{ type: "put", key, value: encode(obj) }]);
      if (!r.succeeded) throw alreadyExists(kind, name);
      obj.metadata!.resourceVersion = String(r.revision);
      return obj as T;
    },

    update: (input) => updateObject(layer, input),

    updateStatus: (kind, name, mutate) => updateStatusOf(layer, kind, name, mutate),

    updateStatuses: (kind, updates) => updateStatuses(layer, kind, updates),

    createAll: (objects) => createObjects(layer, objects),

    delete: (kind, name, options) => deleteObject(layer, kind, name, options),

    deleteAll: (kind, targets) => deleteObjects(layer, kind, targets),
    finalize: (name) => finalizeContainer(store, name),
    finalizeAll: (names) => finalizeContainers(layer, names),

    apply: (objects, options) => applyObjects(layer, objects, options),

    watch,

    revision() {
      return store.revision();
    },
  };
  return resources;
}
