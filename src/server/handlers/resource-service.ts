/**
 * The ResourceService handlers: the API over the ResourceStore, with manifest parsing and
 * validation for Apply.
 */
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ApplyResultSchema,
  WatchResponseSchema,
  type ResourceService,
} from "../../gen/k4s/v1/resource_service_pb.js";
import { ReplicaSetSchema } from "../../gen/k4s/v1/resources_pb.js";
import { kindOf, parseKind, unwrap, wrap, type AnyObject, type Kind } from "../../api/kinds.js";
import { parseManifestDocuments } from "../../api/manifest.js";
import { validateName } from "../../api/names.js";
import { validateGlob } from "../../api/selector.js";
import { parseLabelSelector } from "../../api/label-selector.js";
import { assertValid, formatIssues, MAX_REPLICAS, validateObject } from "../../api/validate.js";
import { badField, badRequest, violationsOf, type FieldViolation } from "../../api/bad-request.js";
import type { CallContext, ServiceHandlers } from "../grpc-adapter.js";
import type { ListOptions, ObjectEvent, ResourceStore } from "../store/resource-store.js";

/** Retries of Scale's read-modify-write when the ReplicaSet changes in between. */
const SCALE_RETRIES = 20;

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

/** Creates the ResourceService implementation. */
export function createResourceService(deps: { resources: ResourceStore }): ServiceHandlers<typeof ResourceService> {
  const { resources } = deps;

  const snapshot = async (kind: Kind | undefined, filter: ListOptions) => {
    if (resources.listAll) return resources.listAll({ kind, ...filter });
    if (!kind) throw new ConnectError("watching every kind needs a ResourceStore with listAll", Code.Unimplemented);
    return resources.list(kind, filter);
  };

  return {
    async apply(req) {
      const objects: AnyObject[] = [];
      if (req.manifest.trim() !== "") objects.push(...parseManifestDocuments(req.manifest).map((d) => d.object));
      const errors: string[] = [];
      const violations: FieldViolation[] = [];
      req.objects.forEach((o, i) => {
        const obj = unwrap(o, `objects[${i}]`);
        const issues = validateObject(obj);
        if (issues.length > 0) {
          const name = obj.metadata?.name;
          errors.push(`objects[${i}] (${kindOf(obj)}${name ? ` "${name}"` : ""}): ${formatIssues(issues)}`);
          violations.push(...violationsOf(issues, objectPath(`objects[${i}]`, o)));
        }
        objects.push(obj);
      });
      if (errors.length > 0) throw badRequest(errors.join("; "), violations);
      if (objects.length === 0) {
        throw badField("manifest", "no objects, and no typed objects were given", "nothing to apply: the manifest has no objects and no typed objects were given");
      }
      const outcomes = await resources.apply(objects, { dryRun: req.dryRun });
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
      const r = await resources.list(kind, listFilter(req));
      const items = [...r.items].sort((a, b) => (a.metadata!.name < b.metadata!.name ? -1 : a.metadata!.name > b.metadata!.name ? 1 : 0));
      return { items: items.map(wrap), resourceVersion: String(r.revision) };
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
      let fromRevision: number;
      if (req.resourceVersion === "") {
        const snap = await snapshot(kind, filter);
        for (const obj of snap.items) {
          yield create(WatchResponseSchema, { type: "ADDED", object: wrap(obj), resourceVersion: obj.metadata?.resourceVersion ?? "" });
        }
        yield create(WatchResponseSchema, { type: "BOOKMARK", resourceVersion: String(snap.revision) });
        fromRevision = snap.revision;
      } else {
        fromRevision = parseRevision(req.resourceVersion, "resourceVersion");
      }
      const toResponse = (e: ObjectEvent): MessageInitShape<typeof WatchResponseSchema> => ({
        type: e.type,
        object: wrap(e.object),
        resourceVersion: String(e.revision),
      });
      for await (const batch of resources.watch({ kind, ...filter, fromRevision }, ctx.signal)) {
        for (const e of batch) yield toResponse(e);
      }
    },
  };
}
