/**
 * Which server runs and which routes each container, from its stored status and the session
 * records (here in an in-memory store, as the servers write them into etcd); the hosts of every
 * server as the scheduler sees them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema, ContainerSpecSchema, ContainerStatusSchema, ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { clusterHosts, hostLoads, type ClusterHost } from "../src/server/cluster/cluster-hosts.js";
import { pickHost, unschedulableReason } from "../src/server/controllers/scheduler.js";
import { SESSION_RECORDS_PREFIX, type SessionEntry } from "../src/server/cluster/cluster-member.js";
import { placementOf } from "../src/server/cluster/container-placement.js";
import { createSessionLocator } from "../src/server/cluster/session-locator.js";
import { createClusterEndpoints } from "../src/server/cluster/cluster-endpoints.js";
import { createFencedStore } from "../src/server/cluster/fenced-store.js";
import { bindingOf, createStoreBinder } from "../src/server/cluster/store-binder.js";
import { createInformer } from "../src/server/controllers/informer.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import { openStore } from "../src/server/store/open-store.js";
import type { ResourceStore } from "../src/server/store/resource-store.js";
import { createContainerController } from "../src/server/controllers/container-controller.js";
import { createEventRecorder } from "../src/server/event-recorder.js";
import { createLogStore } from "../src/server/log-store.js";
import { createMessagingPlane } from "../src/server/messaging/messaging-plane.js";
import { eventually } from "./helpers.js";

const container = (name: string, spec: { module?: string; command?: string[] }, status?: { phase: string; host: string }) =>
  create(ContainerSchema, { metadata: { name, uid: `uid-${name}` }, spec, status });

test("container placement: the holder of its host runs it, the holder of its delivery session routes it, a host no server holds orphans it", async () => {
  const store = await openStore({});
  const record = (server: string, e: SessionEntry) =>
    store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}${server}/${e.kind}/${e.name}`, value: Buffer.from(JSON.stringify(e)) }]);
  await record("a:1", { kind: "host", name: "h1", sessionId: "s1" });
  await record("c:3", { kind: "attached", name: "cmd", sessionId: "s2" });
  await record("b:2", { kind: "attached", name: "ext", sessionId: "s3" });
  const sessions = createSessionLocator({ store, onError: (m) => assert.fail(m) });
  await sessions.start();
  try {
    const at = (c: ReturnType<typeof container>) => placementOf(c, sessions);
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Running", host: "h1" })), { runs: "a:1", delivers: "a:1", orphanedOn: "" });
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Pending", host: "h1" })), { runs: "a:1", delivers: "a:1", orphanedOn: "" }, "bound, starting");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Pending", host: "" })), { runs: "", delivers: "", orphanedOn: "" }, "unbound: the scheduler's");
    assert.deepEqual(at(container("m", { module: "echo" })), { runs: "", delivers: "", orphanedOn: "" }, "never scheduled");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Succeeded", host: "h1" })), { runs: "", delivers: "", orphanedOn: "" }, "ended: bound to nothing");
    assert.deepEqual(at(container("m", { module: "echo" }, { phase: "Running", host: "h9" })), { runs: "", delivers: "", orphanedOn: "h9" }, "its host is held by no server");
    assert.deepEqual(at(container("cmd", { command: ["x"] }, { phase: "Running", host: "h1" })), { runs: "a:1", delivers: "c:3", orphanedOn: "" }, "a command container's process attached elsewhere");
    assert.deepEqual(at(container("ext", {}, { phase: "Running", host: "p" })), { runs: "b:2", delivers: "b:2", orphanedOn: "" }, "external: its process's server");
    assert.deepEqual(at(container("ext2", {}, { phase: "Running", host: "p" })), { runs: "", delivers: "", orphanedOn: "" }, "external without a process: nobody's, never orphaned");
    // h1 moves to b:2 (a later record, proven by its credential) while a:1's lingers.
    await record("b:2", { kind: "host", name: "h1", sessionId: "s4", proven: true });
    await eventually(() => at(container("m", { module: "echo" }, { phase: "Running", host: "h1" })).runs === "b:2", 30_000, "h1 run by b:2");
  } finally {
    sessions.stop();
    await store.close();
  }
});

test("cluster hosts: the scheduler picks among the hosts of every server by their records, least loaded by the stored statuses, and says why none fits", () => {
  const located = (name: string, server: string, modules: string[], capacity: number, createRevision = 1) =>
    ({ kind: "host", name, sessionId: `s-${name}`, server, createRevision, host: { modules, capacity, canSpawn: false } }) as const;
  const hosts = clusterHosts([
    located("h1", "a:1", ["echo"], 2),
    located("h2", "b:2", ["echo", "sum"], 0),
    { kind: "host", name: "old", sessionId: "s", server: "c:3", createRevision: 1 },
    { kind: "attached", name: "ext", sessionId: "s", server: "c:3", createRevision: 1 },
  ]);
  assert.deepEqual(hosts.map((h) => `${h.name}@${h.server}`), ["h1@a:1", "h2@b:2"], "a record without what its host runs, and attached processes, are no hosts to schedule on");
  const loads = hostLoads([
    container("r1", { module: "echo" }, { phase: "Running", host: "h2" }),
    container("r2", { module: "echo" }, { phase: "Pending", host: "h2" }),
    container("r3", { module: "echo" }, { phase: "Failed", host: "h1" }),
    container("r4", {}, { phase: "Running", host: "h1" }),
  ]);
  assert.deepEqual([...loads], [["h2", 2]], "ended containers and external processes load no host");
  const load = (h: ClusterHost) => loads.get(h.name) ?? 0;
  const echo = { kind: "module", spec: create(ContainerSpecSchema, { module: "echo" }) } as const;
  assert.equal(pickHost(echo, hosts, load)?.server, "a:1", "the least loaded host, whichever server holds it");
  const sum = { kind: "module", spec: create(ContainerSpecSchema, { module: "sum" }), name: "s" } as const;
  assert.equal(pickHost(sum, hosts, load)?.name, "h2");
  const full = (h: ClusterHost) => (h.name === "h1" ? 2 : load(h));
  assert.equal(pickHost(echo, hosts.slice(0, 1), full), undefined);
  assert.match(unschedulableReason({ ...echo, name: "e" }, hosts.slice(0, 1), full), /every worker host that can run container "e" is at capacity \(h1 2\/2\)/);
});

test("store binder: the leader's scheduler writes a binding into the Container's status (Pending on the host), counts it as load until the informer shows it, holds it bound while its host is held by a server, and schedules again after a refused write", async () => {
  const store = await openStore({});
  const resources = createResourceStore(store);
  const informer = createInformer({ resources, kinds: ["Container"] });
  const record = (server: string, e: SessionEntry) =>
    store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}${server}/${e.kind}/${e.name}`, value: Buffer.from(JSON.stringify(e)) }]);
  await record("a:1", { kind: "host", name: "h1", sessionId: "s1", host: { modules: ["echo"], capacity: 1, canSpawn: false } });
  await record("b:2", { kind: "host", name: "h2", sessionId: "s2", host: { modules: ["echo"], capacity: 0, canSpawn: false } });
  for (const name of ["c1", "c2", "c3"]) await resources.create(create(ContainerSchema, { metadata: { name }, spec: { module: "echo", function: "ECHO" } }));
  await resources.updateStatus("Container", "c3", (c) => bindingOf(c, "h9"));
  const locator = createSessionLocator({ store, onError: (m) => assert.fail(m) });
  const retried: string[] = [];
  const errors: string[] = [];
  const binderOver = (r: ResourceStore) => createStoreBinder({ locator, informer, resources: r, retry: (n) => retried.push(n), onError: (m) => errors.push(m) });
  await Promise.all([locator.start(), informer.start()]);
  try {
    const binder = binderOver(resources);
    const hosts = binder.hosts();
    assert.deepEqual(hosts.map((h) => `${h.name}@${h.server} ${binder.load(h)}`), ["h1@a:1 0", "h2@b:2 0"]);
    assert.equal(binder.bound("c3"), false, "bound to a host no server holds: scheduled again");
    binder.bind("c1", hosts[0]!);
    assert.equal(binder.bound("c1"), true, "a binding on its way");
    assert.equal(binder.load(binder.hosts().find((h) => h.name === "h1")!), 1, "counted before the informer shows it");
    await eventually(() => informer.get("Container", "c1")?.status?.host === "h1", 30_000, "binding stored");
    const st = informer.get("Container", "c1")!.status!;
    assert.equal(st.phase, "Pending");
    assert.match(st.message, /scheduled to host "h1"/);
    assert.equal(binder.load(binder.hosts().find((h) => h.name === "h1")!), 1, "counted once when stored");
    assert.equal(binder.bound("c1"), true, "in force while h1 is held");
    assert.equal(binder.bound("c2"), false);
    await store.txn([], [{ type: "delete", key: `${SESSION_RECORDS_PREFIX}a:1/host/h1` }]);
    await eventually(() => !binder.bound("c1"), 30_000, "h1's record gone: c1 is to be scheduled again");
    const refusing = createResourceStore(createFencedStore(store, { fence: () => undefined, self: () => "a:1", onFenced: () => {}, onError: () => {} }));
    binderOver(refusing).bind("c2", hosts[1]!);
    await eventually(() => retried.includes("c2"), 30_000, "a refused binding is scheduled again");
    assert.match(errors[0] ?? "", /binding container "c2" to host "h2" failed/);
  } finally {
    locator.stop();
    await informer.stop();
    await store.close();
  }
});

test("cluster endpoints: a service's endpoints are the ready containers its selector picks (or its status names), by their stored statuses wherever they run, sorted; computed again after a change", async () => {
  const store = await openStore({});
  const resources = createResourceStore(store);
  const informer = createInformer({ resources, kinds: ["Container", "Service"] });
  const add = async (name: string, labels: Record<string, string>, ready: boolean) => {
    await resources.create(create(ContainerSchema, { metadata: { name, labels }, spec: { module: "echo", function: "ECHO" } }));
    await resources.updateStatus("Container", name, () => create(ContainerStatusSchema, { phase: ready ? "Running" : "Pending", ready, host: "h1" }));
  };
  await add("web-2", { app: "web" }, true);
  await add("web-1", { app: "web" }, true);
  await add("web-3", { app: "web" }, false);
  await add("api-1", { app: "api" }, true);
  await resources.create(create(ServiceSchema, { metadata: { name: "web" }, spec: { matchLabels: { app: "web" } } }));
  await resources.create(create(ServiceSchema, { metadata: { name: "glob" }, spec: { selector: "api-*" } }));
  await informer.start();
  try {
    const endpoints = createClusterEndpoints(informer);
    assert.deepEqual(endpoints.of("web"), ["web-1", "web-2"], "ready ones, sorted");
    assert.deepEqual(endpoints.of("glob"), ["api-1"]);
    assert.equal(endpoints.of("nosuch"), undefined);
    await resources.updateStatus("Container", "web-3", () => create(ContainerStatusSchema, { phase: "Running", ready: true, host: "h1" }));
    await eventually(() => endpoints.of("web")?.length === 3, 30_000, "web-3 ready");
    await resources.delete("Container", "web-1");
    await eventually(() => !endpoints.of("web")?.includes("web-1"), 30_000, "web-1 gone");
  } finally {
    await informer.stop();
    await store.close();
  }
});

test("store binder: a binding on its way is forgotten at once when its container is re-created under its name, and is in force only while a server holds its host, stored or not", async () => {
  const store = await openStore({});
  const resources = createResourceStore(store);
  const informer = createInformer({ resources, kinds: ["Container"] });
  const record = (server: string, e: SessionEntry) =>
    store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}${server}/${e.kind}/${e.name}`, value: Buffer.from(JSON.stringify(e)) }]);
  const offer = { modules: ["echo"], capacity: 0, canSpawn: false };
  await record("a:1", { kind: "host", name: "h1", sessionId: "s1", host: offer });
  await record("b:2", { kind: "host", name: "h2", sessionId: "s2", host: offer });
  const spec = { module: "echo", function: "ECHO" };
  for (const name of ["c1", "c2"]) await resources.create(create(ContainerSchema, { metadata: { name }, spec }));
  // The binding of c2 waits to be written until let through.
  let letThrough!: () => void;
  const held = new Promise<void>((resolve) => (letThrough = resolve));
  const slow: ResourceStore = { ...resources, updateStatus: async (...args) => (await held, resources.updateStatus(...args)) };
  const locator = createSessionLocator({ store, onError: (m) => assert.fail(m) });
  await Promise.all([locator.start(), informer.start()]);
  try {
    const binder = createStoreBinder({ locator, informer, resources, retry: () => {}, onError: (m) => assert.fail(m) });
    binder.bind("c1", binder.hosts()[0]!);
    await eventually(() => informer.get("Container", "c1")?.status?.host === "h1", 30_000, "c1's binding stored");
    // No scheduling pass in between: c1 is deleted and created again, with no binding.
    const uid = informer.get("Container", "c1")!.metadata!.uid;
    await resources.delete("Container", "c1");
    await resources.create(create(ContainerSchema, { metadata: { name: "c1" }, spec }));
    await eventually(() => { const c = informer.get("Container", "c1"); return c !== undefined && c.metadata?.uid !== uid; }, 30_000, "c1 re-created");
    assert.equal(binder.bound("c1"), false, "the new c1 is not the one bound: it is scheduled");
    assert.equal(binder.load(binder.hosts()[0]!), 0, "nor counted on h1");

    const slowBinder = createStoreBinder({ locator, informer, resources: slow, retry: () => {}, onError: (m) => assert.fail(m) });
    slowBinder.bind("c2", slowBinder.hosts()[1]!);
    assert.equal(slowBinder.bound("c2"), true, "on its way to h2, held by b:2");
    await store.txn([], [{ type: "delete", key: `${SESSION_RECORDS_PREFIX}b:2/host/h2` }]);
    await eventually(() => locator.host("h2") === undefined, 30_000, "h2's record gone");
    assert.equal(slowBinder.bound("c2"), false, "its host went before the binding was stored: it is scheduled again");
    letThrough();
    await eventually(() => informer.get("Container", "c2")?.status?.host === "h2", 30_000, "the late binding stored");
    assert.equal(slowBinder.bound("c2"), false, "stored, to a host no server holds");
  } finally {
    letThrough();
    locator.stop();
    await informer.stop();
    await store.close();
  }
});

test("session locator: a first listing that fails is tried again after a back-off, not given up", async () => {
  const store = await openStore({});
  await store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}a:1/host/h1`, value: Buffer.from(JSON.stringify({ kind: "host", name: "h1", sessionId: "s1" })) }]);
  let failures = 2;
  const flaky = { ...store, range: (...args: Parameters<typeof store.range>) => (failures-- > 0 ? Promise.reject(new Error("etcd is not answering")) : store.range(...args)) };
  const errors: string[] = [];
  const locator = createSessionLocator({ store: flaky, onError: (m) => errors.push(m) });
  try {
    await locator.start();
    assert.equal(locator.host("h1")?.server, "a:1", "listed on the third try");
    assert.equal(errors.length, 2);
    assert.match(errors[0]!, /listing the session records failed; trying again/);
  } finally {
    locator.stop();
    await store.close();
  }
  // Stopped before any listing went through: start() gives up, saying so.
  const never = createSessionLocator({ store: { ...store, range: () => Promise.reject(new Error("down")) }, onError: () => {} });
  const started = never.start();
  never.stop();
  await assert.rejects(started);
});

/** A container controller as a cluster's server runs it (bindings in the store), on an in-memory store. */
async function clusterLifecycle(resumeGraceMs: number) {
  const store = await openStore({});
  const resources = createResourceStore(store);
  const informer = createInformer({ resources, kinds: ["Container", "Service"] });
  const events = createEventRecorder();
  const messaging = createMessagingPlane({ informer, events });
  const containers = createContainerController({
    informer,
    resources,
    events,
    logs: createLogStore(),
    router: messaging.router,
    links: messaging.links,
    resumeGraceMs,
    bindsFromStore: true,
    onError: (m) => assert.fail(m),
  });
  return { store, resources, informer, events, messaging, containers };
}

test("lifecycle with bindings in the store: a container bound to a host that is away waits the resume grace for it, then for the scheduler, and starts when that host joins", async () => {
  const { store, resources, informer, messaging, containers } = await clusterLifecycle(1_000);
  const scheduling: Array<string | undefined> = [];
  containers.onSchedulingNeeded((name) => scheduling.push(name));
  await resources.create(create(ContainerSchema, { metadata: { name: "c1" }, spec: { module: "echo", function: "ECHO" } }));
  await resources.updateStatus("Container", "c1", (c) => bindingOf(c, "h1"));
  await resources.create(create(ContainerSchema, { metadata: { name: "c2" }, spec: { module: "echo", function: "ECHO" } }));
  await resources.updateStatus("Container", "c2", (c) => bindingOf(c, "h2"));
  await informer.start();
  await containers.start();
  try {
    // Bound to hosts no server holds: each waits the resume grace first (the scheduler passes over
    // a container that is not Unscheduled).
    await eventually(() => containers.record("c1")?.state.is === "AwaitingHost" && containers.record("c2")?.state.is === "AwaitingHost", 30_000, "c1, c2 awaiting their hosts");
    const toldBefore = scheduling.filter((n) => n === "c1").length;
    // h2 comes back within it: c2 starts there.
    const h2 = messaging.links.open({ name: "h2", role: "host", modules: ["echo"], proven: true });
    containers.hostJoined(h2, []);
    await eventually(() => containers.record("c2")?.state.is === "Starting", 30_000, "c2 started on h2");
    // h1 does not: after the grace the scheduler is told (should h1 never come back, it binds c1 elsewhere).
    await eventually(() => containers.record("c1")?.hostName === "h1" && containers.record("c1")?.state.is === "Unscheduled", 30_000, "c1 waiting for the scheduler");
    assert.ok(scheduling.filter((n) => n === "c1").length > toldBefore, "the scheduler is told of it after the grace");
    assert.equal(containers.record("c1")!.restarts, 0);
    const h1 = messaging.links.open({ name: "h1", role: "host", modules: ["echo"], proven: true });
    containers.hostJoined(h1, []);
    assert.equal(containers.record("c1")!.state.is, "Starting", "started as its host joined, not at some later reconcile");
    const batch = await h1.next();
    assert.deepEqual(batch?.frames.map((f) => f.frame.case), ["welcome", "assign"]);
  } finally {
    await containers.stop();
    messaging.stop("test over");
    await informer.stop();
    await store.close();
  }
});

test("lifecycle with bindings in the store: an external container shown Running with no process attached is held for the resume grace, then (10 s: room for the write below on a loaded machine) shown Pending with a Detached warning only if still shown Running (a process that detached normally from a live server, whose Pending write came late, gets no second warning)", async () => {
  const { store, resources, informer, events, messaging, containers } = await clusterLifecycle(10_000);
  for (const name of ["lost", "left"]) {
    await resources.create(create(ContainerSchema, { metadata: { name }, spec: {} }));
    await resources.updateStatus("Container", name, () => create(ContainerStatusSchema, { phase: "Running", ready: true, host: "proc" }));
  }
  await informer.start();
  await containers.start();
  try {
    await eventually(() => containers.record("lost")?.state.is === "AwaitingHost" && containers.record("left")?.state.is === "AwaitingHost", 30_000, "both held, waiting for their process");
    // "left": its server shows it Pending (its process detached there; the claim's delete came first).
    await resources.updateStatus("Container", "left", () => create(ContainerStatusSchema, { phase: "Pending", host: "", message: 'waiting for a process to attach to external container "left"' }));
    await eventually(() => containers.record("left")?.storedPhase === "Pending", 30_000, "the Pending write seen");
    assert.equal(containers.record("left")?.state.is, "AwaitingHost", "the Pending write was seen within the grace");
    await eventually(() => containers.record("lost")?.state.is === "Unattached" && containers.record("left")?.state.is === "Unattached", 30_000, "both unattached after the grace");
    const detached = (name: string) => events.recent({ kind: "Container", name }).filter((e) => e.reason === "Detached").map((e) => `${e.type}: ${e.message}`);
    assert.deepEqual(detached("lost"), ['Warning: process "proc" did not attach again after its server was lost']);
    assert.deepEqual(detached("left"), [], "no warning: its server recorded the detach");
    await eventually(async () => (await resources.get("Container", "lost"))?.status?.phase === "Pending", 30_000, "lost shown Pending");
  } finally {
    await containers.stop();
    messaging.stop("test over");
    await informer.stop();
    await store.close();
  }
});

test("store binder: a binding is written only over the status the scheduler decided on; one that changed meanwhile (the container started on its host) is left as it is, and the scheduler is asked to look again", async () => {
  const store = await openStore({});
  const resources = createResourceStore(store);
  const informer = createInformer({ resources, kinds: ["Container"] });
  await store.txn([], [{ type: "put", key: `${SESSION_RECORDS_PREFIX}a:1/host/h1`, value: Buffer.from(JSON.stringify({ kind: "host", name: "h1", sessionId: "s1", host: { modules: ["echo"], capacity: 0, canSpawn: false } })) }]);
  await resources.create(create(ContainerSchema, { metadata: { name: "c1" }, spec: { module: "echo", function: "ECHO" } }));
  await resources.updateStatus("Container", "c1", (c) => bindingOf(c, "h9"));
  // Between the scheduler's look and its write, the server of h9 starts c1 there.
  const racing: ResourceStore = {
    ...resources,
    updateStatus: async (...args) => {
      await resources.updateStatus("Container", "c1", () => create(ContainerStatusSchema, { phase: "Running", ready: true, host: "h9" }));
      return resources.updateStatus(...args);
    },
  };
  const locator = createSessionLocator({ store, onError: (m) => assert.fail(m) });
  await Promise.all([locator.start(), informer.start()]);
  try {
    const retried: string[] = [];
    const binder = createStoreBinder({ locator, informer, resources: racing, retry: (n) => retried.push(n), onError: (m) => assert.fail(m) });
    assert.equal(binder.bound("c1"), false, "bound to a host no server holds: the scheduler binds it again");
    binder.bind("c1", binder.hosts()[0]!);
    await eventually(() => informer.get("Container", "c1")?.status?.phase === "Running", 30_000, "the start shown");
    await new Promise((r) => setTimeout(r, 200));
    const st = (await resources.get("Container", "c1"))!.status!;
    assert.deepEqual([st.phase, st.host], ["Running", "h9"], "the running container's status is not written over");
    // Skipped, not forgotten: the scheduler is asked to look at it again.
    assert.deepEqual(retried, ["c1"], "a skipped binding is retried");
  } finally {
    locator.stop();
    await informer.stop();
    await store.close();
  }
});
