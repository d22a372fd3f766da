/**
 * The ReplicaSet controller: keeps N owned replicas named <replicaset>-<ordinal>.
 *
 * A replica is a Container with an owner reference to its ReplicaSet (kind, name, uid), the
 * template's labels plus `k4s.io/replicaset: <name>`, and the template's spec. Scale-up fills
 * the lowest free ordinals and scale-down removes the highest, so names stay small and stable.
 * Replicas being deleted (deletionTimestamp set) do not count, but keep their names until gone.
 */
import { clone, create, equals } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ContainerSchema,
  ContainerSpecSchema,
  ObjectMetaSchema,
  OwnerReferenceSchema,
  ReplicaSetSpecSchema,
  ReplicaSetStatusSchema,
  type Container,
  type ContainerSpec,
  type ReplicaSet,
} from "../../gen/k4s/v1/resources_pb.js";
import type { EventRecorder } from "../events.js";
import type { ObjectEvent, ResourceStore } from "../resource-store.js";
import { createController, sameLabels, specOrIdentityChanged, type Controller, type ObjectCache, type ReconcileResult } from "./controller.js";

/** The label every replica carries, naming its ReplicaSet. */
export const REPLICASET_LABEL = "k4s.io/replicaset";

/** The most replicas created or deleted by one reconcile; the rest follow in the next one. */
const MAX_CHANGES_PER_RECONCILE = 256;

/** ReplicaSetControllerOptions are the controller's dependencies. */
export interface ReplicaSetControllerOptions {
  resources: ResourceStore;
  events: EventRecorder;
  /** Keys reconciled at once (default 2). */
  workers?: number;
  /** Told about failed reconciles (they are retried with back-off). */
  onError?: (message: string, err: unknown) => void;
  /** Told after every reconcile, for metrics. */
  onReconcile?: (result: { key: string; durationMs: number; error: unknown }) => void;
}

/** Creates the ReplicaSet controller. */
export function createReplicaSetController(options: ReplicaSetControllerOptions): Controller {
  const { resources, events } = options;
  return createController({
    name: "replicaset",
    resources,
    workers: options.workers,
    onError: options.onError,
    onReconcile: options.onReconcile,
    watches: [
      { kind: "ReplicaSet", keys: (e) => (specOrIdentityChanged(e, ReplicaSetSpecSchema) ? [e.object.metadata?.name ?? ""] : []) },
      { kind: "Container", keys: containerKeys },
    ],
    reconcile: (name) => reconcileReplicaSet(resources, events, name),
  });
}

/** The ReplicaSets a Container event concerns: its owner (before and after) and template users. */
function containerKeys(event: ObjectEvent, cache: ObjectCache): string[] {
  const keys = new Set<string>();
  for (const obj of [event.object, event.previous]) {
    const owner = obj?.metadata?.ownerReference;
    if (owner?.kind === "ReplicaSet" && owner.name) keys.add(owner.name);
  }
  // A template container matters only through its existence, labels and spec.
  const current = event.object as Container;
  const previous = event.previous as Container | undefined;
  const templateChanged =
    event.type !== "MODIFIED" ||
    !previous ||
    !sameSpec(previous.spec, current.spec) ||
    !sameLabels(previous.metadata?.labels, current.metadata?.labels);
  if (templateChanged) {
    const name = current.metadata?.name;
    for (const rs of cache.list("ReplicaSet")) {
      if (rs.spec?.container && rs.spec.container === name && !hasInlineTemplate(rs)) keys.add(rs.metadata!.name);
    }
  }
  return [...keys];
}

/** The template a ReplicaSet stamps its replicas from, or why there is none. */
interface Template {
  spec: ContainerSpec;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

function hasInlineTemplate(rs: ReplicaSet): boolean {
  return rs.spec?.template?.spec !== undefined;
}

async function resolveTemplate(resources: ResourceStore, rs: ReplicaSet): Promise<Template | string> {
  const spec = rs.spec;
  if (spec?.template?.spec) {
    return {
      spec: spec.template.spec,
      labels: { ...spec.template.metadata?.labels },
      annotations: { ...spec.template.metadata?.annotations },
    };
  }
  if (!spec?.container) return "spec.container or spec.template is required";
  const container = await resources.get("Container", spec.container);
  if (!container) return `template container "${spec.container}" not found`;
  return { spec: container.spec ?? create(ContainerSpecSchema), labels: { ...container.metadata?.labels }, annotations: {} };
}

/** Parses the ordinal of a replica name `<rs>-<n>`, or undefined when the name is not one. */
function ordinalOf(rsName: string, containerName: string): number | undefined {
  const prefix = `${rsName}-`;
  if (!containerName.startsWith(prefix)) return undefined;
  const rest = containerName.slice(prefix.length);
  return /^(0|[1-9][0-9]{0,8})$/.test(rest) ? Number(rest) : undefined;
}

async function reconcileReplicaSet(resources: ResourceStore, events: EventRecorder, name: string): Promise<ReconcileResult | void> {
  const rs = await resources.get("ReplicaSet", name);
  // Replicas are named <rs>-<n>, so this glob finds every container the ReplicaSet may own.
  const candidates = (await resources.list("Container", { nameGlob: `${name}-*` })).items;
  const ownedByName = (c: Container) => {
    const o = c.metadata?.ownerReference;
    return o?.kind === "ReplicaSet" && o.name === name;
  };

  // Orphans: replicas whose ReplicaSet (this uid) is gone. The store's cascade normally removes
  // them with their owner; this catches a ReplicaSet re-created under the same name, or an
  // owner reference written by hand.
  const orphans = candidates.filter((c) => ownedByName(c) && c.metadata!.ownerReference!.uid !== rs?.metadata?.uid);
  for (const c of orphans) {
    if (c.metadata?.deletionTimestamp) continue;
    await deleteContainer(resources, c.metadata!.name);
    events.record({ reason: "SuccessfulDelete", kind: "ReplicaSet", name, message: `Deleted orphaned container: ${c.metadata!.name}` });
  }
  if (!rs) return;

  const uid = rs.metadata!.uid;
  const owned = candidates.filter((c) => ownedByName(c) && c.metadata!.ownerReference!.uid === uid);
  const active = owned
    .filter((c) => !c.metadata?.deletionTimestamp)
    .sort((a, b) => (ordinalOf(name, a.metadata!.name) ?? 0) - (ordinalOf(name, b.metadata!.name) ?? 0));
  const taken = new Set(candidates.map((c) => c.metadata!.name));
  const desired = Math.max(0, rs.spec?.replicas ?? 1);
  const template = await resolveTemplate(resources, rs);
  const failed: string[] = [];
  let requeue = false;
  const before = active.length;
  const ready = new Set(active.filter((c) => c.status?.ready).map((c) => c.metadata!.name));
  const live = new Set(active.map((c) => c.metadata!.name));

  if (active.length < desired && typeof template !== "string") {
    const names: string[] = [];
    for (let ordinal = 0; names.length < Math.min(desired - active.length, MAX_CHANGES_PER_RECONCILE); ordinal++) {
      const replica = `${name}-${ordinal}`;
      if (!taken.has(replica)) names.push(replica);
    }
    if (desired - active.length > names.length) requeue = true;
    const results = await Promise.allSettled(names.map((replica) => resources.create(newReplica(rs, replica, template))));
    results.forEach((r, i) => {
      const replica = names[i]!;
      if (r.status === "fulfilled") {
        live.add(replica);
        events.record({ reason: "SuccessfulCreate", kind: "ReplicaSet", name, message: `Created container: ${replica}` });
        return;
      }
      const err = ConnectError.from(r.reason);
      // A name still held by a container on its way out: its deletion event brings us back.
      if (err.code === Code.AlreadyExists) {
        requeue = true;
        return;
      }
      failed.push(`creating ${replica}: ${err.rawMessage}`);
      events.record({ type: "Warning", reason: "FailedCreate", kind: "ReplicaSet", name, message: `Error creating: ${err.rawMessage}` });
    });
  } else if (active.length > desired) {
    const victims = active.slice(desired).reverse().slice(0, MAX_CHANGES_PER_RECONCILE);
    if (active.length - desired > victims.length) requeue = true;
    for (const c of victims) {
      const replica = c.metadata!.name;
      await deleteContainer(resources, replica);
      live.delete(replica);
      ready.delete(replica);
      events.record({ reason: "SuccessfulDelete", kind: "ReplicaSet", name, message: `Deleted container: ${replica}` });
    }
  }
  if (live.size !== before) {
    events.record({
      reason: "ScalingReplicaSet",
      kind: "ReplicaSet",
      name,
      message: `Scaled ${live.size > before ? "up" : "down"} replica set ${name} from ${before} to ${live.size}`,
    });
  }

  // Template changes reach running replicas by updating their spec; the messaging plane
  // restarts a container whose spec changed.
  if (typeof template !== "string") {
    for (const c of active) {
      if (!live.has(c.metadata!.name)) continue;
      const labels = replicaLabels(name, template);
      if (sameSpec(c.spec, template.spec) && sameLabels(c.metadata?.labels, labels)) continue;
      const next = clone(ContainerSchema, c);
      next.spec = clone(ContainerSpecSchema, template.spec);
      next.metadata!.labels = labels;
      try {
        await resources.update(next);
      } catch (err) {
        const e = ConnectError.from(err);
        // Changed or deleted meanwhile: the event that did it brings us back.
        if (e.code !== Code.Aborted && e.code !== Code.NotFound) throw err;
        requeue = true;
      }
    }
  }

  const message = [...(typeof template === "string" ? [template] : []), ...failed].join("; ");
  await resources.updateStatus("ReplicaSet", name, (current) => {
    if (current.metadata?.uid !== uid) return undefined;
    const status = create(ReplicaSetStatusSchema, {
      replicas: live.size,
      readyReplicas: [...live].filter((n) => ready.has(n)).length,
      observedGeneration: rs.metadata!.generation,
      message,
    });
    return current.status && equals(ReplicaSetStatusSchema, current.status, status) ? undefined : status;
  });
  // A missing template is not retried: its Container's events bring us back when it appears.
  if (failed.length > 0) throw new ConnectError(`replicaset ${name}: ${failed.join("; ")}`, Code.FailedPrecondition);
  return { requeue };
}

function replicaLabels(rsName: string, template: Template): Record<string, string> {
  return { ...template.labels, [REPLICASET_LABEL]: rsName };
}

function newReplica(rs: ReplicaSet, replica: string, template: Template): Container {
  return create(ContainerSchema, {
    metadata: create(ObjectMetaSchema, {
      name: replica,
      labels: replicaLabels(rs.metadata!.name, template),
      annotations: template.annotations,
      ownerReference: create(OwnerReferenceSchema, { kind: "ReplicaSet", name: rs.metadata!.name, uid: rs.metadata!.uid }),
    }),
    spec: clone(ContainerSpecSchema, template.spec),
  });
}

async function deleteContainer(resources: ResourceStore, name: string): Promise<void> {
  try {
    await resources.delete("Container", name);
  } catch (err) {
    if (ConnectError.from(err).code !== Code.NotFound) throw err;
  }
}

function sameSpec(a: ContainerSpec | undefined, b: ContainerSpec | undefined): boolean {
  return equals(ContainerSpecSchema, a ?? create(ContainerSpecSchema), b ?? create(ContainerSpecSchema));
}
