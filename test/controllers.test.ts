/**
 * The controller framework, the ReplicaSet controller and the Service controller, driven
 * through a real resource store: objects are written with `resources`, and the tests observe
 * what the controllers made of them.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import fc from "fast-check";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AnyObject } from "../src/api/kinds.js";
import { RESTARTED_AT_ANNOTATION } from "../src/api/rollout.js";
import {
  ContainerSchema,
  ContainerSpecSchema,
  ContainerStatusSchema,
  ReplicaSetSchema,
  ServiceSchema,
  type Container,
  type ReplicaSet,
  type Service,
} from "../src/gen/k4s/v1/resources_pb.js";
import { createController } from "../src/server/controllers/controller.js";
import { createInformer } from "../src/server/controllers/informer.js";
import { createReplicaSetController, REPLICASET_LABEL } from "../src/server/controllers/replicaset-controller.js";
import { createServiceController } from "../src/server/controllers/service-controller.js";
import { createWorkQueue } from "../src/server/controllers/work-queue.js";
import { createEventRecorder, type EventRecorder } from "../src/server/event-recorder.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import type { ObjectEvent, ResourceStore } from "../src/server/store/resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

/** What the controller tests need: a resource store, an event recorder, running controllers. */
interface Harness {
  resources: ResourceStore;
  events: EventRecorder;
  stop(): Promise<void>;
}

/**
 * The server's store, resource layer and controllers composed as createServer does, but
 * without the messaging plane: the plane owns container status (it would overwrite the
 * readiness these tests set by hand), so it is left out here and exercised end to end by the
 * startTestServer tests at the bottom.
 */
async function startHarness(path?: string): Promise<Harness> {
  const store = openSqliteStore({ path });
  const resources = createResourceStore(store);
  const events = createEventRecorder();
  const onError = process.env.K4S_TEST_DEBUG ? (m: string, e: unknown) => console.error(m, e) : undefined;
  const controllers = [createReplicaSetController({ resources, events, onError }), createServiceController({ resources, events, onError })];
  for (const c of controllers) await c.start();
  return {
    resources,
    events,
    async stop() {
      for (const c of controllers) await c.stop();
      await store.close();
    },
  };
}

const grace = 600; // seconds: a replica marked for deletion stays Terminating for the whole test

type SpecInit = MessageInitShape<typeof ContainerSpecSchema>;

function containerSpec(fn: string, parameters: Record<string, string> = {}): SpecInit {
  return { module: "workers", function: fn, parameters, terminationGraceSeconds: grace };
}

function newContainer(name: string, spec: SpecInit = {}, labels: Record<string, string> = {}, owner?: { name: string; uid: string }): Container {
  return create(ContainerSchema, {
    metadata: { name, labels, ownerReference: owner ? { kind: "ReplicaSet", ...owner } : undefined },
    spec,
  });
}

function newReplicaSet(name: string, spec: { replicas?: number; container?: string; template?: { labels?: Record<string, string>; spec: SpecInit } }): ReplicaSet {
  return create(ReplicaSetSchema, {
    metadata: { name },
    spec: {
      replicas: spec.replicas,
      container: spec.container ?? "",
      template: spec.template ? { metadata: { labels: spec.template.labels ?? {} }, spec: spec.template.spec } : undefined,
    },
  });
}

function newService(name: string, selector: string, matchLabels: Record<string, string> = {}): Service {
  return create(ServiceSchema, { metadata: { name }, spec: { selector, matchLabels } });
}

async function replicaNames(resources: ResourceStore, rs: string): Promise<string[]> {
  const { items } = await resources.list("Container", { labels: { [REPLICASET_LABEL]: rs } });
  return items.filter((c) => !c.metadata?.deletionTimestamp).map((c) => c.metadata!.name);
}

/** Waits until the live replicas of rs are exactly `names` (any order). */
async function expectReplicas(resources: ResourceStore, rs: string, names: string[]): Promise<void> {
  const want = [...names].sort().join(",");
  let got = "";
  await eventually(
    async () => (got = (await replicaNames(resources, rs)).sort().join(",")) === want,
    30_000,
    `replicas of ${rs} to be [${want}]`,
  ).catch((err) => {
    throw new Error(`${(err as Error).message}; last saw [${got}]`);
  });
}

async function scale(resources: ResourceStore, name: string, replicas: number): Promise<void> {
  const rs = (await resources.get("ReplicaSet", name))!;
  rs.spec!.replicas = replicas;
  // Unconditional, as the Scale RPC: the controller's status writes must not make it conflict.
  rs.metadata!.resourceVersion = "";
  await resources.update(rs);
}

async function setReady(resources: ResourceStore, name: string, ready: boolean, host = ""): Promise<void> {
  const updated = await resources.updateStatus("Container", name, (c) =>
    create(ContainerStatusSchema, { phase: ready ? "Running" : "Pending", ready, host: host || c.status?.host || "", restarts: c.status?.restarts ?? 0 }),
  );
  assert.ok(updated, `container ${name} exists`);
}

async function endpointsOf(resources: ResourceStore, name: string): Promise<string[]> {
  return (await resources.get("Service", name))?.status?.endpoints ?? [];
}

async function expectEndpoints(resources: ResourceStore, name: string, want: string[]): Promise<void> {
  let got: string[] = [];
  await eventually(
    async () => (got = await endpointsOf(resources, name)).join(",") === want.join(","),
    30_000,
    `endpoints of ${name} to be [${want}]`,
  ).catch((err) => {
    throw new Error(`${(err as Error).message}; last saw [${got}]`);
  });
}

/** Collects the events of a watch from the current revision until stopped. */
async function watchFromNow(resources: ResourceStore): Promise<{ events: ObjectEvent[]; wait(pred: (all: ObjectEvent[]) => boolean): Promise<number>; stop(): void }> {
  const from = await resources.revision();
  const abort = new AbortController();
  const seen: ObjectEvent[] = [];
  const waiters = new Set<() => void>();
  void (async () => {
    try {
      for await (const batch of resources.watch({ fromRevision: from }, abort.signal)) {
        seen.push(...batch.events);
        waiters.forEach((w) => w());
      }
    } catch {
      // aborted
    }
  })();
  return {
    events: seen,
    wait(pred) {
      const started = performance.now();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("watch did not see the expected events")), 30_000);
        const check = () => {
          if (!pred(seen)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(performance.now() - started);
        };
        waiters.add(check);
        check();
      });
    },
    stop: () => abort.abort(),
  };
}

const nameOf = (o: AnyObject) => o.metadata?.name ?? "";

describe("work queue", () => {
  test("dedupes waiting keys and hands a key re-added during processing out again after done", async () => {
    const q = createWorkQueue();
    q.add("a");
    q.add("b");
    q.add("a");
    assert.equal(q.length, 2);
    const first = await q.get();
    assert.equal(first, "a");
    q.add("a"); // while "a" is processing: not handed out now...
    assert.equal(await q.get(), "b");
    let third: string | undefined = "none";
    const pending = q.get().then((k) => (third = k));
    await Promise.resolve();
    assert.equal(third, "none", "a key being processed is not handed to a second worker");
    q.done("a"); // ...but once done
    await pending;
    assert.equal(third, "a");
    q.done("b");
    q.done("a");
    assert.equal(q.length, 0);
    q.shutDown();
    assert.equal(await q.get(), undefined);
  });

  test("addAfter keeps the earliest pending delay", async () => {
    const q = createWorkQueue();
    const started = Date.now();
    q.addAfter("k", 5000);
    q.addAfter("k", 10);
    assert.equal(await q.get(), "k");
    // Taken at the 10 ms delay, not the 5 s one (a bound far from both, for a loaded machine).
    assert.ok(Date.now() - started < 4000, `taken after ${Date.now() - started} ms`);
    q.shutDown();
  });
});

describe("controllers", () => {
  let h: Harness;
  let resources: ResourceStore;
  before(async () => {
    h = await startHarness();
    resources = h.resources;
  });
  after(async () => {
    await h?.stop();
  });

  describe("framework", () => {
    test("reacts to events, never runs a key twice at once, reprocesses keys queued meanwhile, retries with back-off", async () => {
      const calls: string[] = [];
      const inFlight = new Set<string>();
      let overlap = false;
      let failuresLeft = 2;
      let release!: () => void;
      let gate: Promise<void> | undefined;
      const controller = createController({
        name: "probe",
        resources,
        workers: 4,
        backoffBaseMs: 1,
        watches: [{ kind: "Container", keys: (e) => (nameOf(e.object).startsWith("probe-") ? ["probe", nameOf(e.object)] : []) }],
        async reconcile(key) {
          if (inFlight.has(key)) overlap = true;
          inFlight.add(key);
          calls.push(key);
          try {
            if (key === "probe" && gate) await gate;
            if (key === "probe-fail" && failuresLeft-- > 0) throw new Error("transient");
          } finally {
            inFlight.delete(key);
          }
        },
      });
      await resources.create(newContainer("probe-a"));
      await controller.start();
      // The initial listing was queued by start().
      await eventually(() => calls.includes("probe-a") && calls.includes("probe"), 30_000, "initial listing reconciled");

      gate = new Promise((r) => (release = r));
      const before = calls.filter((k) => k === "probe").length;
      await resources.create(newContainer("probe-b"));
      await eventually(() => inFlight.has("probe"), 30_000, "probe reconcile in flight");
      // Two more events for the busy key while it reconciles: processed once more, after.
      await resources.create(newContainer("probe-c"));
      await resources.create(newContainer("probe-d"));
      await eventually(() => calls.includes("probe-d"), 30_000, "probe-d reconciled");
      gate = undefined;
      release();
      await eventually(() => calls.filter((k) => k === "probe").length === before + 2, 30_000, "probe reprocessed once");
      assert.equal(overlap, false, "a key was reconciled twice at once");

      await resources.create(newContainer("probe-fail"));
      await eventually(() => calls.filter((k) => k === "probe-fail").length === 3, 30_000, "failing key retried until it succeeds");
      await controller.stop();
      const after = calls.length;
      const watch = await watchFromNow(resources);
      await resources.create(newContainer("probe-e"));
      await resources.delete("Container", "probe-e");
      await watch.wait((all) => all.some((e) => e.type === "DELETED" && nameOf(e.object) === "probe-e"));
      watch.stop();
      assert.equal(calls.length, after, "a stopped controller reconciles nothing");
      for (const n of ["probe-a", "probe-b", "probe-c", "probe-d", "probe-fail"]) await resources.delete("Container", n);
    });
  });

  describe("framework on a shared informer", () => {
    test("a controller started on an informer that already follows the store reconciles what its cache holds, and once stopped hears nothing more", async () => {
      // As when a server of a cluster becomes the leader: the server's informer has followed the
      // store all along, and what changed while no controller ran (a scale written while the
      // cluster had no leader) has no event of its own left to come.
      const informer = createInformer({ resources, kinds: ["Container"] });
      await resources.create(newContainer("shared-a"));
      await informer.start();
      await resources.create(newContainer("shared-b"));
      await eventually(() => informer.get("Container", "shared-b") !== undefined, 30_000, "the informer following the store");
      const reconciled: string[] = [];
      const mapped: string[] = [];
      const controller = createController({
        name: "shared-probe",
        informer,
        watches: [
          {
            kind: "Container",
            keys: (e) => {
              if (!nameOf(e.object).startsWith("shared-")) return [];
              mapped.push(nameOf(e.object));
              return [nameOf(e.object)];
            },
          },
        ],
        async reconcile(key) {
          reconciled.push(key);
        },
      });
      try {
        await controller.start();
        await eventually(() => reconciled.includes("shared-a") && reconciled.includes("shared-b"), 30_000, "the cached objects reconciled at start");
        await resources.create(newContainer("shared-c"));
        await eventually(() => reconciled.includes("shared-c"), 30_000, "a later event reconciled");
        await controller.stop();
        const mappedBefore = mapped.length;
        await resources.create(newContainer("shared-d"));
        await eventually(() => informer.get("Container", "shared-d") !== undefined, 30_000, "the informer taking shared-d in");
        assert.equal(mapped.length, mappedBefore, "a stopped controller is no longer handed the informer's events");
        assert.ok(!reconciled.includes("shared-d"));
      } finally {
        await controller.stop();
        await informer.stop();
        for (const n of ["shared-a", "shared-b", "shared-c", "shared-d"]) await resources.delete("Container", n).catch(() => {});
      }
    });
  });

  describe("framework relist", () => {
    test("relists on OUT_OF_RANGE, reporting objects that vanished meanwhile as DELETED, then follows again", async () => {
      // The real store behind a watch that, the first time, waits for a signal and then
      // answers OUT_OF_RANGE, as when the controller's revision was compacted away.
      let compacted!: () => void;
      const gate = new Promise<void>((r) => (compacted = r));
      let watchCalls = 0;
      const flaky = new Proxy(resources, {
        get(target, prop) {
          if (prop === "watch") {
            return (opts: Parameters<ResourceStore["watch"]>[0], signal: AbortSignal) => {
              if (watchCalls++ > 0) return target.watch(opts, signal);
              return (async function* () {
                await gate;
                yield* [] as ObjectEvent[][];
                throw new ConnectError("revision compacted", Code.OutOfRange);
              })();
            };
          }
          const v = Reflect.get(target, prop, target) as unknown;
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const seen: string[] = [];
      const reconciled = new Set<string>();
      const controller = createController({
        name: "relist-probe",
        resources: flaky,
        watches: [
          {
            kind: "Container",
            keys: (e) => {
              if (!nameOf(e.object).startsWith("rl-")) return [];
              seen.push(`${e.type} ${nameOf(e.object)}`);
              return [nameOf(e.object)];
            },
          },
        ],
        async reconcile(key) {
          reconciled.add(key);
        },
      });
      await resources.create(newContainer("rl-gone"));
      await controller.start();
      assert.deepEqual(seen, ["ADDED rl-gone"]);
      await resources.delete("Container", "rl-gone");
      await resources.create(newContainer("rl-new"));
      compacted();
      await eventually(() => seen.includes("DELETED rl-gone") && seen.includes("ADDED rl-new"), 30_000, "relist diff");
      await resources.create(newContainer("rl-after"));
      await eventually(() => reconciled.has("rl-after"), 30_000, "followed after relist");
      assert.equal(watchCalls, 2);
      await controller.stop();
      for (const n of ["rl-new", "rl-after"]) await resources.delete("Container", n);
    });
  });

  describe("ReplicaSet controller", () => {
    test("stamps replicas from a template container, event-driven", async () => {
      await resources.create(newContainer("calc", containerSpec("calculator"), { app: "calc" }));
      const watch = await watchFromNow(resources);
      const rs = await resources.create(newReplicaSet("calc-rs", { replicas: 3, container: "calc" }));
      const created = (all: ObjectEvent[]) => all.filter((e) => e.type === "ADDED" && nameOf(e.object).startsWith("calc-rs-")).length === 3;
      const ms = await watch.wait(created);
      watch.stop();
      // A watch-driven controller answers in tens of ms on a quiet machine (a figure, not asserted).
      console.log(`# replicas appeared ${ms.toFixed(0)} ms after the ReplicaSet was created`);
      await expectReplicas(resources, "calc-rs", ["calc-rs-0", "calc-rs-1", "calc-rs-2"]);
      const replica = (await resources.get("Container", "calc-rs-1"))!;
      assert.deepEqual(replica.metadata!.ownerReference && { ...replica.metadata!.ownerReference, $typeName: undefined }, {
        $typeName: undefined,
        kind: "ReplicaSet",
        name: "calc-rs",
        uid: rs.metadata!.uid,
      });
      assert.deepEqual({ ...replica.metadata!.labels }, { app: "calc", [REPLICASET_LABEL]: "calc-rs" });
      assert.equal(replica.spec!.function, "calculator");
      await eventually(async () => (await resources.get("ReplicaSet", "calc-rs"))?.status?.replicas === 3, 30_000, "status.replicas 3");
      const reasons = h.events.recent({ kind: "ReplicaSet", name: "calc-rs" }).map((e) => e.reason);
      assert.equal(reasons.filter((r) => r === "SuccessfulCreate").length, 3);
      assert.ok(reasons.includes("ScalingReplicaSet"));
      await resources.delete("ReplicaSet", "calc-rs");
      await resources.delete("Container", "calc");
    });

    test("inline template with replicas unset keeps one replica", async () => {
      await resources.create(newReplicaSet("inline", { template: { labels: { tier: "web" }, spec: containerSpec("echo", { prefix: "hi" }) } }));
      await expectReplicas(resources, "inline", ["inline-0"]);
      const c = (await resources.get("Container", "inline-0"))!;
      assert.equal(c.metadata!.labels.tier, "web");
      assert.deepEqual(c.spec!.parameters, { prefix: "hi" });
      await resources.delete("ReplicaSet", "inline");
    });

    test("scales 3 → 5 → 2 → 0 → 1 filling the lowest ordinals and removing the highest", async () => {
      await resources.create(newReplicaSet("sc", { replicas: 3, template: { spec: containerSpec("echo") } }));
      await expectReplicas(resources, "sc", ["sc-0", "sc-1", "sc-2"]);
      await scale(resources, "sc", 5);
      await expectReplicas(resources, "sc", ["sc-0", "sc-1", "sc-2", "sc-3", "sc-4"]);
      await scale(resources, "sc", 2);
      await expectReplicas(resources, "sc", ["sc-0", "sc-1"]);
      await scale(resources, "sc", 0);
      await expectReplicas(resources, "sc", []);
      await eventually(async () => (await resources.get("ReplicaSet", "sc"))?.status?.replicas === 0, 30_000, "status.replicas 0");
      // A gap is filled from the bottom: delete sc-0 of [sc-0, sc-1] and it comes back as sc-0.
      await scale(resources, "sc", 2);
      await expectReplicas(resources, "sc", ["sc-0", "sc-1"]);
      await resources.delete("Container", "sc-0");
      await expectReplicas(resources, "sc", ["sc-0", "sc-1"]);
      const deletes = h.events.recent({ kind: "ReplicaSet", name: "sc" }).filter((e) => e.reason === "SuccessfulDelete").map((e) => e.message);
      assert.deepEqual(deletes, ["Deleted container: sc-4", "Deleted container: sc-3", "Deleted container: sc-2", "Deleted container: sc-1", "Deleted container: sc-0"]);
      await resources.delete("ReplicaSet", "sc");
    });

    test("deleting a ReplicaSet deletes its replicas", async () => {
      await resources.create(newReplicaSet("casc", { replicas: 2, template: { spec: containerSpec("echo") } }));
      await expectReplicas(resources, "casc", ["casc-0", "casc-1"]);
      await resources.delete("ReplicaSet", "casc");
      await eventually(async () => (await resources.list("Container", { nameGlob: "casc-*" })).items.length === 0, 30_000, "replicas gone");
    });

    test("a template change reaches the replicas' spec and labels", async () => {
      await resources.create(newContainer("tpl", containerSpec("processor", { mode: "upper" }), { v: "1" }));
      await resources.create(newReplicaSet("tpl-rs", { replicas: 2, container: "tpl" }));
      await expectReplicas(resources, "tpl-rs", ["tpl-rs-0", "tpl-rs-1"]);
      const tpl = (await resources.get("Container", "tpl"))!;
      tpl.spec!.parameters = { mode: "reverse" };
      tpl.metadata!.labels = { v: "2" };
      // Unconditional, as `k4s apply`: the controllers' status writes must not make it conflict.
      tpl.metadata!.resourceVersion = "";
      await resources.update(tpl);
      await eventually(
        async () => {
          const { items } = await resources.list("Container", { labels: { [REPLICASET_LABEL]: "tpl-rs" } });
          return items.length === 2 && items.every((c) => c.spec?.parameters?.mode === "reverse" && c.metadata?.labels.v === "2");
        },
        30_000,
        "replicas updated from the template container",
      );
      // Inline templates too.
      await resources.create(newReplicaSet("tpl-in", { replicas: 1, template: { spec: containerSpec("echo", { prefix: "a" }) } }));
      await expectReplicas(resources, "tpl-in", ["tpl-in-0"]);
      const rs = (await resources.get("ReplicaSet", "tpl-in"))!;
      rs.spec!.template!.spec!.parameters = { prefix: "b" };
      rs.metadata!.resourceVersion = "";
      await resources.update(rs);
      await eventually(async () => (await resources.get("Container", "tpl-in-0"))?.spec?.parameters?.prefix === "b", 30_000, "inline template change");
      await resources.delete("ReplicaSet", "tpl-rs");
      await resources.delete("ReplicaSet", "tpl-in");
      await resources.delete("Container", "tpl");
    });

    test("status counts replicas and ready replicas, and reports a missing template until it appears", async () => {
      const rs = await resources.create(newReplicaSet("st", { replicas: 3, container: "st-tpl" }));
      await eventually(
        async () => (await resources.get("ReplicaSet", "st"))?.status?.message === `template container "st-tpl" not found`,
        30_000,
        "missing template reported",
      );
      assert.deepEqual(await replicaNames(resources, "st"), []);
      await resources.create(newContainer("st-tpl", containerSpec("echo")));
      await expectReplicas(resources, "st", ["st-0", "st-1", "st-2"]);
      await setReady(resources, "st-0", true);
      await setReady(resources, "st-2", true);
      await eventually(
        async () => {
          const s = (await resources.get("ReplicaSet", "st"))?.status;
          return s?.replicas === 3 && s.readyReplicas === 2 && s.message === "" && s.observedGeneration === rs.metadata!.generation;
        },
        30_000,
        "status 3 replicas, 2 ready, no message",
      );
      await scale(resources, "st", 4);
      const generation = (await resources.get("ReplicaSet", "st"))!.metadata!.generation;
      await eventually(async () => {
        const s = (await resources.get("ReplicaSet", "st"))?.status;
        return s?.replicas === 4 && s.observedGeneration === generation;
      }, 30_000, "observedGeneration follows the spec");
      await resources.delete("ReplicaSet", "st");
      await resources.delete("Container", "st-tpl");
    });

    test("terminating replicas do not count and keep their names until gone", async () => {
      await resources.create(newReplicaSet("term", { replicas: 3, template: { spec: containerSpec("echo") } }));
      await expectReplicas(resources, "term", ["term-0", "term-1", "term-2"]);
      // Bound to a host, a deleted container lingers as Terminating until its host lets go.
      await setReady(resources, "term-1", true, "host-a");
      const marked = await resources.delete("Container", "term-1");
      assert.ok(marked.metadata?.deletionTimestamp, "a bound container is marked, not removed");
      // term-1 is taken, so the replacement takes the lowest free ordinal.
      await expectReplicas(resources, "term", ["term-0", "term-2", "term-3"]);
      await eventually(async () => {
        const s = (await resources.get("ReplicaSet", "term"))?.status;
        return s?.replicas === 3 && s.readyReplicas === 0;
      }, 30_000, "terminating replica not counted");
      // Scale-down also counts only live replicas: the highest live ordinal goes.
      await scale(resources, "term", 2);
      await expectReplicas(resources, "term", ["term-0", "term-2"]);
      await resources.finalize("term-1");
      await scale(resources, "term", 3);
      await expectReplicas(resources, "term", ["term-0", "term-1", "term-2"]);
      await resources.delete("ReplicaSet", "term");
    });

    test("deletes orphans: replicas whose owning ReplicaSet uid does not exist", async () => {
      await resources.create(newContainer("ghost-0", containerSpec("echo"), {}, { name: "ghost", uid: "no-such-uid" }));
      await resources.create(newReplicaSet("own", { replicas: 1, template: { spec: containerSpec("echo") } }));
      await expectReplicas(resources, "own", ["own-0"]);
      // Owned by the name "own" but by an earlier incarnation's uid.
      await resources.create(newContainer("own-7", containerSpec("echo"), { [REPLICASET_LABEL]: "own" }, { name: "own", uid: "old-uid" }));
      await eventually(async () => !(await resources.get("Container", "ghost-0")), 30_000, "ghost-0 deleted");
      await eventually(async () => !(await resources.get("Container", "own-7")), 30_000, "own-7 deleted");
      await expectReplicas(resources, "own", ["own-0"]);
      // A container that merely has a replica-like name but no owner is left alone.
      await resources.create(newContainer("own-9", containerSpec("echo")));
      await scale(resources, "own", 2);
      await expectReplicas(resources, "own", ["own-0", "own-1"]);
      assert.ok(await resources.get("Container", "own-9"));
      await resources.delete("ReplicaSet", "own");
      await resources.delete("Container", "own-9");
    });
  });

  describe("ReplicaSet controller under churn", () => {
    // A replica deleted by hand while the count already matches is not replaced by a lower
    // ordinal (that would restart a healthy replica just to rename it): with deletions in the
    // mix, the property is exactly n distinct replicas; with scales alone, exactly <rs>-0..n-1.
    test("random scales and replica deletions, fired without waiting, settle on n replicas (<rs>-0..n-1 without deletions)", async () => {
      const ops = fc.array(
        fc.oneof(
          fc.record({ op: fc.constant("scale" as const), n: fc.integer({ min: 0, max: 6 }) }),
          fc.record({ op: fc.constant("kill" as const), ordinal: fc.integer({ min: 0, max: 6 }) }),
        ),
        { minLength: 1, maxLength: 8 },
      );
      let run = 0;
      await fc.assert(
        fc.asyncProperty(ops, async (steps) => {
          const rs = `churn-${run++}`;
          await resources.create(newReplicaSet(rs, { replicas: 2, template: { spec: containerSpec("echo") } }));
          let desired = 2;
          let killed = false;
          for (const step of steps) {
            if (step.op === "scale") {
              desired = step.n;
              await scale(resources, rs, step.n);
            } else {
              killed = true;
              await resources.delete("Container", `${rs}-${step.ordinal}`).catch((err) => {
                if (ConnectError.from(err).code !== Code.NotFound) throw err;
              });
            }
          }
          if (killed) {
            await eventually(async () => {
              const names = await replicaNames(resources, rs);
              return names.length === desired && new Set(names).size === desired && names.every((n) => /-\d+$/.test(n));
            }, 30_000, `${desired} replicas of ${rs}`);
          } else {
            await expectReplicas(resources, rs, Array.from({ length: desired }, (_, i) => `${rs}-${i}`));
          }
          await eventually(async () => (await resources.get("ReplicaSet", rs))?.status?.replicas === desired, 30_000, "status follows");
          await resources.delete("ReplicaSet", rs);
        }),
        { numRuns: 12 },
      );
    });
  });

  describe("ReplicaSet controller across a restart", () => {
    test("a restarted controller adopts the stored replicas instead of creating more", async () => {
      const dir = mkdtempSync(join(tmpdir(), "k4s-ctl-"));
      try {
        const first = await startHarness(join(dir, "k4s.db"));
        await first.resources.create(newReplicaSet("keep", { replicas: 3, template: { spec: containerSpec("echo") } }));
        await expectReplicas(first.resources, "keep", ["keep-0", "keep-1", "keep-2"]);
        await first.stop();
        const second = await startHarness(join(dir, "k4s.db"));
        try {
          await scale(second.resources, "keep", 4);
          await expectReplicas(second.resources, "keep", ["keep-0", "keep-1", "keep-2", "keep-3"]);
          const created = second.events.recent({ kind: "ReplicaSet", name: "keep" }).filter((e) => e.reason === "SuccessfulCreate");
          assert.deepEqual(created.map((e) => e.message), ["Created container: keep-3"]);
        } finally {
          await second.stop();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe("Service controller", () => {
    test("endpoints follow readiness of the containers a glob selects, event-driven", async () => {
      for (const n of ["web-0", "web-1", "other-0"]) await resources.create(newContainer(n, containerSpec("echo")));
      await resources.create(newService("web", "web-*"));
      await eventually(async () => Number((await resources.get("Service", "web"))?.status?.observedGeneration) === 1, 30_000, "service observed");
      assert.deepEqual(await endpointsOf(resources, "web"), []);
      const watch = await watchFromNow(resources);
      await setReady(resources, "web-0", true);
      const ms = await watch.wait((all) =>
        all.some((e) => e.type === "MODIFIED" && nameOf(e.object) === "web" && (e.object as Service).status?.endpoints.join() === "web-0"),
      );
      watch.stop();
      console.log(`# endpoints updated ${ms.toFixed(0)} ms after the replica became ready (event-driven)`);
      await setReady(resources, "web-1", true);
      await setReady(resources, "other-0", true);
      await expectEndpoints(resources, "web", ["web-0", "web-1"]);
      await setReady(resources, "web-0", false);
      await expectEndpoints(resources, "web", ["web-1"]);
      // Being deleted ends being an endpoint even while the container still exists.
      await setReady(resources, "web-1", true, "host-a");
      await resources.delete("Container", "web-1");
      await expectEndpoints(resources, "web", []);
      await resources.finalize("web-1");
      await setReady(resources, "web-0", true);
      await expectEndpoints(resources, "web", ["web-0"]);
      // Status is written only when it changed: an unrelated container change writes nothing.
      const version = (await resources.get("Service", "web"))!.metadata!.resourceVersion;
      await setReady(resources, "other-0", false);
      await resources.create(newService("probe-after", "other-*"));
      await eventually(async () => (await resources.get("Service", "probe-after"))?.status?.observedGeneration, 30_000, "later service reconciled");
      assert.equal((await resources.get("Service", "web"))!.metadata!.resourceVersion, version);
      for (const n of ["web-0", "other-0"]) await resources.delete("Container", n);
      await resources.delete("Service", "web");
      await resources.delete("Service", "probe-after");
    });

    test("matchLabels alone and combined with a glob; selector changes are picked up", async () => {
      await resources.create(newContainer("api-0", containerSpec("echo"), { tier: "back" }));
      await resources.create(newContainer("api-1", containerSpec("echo"), { tier: "front" }));
      await resources.create(newContainer("db-0", containerSpec("echo"), { tier: "back" }));
      for (const n of ["api-0", "api-1", "db-0"]) await setReady(resources, n, true);
      await resources.create(newService("back", "", { tier: "back" }));
      await resources.create(newService("api-back", "api-*", { tier: "back" }));
      await expectEndpoints(resources, "back", ["api-0", "db-0"]);
      await expectEndpoints(resources, "api-back", ["api-0"]);
      // Relabeling a container moves it between services.
      const api1 = (await resources.get("Container", "api-1"))!;
      api1.metadata!.labels = { tier: "back" };
      api1.metadata!.resourceVersion = "";
      await resources.update(api1);
      await expectEndpoints(resources, "api-back", ["api-0", "api-1"]);
      // A selector change re-selects.
      const svc = (await resources.get("Service", "api-back"))!;
      svc.spec!.selector = "db-*";
      svc.metadata!.resourceVersion = "";
      await resources.update(svc);
      await expectEndpoints(resources, "api-back", ["db-0"]);
      // Replicas of a ReplicaSet become endpoints once ready.
      await resources.create(newReplicaSet("calc", { replicas: 2, template: { labels: { app: "calc" }, spec: containerSpec("calculator") } }));
      await resources.create(newService("calc-svc", "calc-*"));
      await expectReplicas(resources, "calc", ["calc-0", "calc-1"]);
      await setReady(resources, "calc-1", true);
      await expectEndpoints(resources, "calc-svc", ["calc-1"]);
      await scale(resources, "calc", 1);
      await expectEndpoints(resources, "calc-svc", []);
      for (const n of ["api-0", "api-1", "db-0"]) await resources.delete("Container", n);
      for (const n of ["back", "api-back", "calc-svc"]) await resources.delete("Service", n);
      await resources.delete("ReplicaSet", "calc");
    });
  });
});

describe("rolling restart", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    await h?.stop();
  });

  test("a changed k4s.io/restartedAt replaces replicas one at a time: a spare first, an old one deleted only once the spare is ready", async () => {
    const { resources } = h;
    const at = "2026-01-01T00:00:00.000Z";
    await resources.create(newReplicaSet("roll", { replicas: 2, template: { spec: containerSpec("echo_worker") } }));
    await expectReplicas(resources, "roll", ["roll-0", "roll-1"]);
    for (const n of ["roll-0", "roll-1"]) await setReady(resources, n, true);
    const rs = (await resources.get("ReplicaSet", "roll"))!;
    rs.spec!.template!.metadata!.annotations[RESTARTED_AT_ANNOTATION] = at;
    // Unconditional, as `k4s rollout restart`: the controller's status writes must not make it conflict.
    rs.metadata!.resourceVersion = "";
    await resources.update(rs);

    /** The live replicas as "old"/"new" (by their annotation) and "ready"/"waiting", sorted. */
    const shape = async () => {
      const { items } = await resources.list("Container", { labels: { [REPLICASET_LABEL]: "roll" } });
      return items
        .filter((c) => !c.metadata?.deletionTimestamp)
        .map((c) => `${c.metadata!.annotations[RESTARTED_AT_ANNOTATION] === at ? "new" : "old"}-${c.status?.ready ? "ready" : "waiting"}`)
        .sort()
        .join(",");
    };
    const expectShape = async (want: string) => {
      let got = "";
      await eventually(async () => (got = await shape()) === want, 30_000, `replicas ${want}`).catch((err) => {
        throw new Error(`${(err as Error).message}; last saw ${got}`);
      });
    };
    const readySpare = async () => {
      const { items } = await resources.list("Container", { labels: { [REPLICASET_LABEL]: "roll" } });
      const spare = items.find((c) => c.metadata!.annotations[RESTARTED_AT_ANNOTATION] === at && !c.status?.ready)!;
      await setReady(resources, spare.metadata!.name, true);
    };
    await expectShape("new-waiting,old-ready,old-ready");
    // While the spare is not ready, no old replica goes.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await shape(), "new-waiting,old-ready,old-ready");
    await readySpare();
    await expectShape("new-ready,new-waiting,old-ready");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await shape(), "new-ready,new-waiting,old-ready");
    await readySpare();
    await expectShape("new-ready,new-ready");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await shape(), "new-ready,new-ready", "nothing more once every replica is up to date");
  });
});

describe("controllers on a running server", () => {
  let server: K4sServer;
  let host: Proc;
  before(async () => {
    server = await startTestServer();
    host = spawnK4s(["worker", "--server", server.address, "--name", "ctl-host"]);
    await host.waitFor("serving containers");
  });
  after(async () => {
    await host?.kill();
    await server?.stop();
  });

  test("seed form: replicas of a template container run, become ready, and are the service's endpoints", async () => {
    const r = server.resources;
    await r.create(newContainer("calculator", { module: "workers", function: "calculator_worker" }, { app: "calculator" }));
    await r.create(newReplicaSet("calculator-rs", { replicas: 3, container: "calculator" }));
    await r.create(newService("calculator-service", "calculator-rs-*"));
    const all = ["calculator-rs-0", "calculator-rs-1", "calculator-rs-2"];
    // Readiness here is real: the worker host runs the replicas and the plane reports them.
    await expectEndpoints(r, "calculator-service", all);
    await eventually(async () => {
      const s = (await r.get("ReplicaSet", "calculator-rs"))?.status;
      return s?.replicas === 3 && s.readyReplicas === 3;
    }, 30_000, "3 ready replicas");

    await scale(r, "calculator-rs", 1);
    await expectEndpoints(r, "calculator-service", ["calculator-rs-0"]);
    // The host stops the removed replicas and the plane lets them go.
    await eventually(async () => (await r.list("Container", { nameGlob: "calculator-rs-*" })).items.length === 1, 30_000, "scaled-down replicas gone");

    // A template change reaches the running replica, which comes back ready.
    const tpl = (await r.get("Container", "calculator"))!;
    tpl.spec!.parameters = { precision: 2 };
    tpl.metadata!.resourceVersion = "";
    await r.update(tpl);
    await eventually(async () => {
      const c = await r.get("Container", "calculator-rs-0");
      return c?.spec?.parameters?.precision === 2 && c.status?.ready && c.status.observedGeneration === c.metadata?.generation;
    }, 30_000, "replica updated and ready again");
    await expectEndpoints(r, "calculator-service", ["calculator-rs-0"]);

    await r.delete("ReplicaSet", "calculator-rs");
    await expectEndpoints(r, "calculator-service", []);
    await eventually(async () => (await r.list("Container", { nameGlob: "calculator-rs-*" })).items.length === 0, 30_000, "replicas gone");
    await r.delete("Service", "calculator-service");
    await r.delete("Container", "calculator");
  });

  test("a scale 0 -> 300 -> 10 writes its replicas, their statuses and their deletions in batches: a few store revisions, not one per replica", async () => {
    const r = server.resources;
    const n = 300;
    await r.create(newReplicaSet("batch-rs", { replicas: 0, template: { spec: { module: "workers", function: "echo_worker" } } }));
    const from = await r.revision();
    const abort = new AbortController();
    /** By revision: how many replicas it created, and how many it made Running. */
    const created = new Map<number, number>();
    const running = new Map<number, number>();
    const isRunning = new Set<string>();
    const followed = (async () => {
      for await (const batch of r.watch({ kind: "Container", nameGlob: "batch-rs-*", fromRevision: from }, abort.signal)) {
        for (const e of batch.events) {
          const name = nameOf(e.object);
          if (e.type === "ADDED") created.set(e.revision, (created.get(e.revision) ?? 0) + 1);
          if ((e.object as Container).status?.phase === "Running" && !isRunning.has(name)) {
            isRunning.add(name);
            running.set(e.revision, (running.get(e.revision) ?? 0) + 1);
          }
        }
        if (isRunning.size === n) return;
      }
    })();
    await scale(r, "batch-rs", n);
    await Promise.race([followed, eventually(() => isRunning.size === n, 60_000, `${n} replicas Running`)]);
    await eventually(() => isRunning.size === n, 60_000, `${n} replicas Running`);
    abort.abort();
    await followed.catch(() => {});
    const total = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    assert.equal(total(created), n);
    // One reconcile creates them all, 128 to a transaction.
    assert.ok(created.size <= 5, `created in ${created.size} revisions: ${[...created.values()].join(", ")}`);
    // Statuses go out in batches of what changed meanwhile; one at a time would be 300 revisions.
    assert.ok(running.size <= n / 3, `made Running in ${running.size} revisions`);

    // Scale-down: bystanders named like replicas (one owned by nobody, one by another
    // ReplicaSet's uid under this name) must be left exactly as they are.
    const stranger = await r.create(newContainer("batch-rs-stranger", { module: "workers", function: "echo_worker" }));
    const other = await r.create(newContainer("batch-rs-other", { module: "workers", function: "echo_worker" }, {}, { name: "other-rs", uid: "not-batch-rs" }));
    const kept = 10;
    const downFrom = await r.revision();
    const down = new AbortController();
    /** By revision: how many replicas it marked for deletion (or removed at once), and how many it removed. */
    const gone = new Map<number, number>();
    const goneNames = new Set<string>();
    const removed = new Map<number, number>();
    const followedDown = (async () => {
      for await (const batch of r.watch({ kind: "Container", nameGlob: "batch-rs-*", fromRevision: downFrom }, down.signal)) {
        for (const e of batch.events) {
          const name = nameOf(e.object);
          if (e.type === "DELETED") removed.set(e.revision, (removed.get(e.revision) ?? 0) + 1);
          if (goneNames.has(name) || (e.type !== "DELETED" && !e.object.metadata?.deletionTimestamp)) continue;
          goneNames.add(name);
          gone.set(e.revision, (gone.get(e.revision) ?? 0) + 1);
        }
      }
    })();
    await scale(r, "batch-rs", kept);
    const names = async () => (await r.list("Container", { nameGlob: "batch-rs-*" })).items.map((c) => nameOf(c)).sort();
    const expected = [...Array.from({ length: kept }, (_, i) => `batch-rs-${i}`), "batch-rs-other", "batch-rs-stranger"].sort();
    await eventually(async () => JSON.stringify(await names()) === JSON.stringify(expected), 60_000, `only ${kept} replicas and the bystanders left`);
    await eventually(() => goneNames.size === n - kept && total(removed) === n - kept, 30_000, `${n - kept} replicas seen going`);
    down.abort();
    await followedDown.catch(() => {});
    // The highest ordinals went, one reconcile's worth (128) to a transaction: 3 at least.
    assert.deepEqual([...goneNames].sort(), Array.from({ length: n - kept }, (_, i) => `batch-rs-${kept + i}`).sort());
    assert.ok(gone.size <= 6, `marked in ${gone.size} revisions: ${[...gone.values()].join(", ")}`);
    // Removed once their host stopped them: in batches of what stopped meanwhile.
    assert.ok(removed.size <= (n - kept) / 3, `removed in ${removed.size} revisions`);
    for (const [name, before] of [["batch-rs-stranger", stranger], ["batch-rs-other", other]] as const) {
      const now = await r.get("Container", name);
      assert.ok(!now?.metadata?.deletionTimestamp, `${name} not marked`);
      assert.equal(now?.metadata?.uid, before.metadata?.uid, `${name} is the same object`);
    }
    for (let i = 0; i < kept; i++) assert.equal((await r.get("Container", `batch-rs-${i}`))?.status?.phase, "Running", `batch-rs-${i} still Running`);
    await r.delete("Container", "batch-rs-stranger");
    await r.delete("Container", "batch-rs-other");
    await r.delete("ReplicaSet", "batch-rs");
    await eventually(async () => (await r.list("Container", { nameGlob: "batch-rs-*" })).items.length === 0, 60_000, "replicas gone");
  });
});
