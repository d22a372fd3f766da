/**
 * The ReplicaSet controller: keeps N owned replicas named <replicaset>-<ordinal>.
 *
 * A replica is a Container with an owner reference to its ReplicaSet (kind, name, uid), the
 * template's labels plus `k4s.io/replicaset: <name>`, and the template's spec. Scale-up fills
 * the lowest free ordinals and scale-down removes the highest, so names stay small and stable.
 * Replicas being deleted (deletionTimestamp set) do not count, but keep their names until gone.
 * A rolling restart (the template's `k4s.io/restartedAt` annotation changed, see api/rollout.ts)
 * replaces out-of-date replicas one at a time: one spare from the current template, ready before
 * an old one is deleted, so the ready count never drops below the desired one.
 */
import { clone, create, equals, toBinary } from "@bufbuild/protobuf";
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
import { sameStringMap } from "../../api/string-map.js";
import { isUpToDate } from "../../api/rollout.js";
import type { EventRecorder } from "../event-recorder.js";
import { yieldToLoop } from "../yielder.js";
import { MAX_BATCH_WRITES } from "../store/store.js";
import type { ObjectEvent, ResourceStore } from "../store/resource-store.js";
import { createController, keysOnSpecChange, type Controller, type ObjectCache, type ReconcileResult, type StoredKindControllerOptions } from "./controller.js";

/** The label every replica carries, naming its ReplicaSet. */
export const REPLICASET_LABEL = "k4s.io/replicaset";

/**
 * The most replicas created or deleted by one reconcile; the rest follow in the next one. The
 * creates of one reconcile are one store transaction (one revision, one watch batch); a crash
 * between two reconciles leaves whole batches, which the next reconcile counts and completes.
 */
const MAX_CHANGES_PER_RECONCILE = MAX_BATCH_WRITES;

/** ReplicaSetControllerOptions are the controller's dependencies. */
export type ReplicaSetControllerOptions = StoredKindControllerOptions;

/** Creates the ReplicaSet controller. */
export function createReplicaSetController(options: ReplicaSetControllerOptions): Controller {
  const { resources, events } = options;
  const expectations: Expectations = new Map();
  const byPrefix = createPrefixIndex();
  return createController({
    ...options,
    name: "replicaset",
    watches: [
      { kind: "ReplicaSet", keys: keysOnSpecChange(ReplicaSetSpecSchema) },
      {
        kind: "Container",
        keys: (e, cache) => {
          byPrefix.observe(e);
          observe(expectations, e);
          return containerKeys(e, cache);
        },
      },
    ],
    reconcile: (name, _signal, cache) => reconcileReplicaSet(resources, events, name, cache, expectations, byPrefix),
  });
}

/**
 * Tells whether a change of a replica is one its ReplicaSet acts on: all but a change of status
 * that leaves it as ready as it was (a starting replica goes Pending, Starting, then Running:
 * only the last counts), so a scale-up of a thousand replicas reconciles the ReplicaSet, which
 * looks at all its replicas, once per ready batch rather than once per status written.
 */
export function concernsOwner(event: ObjectEvent): boolean {
  if (event.type !== "MODIFIED" || !event.previous) return true;
  const now = event.object as Container;
  const before = event.previous as Container;
  const m = now.metadata;
  const p = before.metadata;
  const o = m?.ownerReference;
  const q = p?.ownerReference;
  return (
    Boolean(now.status?.ready) !== Boolean(before.status?.ready) ||
    Boolean(m?.deletionTimestamp) !== Boolean(p?.deletionTimestamp) ||
    m?.uid !== p?.uid ||
    o?.kind !== q?.kind ||
    o?.name !== q?.name ||
    o?.uid !== q?.uid ||
    !sameSpec(now.spec, before.spec) ||
    !sameStringMap(m?.labels, p?.labels) ||
    !sameStringMap(m?.annotations, p?.annotations)
  );
}

/** The ReplicaSets a Container event concerns: its owner (before and after) and template users. */
function containerKeys(event: ObjectEvent, cache: ObjectCache): string[] {
  const keys = new Set<string>();
  if (concernsOwner(event)) {
    for (const obj of [event.object, event.previous]) {
      const owner = obj?.metadata?.ownerReference;
      if (owner?.kind === "ReplicaSet" && owner.name) keys.add(owner.name);
    }
  }
  // A template container matters only through its existence, labels and spec.
  const current = event.object as Container;
  const previous = event.previous as Container | undefined;
  const templateChanged =
    event.type !== "MODIFIED" ||
    !previous ||
    !sameSpec(previous.spec, current.spec) ||
    !sameStringMap(previous.metadata?.labels, current.metadata?.labels);
  if (templateChanged) {
    const name = current.metadata?.name;
    for (const rs of cache.list("ReplicaSet")) {
      if (rs.spec?.container && rs.spec.container === name && !hasInlineTemplate(rs)) keys.add(rs.metadata!.name);
    }
  }
  return [...keys];
}

/** The template a ReplicaSet stamps its replicas from. */
interface Template {
  spec: ContainerSpec;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

function hasInlineTemplate(rs: ReplicaSet): boolean {
  return rs.spec?.template?.spec !== undefined;
}

/** Reads a ReplicaSet's template (inline, or its template Container), or says why there is none. */
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
  const container = await resources.getShared("Container", spec.container);
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

/**
 * Replicas sorted by ordinal (a name without one counts as 0), each name parsed once: a
 * reconcile of a thousand replicas sorts them on every one of a scale-up's many reconciles.
 */
function byOrdinal(rsName: string, replicas: readonly Container[]): Container[] {
  return replicas
    .map((c) => ({ c, n: ordinalOf(rsName, c.metadata!.name) ?? 0 }))
    .sort((a, b) => a.n - b.n)
    .map((x) => x.c);
}

/**
 * Replicas a ReplicaSet created or deleted that its cache has not shown yet, by ReplicaSet
 * (Kubernetes' expectations): until the cache caught up, a reconcile would count from a stale
 * listing and create or delete the same replicas again.
 */
type Expectations = Map<string, { creates: Set<string>; deletes: Set<string>; until: number }>;

/** Marks the expectations an event meets: a create seen (even if deleted since), a delete seen. */
function observe(expectations: Expectations, e: ObjectEvent): void {
  const owner = (e.object.metadata?.ownerReference ?? e.previous?.metadata?.ownerReference)?.name;
  const expected = owner ? expectations.get(owner) : undefined;
  if (!expected) return;
  const n = e.object.metadata?.name ?? "";
  expected.creates.delete(n);
  if (e.type === "DELETED" || e.object.metadata?.deletionTimestamp) expected.deletes.delete(n);
}

/** How long unmet expectations hold a ReplicaSet back before it lists from the store instead. */
const EXPECTATIONS_TTL_MS = 5000;

/**
 * The cache's Containers by name prefix: a Container named `a-b-3` under `a` and `a-b`, the
 * ReplicaSets whose replicas its name could be. Built from the cache on first use and kept in
 * step with it by the Container events the controller is handed (after the cache took each in),
 * so a reconcile reads its ReplicaSet's candidates without scanning every Container.
 */
export interface PrefixIndex {
  observe(event: ObjectEvent): void;
  /** The cached Containers named `<prefix>-...`. */
  candidates(cache: ObjectCache, prefix: string): Container[];
}

export function createPrefixIndex(): PrefixIndex {
  let index: Map<string, Map<string, Container>> | undefined;
  const each = (name: string, f: (prefix: string) => void) => {
    for (let dash = name.indexOf("-"); dash >= 0; dash = name.indexOf("-", dash + 1)) f(name.slice(0, dash));
  };
  const add = (c: Container) => {
    const name = c.metadata?.name ?? "";
    each(name, (prefix) => {
      let m = index!.get(prefix);
      if (!m) index!.set(prefix, (m = new Map()));
      m.set(name, c);
    });
  };
  return {
    observe(event) {
      if (!index) return;
      if (event.type !== "DELETED") {
        add(event.object as Container);
        return;
      }
      const name = event.object.metadata?.name ?? "";
      each(name, (prefix) => {
        const m = index!.get(prefix);
        m?.delete(name);
        if (m?.size === 0) index!.delete(prefix);
      });
    },
    candidates(cache, prefix) {
      if (!index) {
        index = new Map();
        for (const c of cache.list("Container")) add(c);
      }
      // Only what the cache holds now: during a relist the cache changes before its events are
      // handed out, and a replica it no longer holds must not be counted (nor deleted in place
      // of a live one).
      const m = index.get(prefix);
      return m ? [...m.values()].filter((c) => cache.get("Container", c.metadata?.name ?? "") === c) : [];
    },
  };
}

/** The containers a ReplicaSet may own, from the cache; undefined while expectations are unmet. */
function listCandidates(cache: ObjectCache, byPrefix: PrefixIndex, name: string, expectations: Expectations): Container[] | undefined {
  const candidates = byPrefix.candidates(cache, name);
  const expected = expectations.get(name);
  if (!expected) return candidates;
  for (const n of expected.creates) if (cache.get("Container", n)) expected.creates.delete(n);
  for (const n of expected.deletes) {
    const c = cache.get("Container", n);
    if (!c || c.metadata?.deletionTimestamp) expected.deletes.delete(n);
  }
  if (expected.creates.size === 0 && expected.deletes.size === 0) {
    expectations.delete(name);
    return candidates;
  }
  return Date.now() < expected.until ? undefined : candidates;
}

async function reconcileReplicaSet(
  resources: ResourceStore,
  events: EventRecorder,
  name: string,
  cache: ObjectCache,
  expectations: Expectations,
  byPrefix: PrefixIndex,
): Promise<ReconcileResult | void> {
  // Read-only here (shared with watchers): a version held already is not decoded again.
  const rs = await resources.getShared("ReplicaSet", name);
  // Replicas are named <rs>-<n>: listed from the cache (no decoding of every replica from the
  // store on each of the many reconciles a scale-up causes); the store re-read once the cache
  // has not caught up with our own writes for a while.
  let candidates = listCandidates(cache, byPrefix, name, expectations);
  if (!candidates) {
    // The watch events of our own writes are on their way; look again shortly.
    return { requeue: true };
  }
  if (expectations.has(name)) {
    expectations.delete(name);
    candidates = (await resources.list("Container", { nameGlob: `${name}-*` })).items;
  }
  const ownedByName = (c: Container) => {
    const o = c.metadata?.ownerReference;
    return o?.kind === "ReplicaSet" && o.name === name;
  };

  // Orphans: replicas whose ReplicaSet (this uid) is gone. The store's cascade normally removes
  // them with their owner; this catches a ReplicaSet re-created under the same name, or an
  // owner reference written by hand.
  for (const c of candidates) {
    if (!ownedByName(c) || c.metadata!.ownerReference!.uid === rs?.metadata?.uid || c.metadata?.deletionTimestamp) continue;
    await deleteContainer(resources, c.metadata!.name);
    events.record({ reason: "SuccessfulDelete", kind: "ReplicaSet", name, message: `Deleted orphaned container: ${c.metadata!.name}` });
  }
  if (!rs) return;

  const uid = rs.metadata!.uid;
  // In the cache's order: sorted by ordinal only to choose what to delete (a scale-up
  // reconciles with a thousand replicas many times, mostly to count the ready ones).
  const active = candidates.filter((c) => ownedByName(c) && c.metadata!.ownerReference!.uid === uid && !c.metadata?.deletionTimestamp);
  const desired = Math.max(0, rs.spec?.replicas ?? 1);
  const template = await resolveTemplate(resources, rs);
  const outcome: Outcome = { created: [], deleted: new Set(), failed: [], requeue: false };
  const taken = () => new Set(candidates.map((c) => c.metadata!.name));
  const outdated = typeof template === "string" ? [] : active.filter((c) => !isUpToDate(c, template.annotations));
  if (active.length < desired && typeof template !== "string") {
    await createReplicas(resources, events, rs, template, desired - active.length, taken, outcome);
  } else if (outdated.length > 0 && typeof template !== "string") {
    await rollOne(resources, events, rs, template, { active, outdated, desired, taken }, outcome);
  } else if (active.length > desired) {
    await deleteReplicas(resources, events, name, byOrdinal(name, active).slice(desired).reverse(), outcome);
  }
  const { created, deleted } = outcome;
  if (created.length > 0 || deleted.size > 0) expectations.set(name, { creates: new Set(created), deletes: new Set(deleted), until: Date.now() + EXPECTATIONS_TTL_MS });
  const live = active.length + created.length - deleted.size;
  if (live !== active.length) {
    const direction = live > active.length ? "up" : "down";
    events.record({
      reason: "ScalingReplicaSet",
      kind: "ReplicaSet",
      name,
      message: `Scaled ${direction} replica set ${name} from ${active.length} to ${live}`,
    });
  }
  if (typeof template !== "string") {
    await updateReplicas(resources, name, template, deleted.size > 0 ? active.filter((c) => !deleted.has(c.metadata!.name)) : active, outcome);
  }

  let ready = 0;
  for (const c of active) if (c.status?.ready && !deleted.has(c.metadata!.name)) ready++;
  const message = [...(typeof template === "string" ? [template] : []), ...outcome.failed].join("; ");
  await resources.updateStatus("ReplicaSet", name, (current) => {
    if (current.metadata?.uid !== uid) return undefined;
    const status = create(ReplicaSetStatusSchema, {
      replicas: live,
      readyReplicas: ready,
      observedGeneration: rs.metadata!.generation,
      message,
    });
    return current.status && equals(ReplicaSetStatusSchema, current.status, status) ? undefined : status;
  });
  // A missing template is not retried: its Container's events bring us back when it appears.
  if (outcome.failed.length > 0) throw new ConnectError(`replicaset ${name}: ${outcome.failed.join("; ")}`, Code.FailedPrecondition);
  return { requeue: outcome.requeue };
}

/** What one reconcile did: the replicas it created and deleted, failures, and whether to come back. */
interface Outcome {
  created: string[];
  deleted: Set<string>;
  failed: string[];
  requeue: boolean;
}

/** Creates up to `count` replicas at the lowest ordinals whose names are not taken. */
async function createReplicas(
  resources: ResourceStore,
  events: EventRecorder,
  rs: ReplicaSet,
  template: Template,
  count: number,
  taken: () => ReadonlySet<string>,
  outcome: Outcome,
): Promise<void> {
  const name = rs.metadata!.name;
  const names: string[] = [];
  const takenNames = taken();
  for (let ordinal = 0; names.length < Math.min(count, MAX_CHANGES_PER_RECONCILE); ordinal++) {
    const replica = `${name}-${ordinal}`;
    if (!takenNames.has(replica)) names.push(replica);
  }
  if (count > names.length) outcome.requeue = true;
  // One transaction for all of them (see ResourceStore.createAll): one revision, one watch
  // batch for every watcher, instead of one per replica.
  // One replica built from the template; the others are shallow copies under their own names,
  // sharing its spec, labels and owner with each other and with what watchers receive: nothing
  // may change a stored or cached object in place (every change copies first).
  const first = newReplica(rs, names[0] ?? name, template);
  const results = await resources.createAll(names.map((replica) => ({ ...first, metadata: { ...first.metadata!, name: replica } })));
  results.forEach((r, i) => {
    const replica = names[i]!;
    if (!r.error) {
      outcome.created.push(replica);
      events.record({ reason: "SuccessfulCreate", kind: "ReplicaSet", name, message: `Created container: ${replica}` });
      return;
    }
    const err = r.error;
    // Taken since we listed (a container on its way out, or one created meanwhile): come back.
    if (err.code === Code.AlreadyExists) {
      outcome.requeue = true;
      return;
    }
    outcome.failed.push(`creating ${replica}: ${err.rawMessage}`);
    events.record({ type: "Warning", reason: "FailedCreate", kind: "ReplicaSet", name, message: `Error creating: ${err.rawMessage}` });
  });
}

/**
 * One step of a rolling restart (replicas made before the template's restart annotation
 * changed), never leaving fewer than `desired` ready replicas that were ready: while a new replica
 * is not ready yet, wait (its status events bring us back); then, with one replica to spare,
 * delete an outdated one (not-ready ones first, then the highest ordinal); else create one more
 * from the current template, the spare.
 */
async function rollOne(
  resources: ResourceStore,
  events: EventRecorder,
  rs: ReplicaSet,
  template: Template,
  state: { active: Container[]; outdated: Container[]; desired: number; taken: () => ReadonlySet<string> },
  outcome: Outcome,
): Promise<void> {
  const { active, outdated, desired } = state;
  const updatedNotReady = active.some((c) => !outdated.includes(c) && !c.status?.ready);
  if (updatedNotReady) return;
  const spare = active.length - desired;
  if (spare <= 0) {
    await createReplicas(resources, events, rs, template, 1, state.taken, outcome);
    return;
  }
  const ordinal = (c: Container) => ordinalOf(rs.metadata!.name, c.metadata!.name) ?? 0;
  const victims = [...outdated].sort((a, b) => Number(Boolean(a.status?.ready)) - Number(Boolean(b.status?.ready)) || ordinal(b) - ordinal(a));
  await deleteReplicas(resources, events, rs.metadata!.name, victims.slice(0, spare), outcome);
}

/**
 * Deletes replicas in the given order of choice, at most a bounded number, in one transaction
 * (see ResourceStore.deleteAll), as creates are made.
 */
async function deleteReplicas(resources: ResourceStore, events: EventRecorder, name: string, victims: Container[], outcome: Outcome): Promise<void> {
  if (victims.length > MAX_CHANGES_PER_RECONCILE) outcome.requeue = true;
  const chosen = victims.slice(0, MAX_CHANGES_PER_RECONCILE);
  const results = await resources.deleteAll(
    "Container",
    chosen.map((c) => ({ name: c.metadata!.name, known: c })),
  );
  results.forEach((r, i) => {
    const replica = chosen[i]!.metadata!.name;
    // Gone already counts as deleted.
    if (r.error && r.error.code !== Code.NotFound) {
      // Changed since we read it: the event that did it brings us back.
      if (r.error.code === Code.Aborted) outcome.requeue = true;
      else outcome.failed.push(`deleting ${replica}: ${r.error.rawMessage}`);
      return;
    }
    outcome.deleted.add(replica);
    events.record({ reason: "SuccessfulDelete", kind: "ReplicaSet", name, message: `Deleted container: ${replica}` });
  });
}

/**
 * The template (spec and labels, as a fingerprint) a replica's spec object was last found in
 * line with, and the labels object it was found with. Keyed by the spec, not the replica: a
 * status write's new version shares its spec and labels objects with the version before, so a
 * replica whose status alone changed needs no comparing again.
 */
const matchedTemplate = new WeakMap<ContainerSpec, { fingerprint: string; labels: Record<string, string> | undefined }>();

/**
 * Brings the replicas' spec and labels in line with the template. The messaging plane restarts
 * a container whose spec changed, so a template change rolls out to running replicas.
 */
async function updateReplicas(resources: ResourceStore, name: string, template: Template, replicas: Container[], outcome: Outcome): Promise<void> {
  const labels = replicaLabels(name, template);
  const fingerprint = `${Buffer.from(toBinary(ContainerSpecSchema, template.spec)).toString("base64")} ${JSON.stringify(labels)}`;
  for (const c of replicas) {
    // A replica the cache still holds as the very object found in line with this template
    // needs no comparing again: a scale of 10,000 reconciles the ReplicaSet many times.
    const matched = c.spec && matchedTemplate.get(c.spec);
    if (matched && matched.fingerprint === fingerprint && matched.labels === c.metadata?.labels) continue;
    // Ten thousand replicas are compared a slice at a time.
    await yieldToLoop();
    if (sameSpec(c.spec, template.spec) && sameStringMap(c.metadata?.labels, labels)) {
      if (c.spec) matchedTemplate.set(c.spec, { fingerprint, labels: c.metadata?.labels });
      continue;
    }
    const next = clone(ContainerSchema, c);
    next.spec = clone(ContainerSpecSchema, template.spec);
    next.metadata!.labels = { ...labels };
    try {
      await resources.update(next);
    } catch (err) {
      const code = ConnectError.from(err).code;
      // Changed or deleted since we read it: the event that did it brings us back anyway.
      if (code !== Code.Aborted && code !== Code.NotFound) throw err;
      outcome.requeue = true;
    }
  }
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
