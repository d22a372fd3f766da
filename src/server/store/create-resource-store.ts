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
import { API_VERSION, KINDS, kindInfo, kindOf, type AnyObject, type Kind, type ObjectOf } from "../../api/kinds.js";
import { matchesGlob, matchesSelector } from "../../api/selector.js";
import { sameStringMap } from "../../api/string-map.js";
import { assertValid, formatIssues, validateObject } from "../../api/validate.js";
import type { ApplyOutcome, ListOptions, ObjectEvent, ResourceStore, WatchOptions } from "./resource-store.js";
import type { Compare, KeyValue, Op, Store, StoreEvent } from "./store.js";

/** The key prefix of every object. */
export const KEY_PREFIX = "/k4s/";

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

function kindOfKey(key: string): Kind | undefined {
  if (!key.startsWith(KEY_PREFIX)) return undefined;
  const rest = key.slice(KEY_PREFIX.length);
  return KIND_BY_PLURAL.get(rest.slice(0, rest.indexOf("/")));
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

/** Decoded object versions kept for the watchers that have not seen them yet. */
const SHARED_DECODES = 4096;

/** Decodes a stored value into a fresh object whose resourceVersion is the key's modRevision. */
function decode(kind: Kind, kv: KeyValue, revision = kv.modRevision): AnyObject {
  const obj = fromBinary(schemaOf(kind), kv.value) as AnyObject;
  obj.metadata ??= create(ObjectMetaSchema);
  obj.metadata.resourceVersion = String(revision);
  return obj;
}

/** Encodes an object owned by this module; resourceVersion is derived from the key, never stored. */
function encode(obj: AnyObject): Uint8Array {
  const meta = obj.metadata!;
  const rv = meta.resourceVersion;
  meta.resourceVersion = "";
  try {
    return toBinary(schemaOf(kindOf(obj)), obj);
  } finally {
    meta.resourceVersion = rv;
  }
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

/**
 * Creates the typed object layer over a key-value store. It keeps no state of its own beyond
 * the store, so several may share one store.
 */
export function createResourceStore(store: Store): ResourceStore {
  // Every watcher (each controller, the messaging plane, API watches) sees the same events; a
  // version of an object is decoded once and shared by all of them, read-only.
  const shared = new Map<string, AnyObject>();
  const decodeShared = (kind: Kind, kv: KeyValue, revision = kv.modRevision): AnyObject => {
    const id = `${kv.key}\u0000${kv.modRevision}\u0000${revision}`;
    let obj = shared.get(id);
    if (!obj) {
      obj = decode(kind, kv, revision);
      if (shared.size >= SHARED_DECODES) shared.delete(shared.keys().next().value!);
      shared.set(id, obj);
    }
    return obj;
  };
  const read = async (kind: Kind, name: string) => {
    const kv = await store.get(objectKey(kind, name));
    return kv ? { kv, obj: decode(kind, kv) } : undefined;
  };

  const listAll = async (options: ListOptions & { kind?: Kind } = {}) => {
    // Keys end in the name, so a glob's literal head narrows the range and a name that does not
    // match is skipped before its value is decoded (a ReplicaSet's reconcile lists `<rs>-*`).
    const glob = options.nameGlob;
    const head = options.kind && glob ? glob.slice(0, glob.search(/[*?[{!\\+@(]|$/)) : "";
    const r = await store.range(kindPrefix(options.kind) + head);
    const items: AnyObject[] = [];
    for (const kv of r.kvs) {
      const kind = kindOfKey(kv.key);
      if (!kind) continue;
      if (glob && !matchesGlob(kv.key.slice(kv.key.lastIndexOf("/") + 1), glob)) continue;
      const obj = decode(kind, kv);
      if (matchesSelector(obj, options)) items.push(obj);
    }
    return { items, revision: r.revision };
  };

  const toObjectEvents = (batch: StoreEvent[], filter: ListOptions): ObjectEvent[] => {
    const out: ObjectEvent[] = [];
    for (const e of batch) {
      const kind = kindOfKey(e.kv.key);
      if (!kind) continue;
      // The name is in the key and never changes: no need to decode what the glob rules out.
      if (filter.nameGlob && !matchesGlob(e.kv.key.slice(e.kv.key.lastIndexOf("/") + 1), filter.nameGlob)) continue;
      const revision = e.kv.modRevision;
      if (e.type === "delete") {
        if (!e.prevKv) continue;
        const previous = decodeShared(kind, e.prevKv);
        if (!matchesSelector(previous, filter)) continue;
        out.push({ type: "DELETED", object: decodeShared(kind, e.prevKv, revision), previous, revision });
        continue;
      }
      const object = decodeShared(kind, e.kv);
      const now = matchesSelector(object, filter);
      const previous = e.prevKv ? decodeShared(kind, e.prevKv) : undefined;
      const before = previous !== undefined && matchesSelector(previous, filter);
      // As Kubernetes does for label selectors: an object that starts matching is ADDED, one
      // that stops matching is DELETED.
      if (now && before) out.push({ type: "MODIFIED", object, previous, revision });
      else if (now) out.push({ type: "ADDED", object, previous, revision });
      else if (before) out.push({ type: "DELETED", object, previous, revision });
    }
    return out;
  };

  async function* watch(options: WatchOptions, signal: AbortSignal): AsyncGenerator<ObjectEvent[]> {
    const filter: ListOptions = { nameGlob: options.nameGlob, labels: options.labels, labelSelector: options.labelSelector };
    let from = options.fromRevision;
    if (from === undefined) {
      const snap = await listAll({ ...filter, kind: options.kind });
      from = snap.revision;
      yield snap.items.map((object) => ({ type: "ADDED" as const, object, previous: undefined, revision: snap.revision }));
    }
    for await (const batch of store.watch(kindPrefix(options.kind), from, signal)) {
      const events = toObjectEvents(batch, filter);
      if (events.length > 0) yield events;
    }
  }

  const resources: ResourceStore = {
    store,

    async get<K extends Kind>(kind: K, name: string) {
      return (await read(kind, name))?.obj as ObjectOf<K> | undefined;
    },

    async list<K extends Kind>(kind: K, options: ListOptions = {}) {
      const r = await listAll({ ...options, kind });
      return { items: r.items as ObjectOf<K>[], revision: r.revision };
    },

    listAll,

    async create<T extends AnyObject>(input: T): Promise<T> {
      const kind = kindOf(input);
      assertValid(input);
      const obj = stampNew(kind, input);
      const name = obj.metadata!.name;
      const key = objectKey(kind, name);
      const r = await store.txn([{ key, modRevision: 0 }], [{ type: "put", key, value: encode(obj) }]);
      if (!r.succeeded) throw new ConnectError(`${describe(kind, name)} already exists`, Code.AlreadyExists);
      obj.metadata!.resourceVersion = String(r.revision);
      return obj as T;
    },

    async update<T extends AnyObject>(input: T): Promise<T> {
      const kind = kindOf(input);
      assertValid(input);
      const name = input.metadata!.name;
      const key = objectKey(kind, name);
      const precondition = input.metadata!.resourceVersion;
      for (let attempt = 0; ; attempt++) {
        const cur = await read(kind, name);
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
    },

    async updateStatus<K extends Kind>(kind: K, name: string, mutate: (current: ObjectOf<K>) => ObjectOf<K>["status"] | undefined) {
      const key = objectKey(kind, name);
      const statusSchema = STATUS.get(kind)!;
      for (let attempt = 0; ; attempt++) {
        const cur = await read(kind, name);
        if (!cur) return undefined;
        const status = mutate(copy(cur.obj) as ObjectOf<K>);
        if (status === undefined || sameMessage(statusSchema, cur.obj.status, status)) return cur.obj as ObjectOf<K>;
        const next = copy(cur.obj);
        next.status = clone(statusSchema, status as never) as never;
        const r = await store.txn([{ key, modRevision: cur.kv.modRevision }], [{ type: "put", key, value: encode(next) }]);
        if (r.succeeded) {
          next.metadata!.resourceVersion = String(r.revision);
          return next as ObjectOf<K>;
        }
        if (attempt >= MAX_RETRIES) throw gaveUp(kind, name);
      }
    },

    async delete(kind, name, options = {}) {
      const key = objectKey(kind, name);
      const precondition = options.resourceVersion;
      for (let attempt = 0; ; attempt++) {
        const cur = await read(kind, name);
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
    },

    async finalize(name) {
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
    },

    async apply(objects, options = {}) {
      const inputs = objects.map((o) => copy(o));
      const errors: string[] = [];
      const seen = new Map<string, number>();
      inputs.forEach((obj, i) => {
        const kind = kindOf(obj);
        const name = obj.metadata?.name ?? "";
        const label = `object ${i + 1} (${kind}${name ? ` "${name}"` : ""})`;
        const issues = validateObject(obj);
        if (issues.length > 0) errors.push(`${label}: ${formatIssues(issues)}`);
        const key = objectKey(kind, name);
        const first = seen.get(key);
        if (first !== undefined) errors.push(`${label}: duplicate of object ${first + 1}`);
        else seen.set(key, i);
      });
      if (errors.length > 0) throw new ConnectError(errors.join("; "), Code.InvalidArgument);

      for (let attempt = 0; ; attempt++) {
        const compares: Compare[] = [];
        const writes: { order: number; op: Op }[] = [];
        const outcomes: ApplyOutcome[] = [];
        for (const input of inputs) {
          const kind = kindOf(input);
          const name = input.metadata!.name;
          const key = objectKey(kind, name);
          const cur = await read(kind, name);
          compares.push({ key, modRevision: cur?.kv.modRevision ?? 0 });
          if (!cur) {
            const obj = stampNew(kind, input);
            outcomes.push({ action: "created", object: obj });
            writes.push({ order: KINDS.indexOf(kind), op: { type: "put", key, value: encode(obj) } });
            continue;
          }
          const { next, changed } = merge(kind, cur.obj, input, input.metadata!.ownerReference !== undefined);
          if (!changed) {
            outcomes.push({ action: "unchanged", object: cur.obj });
            continue;
          }
          outcomes.push({ action: "configured", object: next });
          writes.push({ order: KINDS.indexOf(kind), op: { type: "put", key, value: encode(next) } });
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
    },

    watch,

    revision() {
      return store.revision();
    },
  };
  return resources;
}
