/**
 * The ResourceService handlers: the API over the ResourceStore, with manifest parsing and
 * validation for Apply.
 */
import { clone, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ApplyResultSchema,
  WatchEventSchema,
  type ApplyRequest,
  WatchResponseSchema,
  type ResourceService,
  type WatchResponse,
} from "../../gen/k4s/v1/resource_service_pb.js";
import { ReplicaSetSchema } from "../../gen/k4s/v1/resources_pb.js";
import { kindOf, parseKind, unwrap, wrap, type AnyObject, type Kind } from "../../api/kinds.js";
import { parseManifestDocuments } from "../../api/manifest.js";
import { validateName } from "../../api/names.js";
import { validateGlob } from "../../api/selector.js";
import { parseLabelSelector } from "../../api/label-selector.js";
import { assertValid, formatIssues, MAX_REPLICAS, validateObject } from "../../api/validate.js";
import { badField, badRequest, violationsOf, type FieldViolation } from "../../api/bad-request.js";
import { eitherForm, type CallContext, type ServiceHandlers } from "../grpc-adapter.js";
import type { ListOptions, ObjectBatch, ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { MAX_APPLY_OBJECTS } from "../store/create-resource-store.js";
import { encodeWatchResponse } from "./watch-response-bytes.js";

/** Retries of Scale's read-modify-write when the ReplicaSet changes in between. */
const SCALE_RETRIES = 20;

/** The page size of a List that sets no limit (what Kubernetes clients ask for by default). */
export const DEFAULT_LIST_LIMIT = 500;

/**
 * Bytes of stored objects after which a List page or a Watch response ends (it holds at least
 * one object): every response stays under a client's default 4 MiB receive limit.
 */
export const RESPONSE_OBJECT_BYTES = 2 * 1024 * 1024;

/** How often a watch whose revision moved without selected changes gets a BOOKMARK (ms). */
export const DEFAULT_BOOKMARK_INTERVAL_MS = 5000;

/** ResourceServiceDeps are what the ResourceService handlers work with. */
export interface ResourceServiceDeps {
  resources: ResourceStore;
  /** Interval of watch bookmarks (default DEFAULT_BOOKMARK_INTERVAL_MS). */
  bookmarkIntervalMs?: number;
}

const TICK = Symbol("tick");

/**
 * Interleaves a source with a tick every `everyMs` (restarted after each tick). The source is
 * read one item ahead; it must end when `signal` aborts.
 */
async function* withTicks<T>(source: AsyncIterable<T>, everyMs: number): AsyncGenerator<T | typeof TICK> {
  const it = source[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => new Promise<typeof TICK>((resolve) => (timer = setTimeout(() => resolve(TICK), everyMs)));
  let nextTick = tick();
  // The item read ahead may fail while the consumer is busy with the previous one (a watch that
  // fell behind the kept history, while its stream waits for the client to read): marked
  // handled, so that it fails the stream when awaited instead of the process at once.
  const readAhead = () => {
    const p = it.next();
    p.catch(() => {});
    return p;
  };
  let next = readAhead();
  try {
    for (;;) {
      const r = await Promise.race([next, nextTick]);
      if (r === TICK) {
        nextTick = tick();
        yield TICK;
        continue;
      }
      if (r.done) return;
      next = readAhead();
      yield r.value;
    }
  } finally {
    clearTimeout(timer);
    // The read-ahead settles once the source ends; nobody waits for it any more.
    next.catch(() => {});
  }
}

/**
 * Cuts a revision's (or the listing's) events into responses of at most about
 * RESPONSE_OBJECT_BYTES; only the last carries `resourceVersion` (empty for the listing).
 */
function* responsesOf(events: readonly ObjectEvent[], resourceVersion: string): Generator<WatchResponse> {
  let piece: ObjectEvent[] = [];
  let bytes = 0;
  const flush = (last: boolean) => {
    const rv = last ? resourceVersion : "";
    const events = piece;
    // On the gRPC port the objects' stored bytes go as they are (see watch-response-bytes.ts),
    // not encoded again; the message is made for the Connect port, or when bytes are missing.
    return eitherForm(
      () =>
        create(WatchResponseSchema, {
          events: events.map((e) => create(WatchEventSchema, { type: e.type, object: wrap(e.object) })),
          resourceVersion: rv,
        }),
      () => encodeWatchResponse(events, rv),
    );
  };
  for (const e of events) {
    const size = e.size ?? 1024;
    if (piece.length > 0 && bytes + size > RESPONSE_OBJECT_BYTES) {
      yield flush(false);
      piece = [];
      bytes = 0;
    }
    piece.push(e);
    bytes += size;
  }
  if (piece.length > 0 || resourceVersion !== "") yield flush(true);
}

function requireName(name: string, what = "name"): string {
  if (name === "") throw badField(what, "required", `${what} is required`);
  const reason = validateName(name);
  if (reason) throw badField(what, reason);
  return name;
}

function checkGlob(glob: string): string | undefined {
  if (glob === "") return undefined;
  const reason = validateGlob(glob);
  if (reason) throw badField("nameGlob", reason);
  return glob;
}

/** The object filter of a List or Watch request: name glob, labels and label selector, checked. */
function listFilter(req: { nameGlob: string; labels: Record<string, string>; labelSelector: string }): ListOptions {
  const filter: ListOptions = { nameGlob: checkGlob(req.nameGlob), labels: req.labels };
  if (req.labelSelector.trim() !== "") filter.labelSelector = parseLabelSelector(req.labelSelector);
  return filter;
}

function parseRevision(rv: string, field: string): number {
  if (!/^\d{1,15}$/.test(rv)) {
    throw badField(field, `"${rv}" is not a resource version (a non-negative integer from a listing or an object)`);
  }
  return Number(rv);
}

/** The request path of a typed object: the `Object` field, then the kind it holds ("object.container"). */
function objectPath(field: string, obj: { kind: { case?: string } } | undefined): string {
  return obj?.kind.case ? `${field}.${obj.kind.case}` : field;
}

function notFound(kind: Kind, name: string): ConnectError {
  return new ConnectError(`${kind} "${name}" not found`, Code.NotFound);
}

/**
 * The objects of an Apply request (the manifest's documents, then the typed objects), each with
 * the label its errors name it by; INVALID_ARGUMENT naming every typed object that does not
 * validate, or when there is nothing to apply.
 */
function applyInput(req: ApplyRequest): { objects: AnyObject[]; labels: string[] } {
  if (req.objects.length > MAX_APPLY_OBJECTS) {
    throw badField("objects", `${req.objects.length} typed objects, more than the ${MAX_APPLY_OBJECTS} one apply may hold`, `apply of ${req.objects.length} typed objects: more than the ${MAX_APPLY_OBJECTS} one apply may hold; split it into several applies`);
  }
  const objects: AnyObject[] = [];
  const labels: string[] = [];
  const label = (where: string, obj: AnyObject) => `${where} (${kindOf(obj)}${obj.metadata?.name ? ` "${obj.metadata.name}"` : ""})`;
  if (req.manifest.trim() !== "") {
    for (const d of parseManifestDocuments(req.manifest)) {
      objects.push(d.object);
      labels.push(label(`document ${d.index}`, d.object));
    }
  }
  const errors: string[] = [];
  const violations: FieldViolation[] = [];
  req.objects.forEach((o, i) => {
    const obj = unwrap(o, `objects[${i}]`);
    const issues = validateObject(obj);
    if (issues.length > 0) {
      errors.push(`${label(`objects[${i}]`, obj)}: ${formatIssues(issues)}`);
      violations.push(...violationsOf(issues, objectPath(`objects[${i}]`, o)));
    }
    objects.push(obj);
    labels.push(label(`objects[${i}]`, obj));
  });
  if (errors.length > 0) throw badRequest(errors.join("; "), violations);
  if (objects.length === 0) {
    throw badField("manifest", "no objects, and no typed objects were given", "nothing to apply: the manifest has no objects and no typed objects were given");
  }
  return { objects, labels };
}

/** Creates the ResourceService implementation. */
export function createResourceService(deps: ResourceServiceDeps): ServiceHandlers<typeof ResourceService> {
  const { resources } = deps;
  const bookmarkIntervalMs = deps.bookmarkIntervalMs ?? DEFAULT_BOOKMARK_INTERVAL_MS;

  return {
    async apply(req) {
      const { objects, labels } = applyInput(req);
      const outcomes = await resources.apply(objects, { dryRun: req.dryRun, labels });
      return {
        results: outcomes.map((o) =>
          create(ApplyResultSchema, {
            kind: kindOf(o.object),
            name: o.object.metadata?.name ?? "",
            action: o.action,
            object: wrap(o.object),
          }),
        ),
      };
    },

    async create(req) {
      const obj = unwrap(req.object);
      assertValid(obj, objectPath("object", req.object));
      return { object: wrap(await resources.create(obj)) };
    },

    async get(req) {
      const kind = parseKind(req.kind);
      const name = requireName(req.name);
      const obj = await resources.get(kind, name);
      if (!obj) throw notFound(kind, name);
      return { object: wrap(obj) };
    },

    async list(req) {
      const kind = parseKind(req.kind);
      if (req.limit < 0) throw badField("limit", `must be 0 (the server's default page of ${DEFAULT_LIST_LIMIT}) or more, got ${req.limit}`);
      const r = await resources.list(kind, {
        ...listFilter(req),
        limit: req.limit || DEFAULT_LIST_LIMIT,
        maxBytes: RESPONSE_OBJECT_BYTES,
        continueToken: req.continueToken || undefined,
      });
      return {
        items: r.items.map(wrap),
        resourceVersion: String(r.revision),
        continueToken: r.continueToken ?? "",
        remainingItemCount: BigInt(r.remainingItemCount ?? 0),
      };
    },

    async update(req) {
      const obj = unwrap(req.object);
      assertValid(obj, objectPath("object", req.object));
      return { object: wrap(await resources.update(obj)) };
    },

    async scale(req) {
      const name = requireName(req.name);
      if (!Number.isInteger(req.replicas) || req.replicas < 0 || req.replicas > MAX_REPLICAS) {
        throw badField("replicas", `must be between 0 and ${MAX_REPLICAS}, got ${req.replicas}`);
      }
      for (let attempt = 0; ; attempt++) {
        const current = await resources.get("ReplicaSet", name);
        if (!current) throw notFound("ReplicaSet", name);
        const next = clone(ReplicaSetSchema, current);
        next.spec!.replicas = req.replicas;
        try {
          // Conditional on the version read, so a concurrent spec change is never overwritten.
          return { replicaSet: await resources.update(next) };
        } catch (e) {
          const err = ConnectError.from(e);
          if (err.code !== Code.Aborted || attempt >= SCALE_RETRIES) throw err;
        }
      }
    },

    async delete(req) {
      const kind = parseKind(req.kind);
      const name = requireName(req.name);
      const obj = await resources.delete(kind, name, req.resourceVersion ? { resourceVersion: req.resourceVersion } : {});
      return { object: wrap(obj) };
    },

    async *watch(req, ctx: CallContext) {
      const kind = req.kind.trim() === "" ? undefined : parseKind(req.kind);
      const filter = listFilter(req);
      const fromRevision = req.resourceVersion === "" ? undefined : parseRevision(req.resourceVersion, "resourceVersion");
      // Ends the store watch also when this stream ends for another reason than a cancel.
      const done = new AbortController();
      const signal = AbortSignal.any([ctx.signal, done.signal]);
      const batches: AsyncIterable<ObjectBatch> = resources.watch({ kind, ...filter, fromRevision }, signal);
      // `sent`: the last resume point the client has; `reached`: how far the store watch is.
      let sent = fromRevision ?? -1;
      let reached = sent;
      try {
        for await (const item of withTicks(batches, bookmarkIntervalMs)) {
          if (item === TICK) {
            if (reached > sent) {
              yield create(WatchResponseSchema, { resourceVersion: String(reached) });
              sent = reached;
            }
            continue;
          }
          reached = item.revision;
          if (item.listing) {
            yield* responsesOf(item.events, "");
            yield create(WatchResponseSchema, { resourceVersion: String(reached) });
            sent = reached;
          } else if (item.events.length > 0) {
            yield* responsesOf(item.events, String(reached));
            sent = reached;
          }
        }
      } finally {
        done.abort();
      }
    },
  };
}
