/**
 * The router in memory, through its interface: routing strategies, inbox limits and
 * concurrency, at-least-once sends and at-most-once requests when a worker goes, rerouting
 * when an endpoint stops being ready, and deadlines. Workers are stand-in streams that
 * collect the frames the router writes; nothing else runs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { parseTarget } from "../src/api/target.js";
import { ContainerSchema, ServiceSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { DeliveryResultSchema, type ServerFrame } from "../src/gen/k4s/v1/worker_service_pb.js";
import { createEventRecorder } from "../src/server/event-recorder.js";
import { createMetrics } from "../src/server/metrics.js";
import { quantileMs } from "../src/server/stats/load-counters.js";
import { Envelope, EnvelopeState, type CallAnswer, type FrameSink } from "../src/server/messaging/envelope.js";
import type { Availability, Letter } from "../src/server/messaging/mailbox.js";
import { createRouter, type Router, type RouterOptions } from "../src/server/messaging/router.js";
import type { JournalEntry, RecoveredEntry, SendJournal } from "../src/server/messaging/send-journal.js";
import { MAX_SERVICE_WAITERS } from "../src/server/messaging/service-route.js";
import { SEND_ENDPOINT_WAIT_MS } from "../src/server/messaging/service-routing.js";

/** A worker's stream as the router sees it: it keeps the deliveries written to it. */
class Worker implements FrameSink {
  closed = false;
  /** Whether its peer reads slower than frames come (the router then holds new deliveries back). */
  congested = false;
  /** The stream becomes congested once it holds this many frames. */
  congestAt = Infinity;
  frames: ServerFrame[] = [];
  push(frame: ServerFrame): void {
    this.frames.push(frame);
    if (this.frames.length >= this.congestAt) this.congested = true;
  }
  /** Ids of the deliveries received so far, in order. */
  deliveries(): number[] {
    return this.frames.flatMap((f) => (f.frame.case === "delivery" ? [Number(f.frame.value.id)] : []));
  }
  payloads(): string[] {
    return this.frames.flatMap((f) => (f.frame.case === "delivery" ? [new TextDecoder().decode(f.frame.value.data)] : []));
  }
}

function container(name: string, spec: { concurrency?: number; queueLimit?: number; delivery?: string } = {}, labels: Record<string, string> = {}): Container {
  return create(ContainerSchema, { metadata: { name, uid: `uid-${name}`, labels }, spec: { module: "m", function: "f", ...spec } });
}

function ready(link: FrameSink): Availability {
  return { link, ready: true, accepts: "all", notReady: "", refusal: "" };
}

const notReady = (why: string): Availability => ({ link: undefined, ready: false, accepts: "all", notReady: why, refusal: "" });

/** Counts answers, so a test can tell in which order calls were answered. */
let answersGiven = 0;

/** Routes a message and returns what its caller is answered (undefined until answered) and when (nth answer). */
function call(router: Router, target: string, text: string, options: { request?: boolean; timeoutMs?: number; sender?: string } = {}) {
  const answer: { value?: CallAnswer; nth?: number; env?: Letter } = {};
  const env: Letter = new Envelope({
    data: new TextEncoder().encode(text),
    contentType: "text/plain",
    expectsReply: options.request ?? false,
    sender: options.sender,
    deadline: options.timeoutMs ? Date.now() + options.timeoutMs : 0,
    onAnswer: (a) => {
      answer.value = a;
      answer.nth = ++answersGiven;
    },
  });
  answer.env = env;
  router.route(env, parseTarget(target));
  return answer;
}

/** Whether a call was answered (a function, so that a check does not narrow the answer's type). */
function answered(a: { value?: CallAnswer }): boolean {
  return a.value !== undefined;
}

function settle(router: Router, link: FrameSink, id: number, error?: { code: Code; message: string }) {
  router.settle(link, create(DeliveryResultSchema, { id: BigInt(id), error }));
}

function newRouter(options: Partial<RouterOptions> = {}): Router {
  return createRouter({ events: createEventRecorder(), ...options });
}

const tick = () => new Promise((r) => setImmediate(r));

/**
 * The lookup of a call already answered (given up on, expired) ends with its container found:
 * the call is not queued there, and its caller is not answered again.
 */
async function lookupEnds(router: Router, name: string, found: () => void) {
  const answersBefore = answersGiven;
  router.upsertContainer(container(name));
  found();
  await tick();
  assert.equal(router.load(name)?.queued, 0, "the call was not queued after its lookup");
  assert.equal(answersGiven, answersBefore, "answered once");
}

/** A router with one container ready on a stand-in worker. */
function routerWithWorker(name: string, spec: Parameters<typeof container>[1] = {}, options: Partial<RouterOptions> = {}) {
  const router = newRouter(options);
  router.upsertContainer(container(name, spec));
  const w = new Worker();
  router.setAvailability(name, ready(w));
  return { router, w };
}

test("round-robin goes through the ready endpoints in name order; least-in-flight picks the least loaded", async () => {
  const router = newRouter();
  const workers = new Map<string, Worker>();
  for (const name of ["b", "a", "c"]) {
    router.upsertContainer(container(name, { concurrency: 100 }, { app: "x" }));
    const w = new Worker();
    workers.set(name, w);
    router.setAvailability(name, ready(w));
  }
  router.upsertService(create(ServiceSchema, { metadata: { name: "rr", uid: "s1" }, spec: { matchLabels: { app: "x" } } }));
  for (let i = 0; i < 6; i++) call(router, "service/rr", `m${i}`);
  assert.deepEqual(workers.get("a")!.payloads(), ["m0", "m3"]);
  assert.deepEqual(workers.get("b")!.payloads(), ["m1", "m4"]);
  assert.deepEqual(workers.get("c")!.payloads(), ["m2", "m5"]);

  router.upsertService(create(ServiceSchema, { metadata: { name: "lif", uid: "s2" }, spec: { matchLabels: { app: "x" }, strategy: "least-in-flight" } }));
  // a and b finish their work; c still has two unsettled: new messages avoid c.
  for (const name of ["a", "b"]) for (const id of workers.get(name)!.deliveries()) settle(router, workers.get(name)!, id);
  for (let i = 0; i < 4; i++) call(router, "service/lif", `l${i}`);
  assert.equal(workers.get("c")!.payloads().filter((p) => p.startsWith("l")).length, 0);
  assert.equal(workers.get("a")!.payloads().filter((p) => p.startsWith("l")).length, 2);
  assert.equal(workers.get("b")!.payloads().filter((p) => p.startsWith("l")).length, 2);
  router.stop("done");
});

test("an inbox takes queueLimit messages beyond those in flight, and at most concurrency go out at once", () => {
  const router = newRouter();
  router.upsertContainer(container("box", { concurrency: 2, queueLimit: 3 }));
  const w = new Worker();
  router.setAvailability("box", ready(w));
  const answers = Array.from({ length: 6 }, (_, i) => call(router, "box", `m${i}`));
  assert.deepEqual(w.payloads(), ["m0", "m1"], "two in flight");
  assert.deepEqual(
    answers.map((a) => a.value?.code),
    [0, 0, 0, 0, 0, Code.ResourceExhausted],
    "three wait, the sixth is refused",
  );
  assert.match(answers[5]!.value!.message, /inbox of container "box" is full \(queueLimit 3\)/);
  settle(router, w, w.deliveries()[0]!);
  assert.deepEqual(w.payloads(), ["m0", "m1", "m2"], "a settled delivery makes room for the next, in order");
  router.stop("done");
});

test("an inbox holds at most maxInboxBytes of payload: past it a send is refused RESOURCE_EXHAUSTED naming the bound; an empty inbox takes one larger message", () => {
  const router = createRouter({ events: createEventRecorder(), maxInboxBytes: 100 });
  router.upsertContainer(container("heavy", { queueLimit: 1000 }));
  const kb = (n: number) => "x".repeat(n);
  // Nobody serves it: everything waits in the inbox.
  const answers = [call(router, "heavy", kb(40)), call(router, "heavy", kb(40)), call(router, "heavy", kb(40)), call(router, "heavy", kb(20))];
  assert.deepEqual(
    answers.map((a) => a.value?.code),
    [0, 0, Code.ResourceExhausted, 0],
    "80 of 100 bytes wait; 40 more would pass the bound, 20 more fit",
  );
  assert.match(answers[2]!.value!.message, /inbox of container "heavy" is full: 80 B waiting, 40 B more would pass the server's maxInboxBytes of 100 B \(100 bytes\)/);
  assert.equal(answers[2]!.value!.container, "", "refused: no container took it");
  router.upsertContainer(container("big"));
  assert.equal(call(router, "big", kb(500)).value?.code, 0, "an empty inbox takes a message larger than the bound");
  assert.equal(call(router, "big", kb(1)).value?.code, Code.ResourceExhausted, "and then nothing more");
  // Taking messages out makes room again.
  const w = new Worker();
  router.upsertContainer(container("heavy", { queueLimit: 1000, concurrency: 10 }));
  router.setAvailability("heavy", ready(w));
  assert.equal(w.deliveries().length, 3);
  assert.equal(call(router, "heavy", kb(90)).value?.code, 0, "the inbox is empty again once delivered");
  router.stop("done");
});

test("calls waiting for an endpoint of a service are bounded by maxInboxBytes too", () => {
  const router = createRouter({ events: createEventRecorder(), maxInboxBytes: 100 });
  router.upsertService(create(ServiceSchema, { metadata: { name: "svc", uid: "uid-svc" }, spec: { selector: "never-*" } }));
  const first = call(router, "svc", "y".repeat(60), { request: true, timeoutMs: 60_000 });
  const second = call(router, "svc", "y".repeat(60), { request: true, timeoutMs: 60_000 });
  assert.equal(first.value, undefined, "the first waits for an endpoint");
  assert.equal(second.value?.code, Code.ResourceExhausted);
  assert.match(second.value!.message, /calls waiting for an endpoint of service "svc" is full: .*maxInboxBytes of 100 B/);
  assert.equal(second.value!.container, "");
  router.stop("done");
});

test("at most MAX_SERVICE_WAITERS calls wait for an endpoint of one service; a deleted service fails them naming no container", () => {
  const router = newRouter();
  router.upsertService(create(ServiceSchema, { metadata: { name: "busy", uid: "uid-busy" }, spec: { selector: "never-*" } }));
  const waiting = Array.from({ length: MAX_SERVICE_WAITERS }, () => call(router, "service/busy", "w", { request: true, timeoutMs: 60_000 }));
  assert.ok(waiting.every((a) => !answered(a)), "all of them wait");
  const over = call(router, "service/busy", "one more", { request: true, timeoutMs: 60_000 });
  assert.equal(over.value?.code, Code.ResourceExhausted);
  assert.equal(over.value?.message, `too many calls wait for an endpoint of service "busy" (limit ${MAX_SERVICE_WAITERS})`);
  router.removeService("busy", "uid-busy");
  assert.deepEqual([waiting[0]!.value?.code, waiting[0]!.value?.message, waiting[0]!.value?.container], [Code.Unavailable, 'service "busy" was deleted', ""]);
  router.stop("done");
});

test("a call through a service whose every ready endpoint is full is refused naming the full inbox (one endpoint) or the count of them", () => {
  for (const names of [["only"], ["full1", "full2"]]) {
    const router = newRouter();
    for (const name of names) {
      router.upsertContainer(container(name, { queueLimit: 1 }, { app: "f" }));
      router.setAvailability(name, ready(new Worker()));
    }
    router.upsertService(create(ServiceSchema, { metadata: { name: "fs", uid: "uid-fs" }, spec: { matchLabels: { app: "f" } } }));
    // Each endpoint takes one in flight and one queued.
    for (let i = 0; i < 2 * names.length; i++) assert.equal(call(router, "service/fs", `m${i}`).value?.code, 0);
    const refused = call(router, "service/fs", "no room", { request: true, timeoutMs: 60_000 });
    assert.equal(refused.value?.code, Code.ResourceExhausted, names.join());
    if (names.length === 1) assert.match(refused.value!.message, /^inbox of container "only" is full/);
    else assert.equal(refused.value!.message, 'every endpoint of service "fs" has a full inbox (2 endpoints)');
    router.stop("done");
  }
});

test("waiting for a service endpoint: a send waits at most its own deadline or 30 s, a request keeps its deadline, an accepted send moved there waits with none", async () => {
  const router = newRouter();
  router.upsertService(create(ServiceSchema, { metadata: { name: "later", uid: "uid-later" }, spec: { matchLabels: { app: "later" } } }));
  const before = Date.now();
  const send = call(router, "service/later", "s");
  const request = call(router, "service/later", "r", { request: true, timeoutMs: 120_000 });
  assert.ok(send.env!.deadline >= before + SEND_ENDPOINT_WAIT_MS && send.env!.deadline <= Date.now() + SEND_ENDPOINT_WAIT_MS, "a send with no deadline waits 30 s");
  assert.ok(request.env!.deadline >= before + 120_000, "a request keeps its own deadline");
  const short = call(router, "service/later", "soon", { timeoutMs: 20 });
  const giveUp = Date.now() + 10_000;
  while (!short.value && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 5));
  assert.equal(short.value?.code, Code.Unavailable, "a send's own shorter deadline bounds its wait");
  assert.equal(short.value.message, 'no endpoint of service "later" became ready before the deadline');
  assert.ok(!answered(send) && !answered(request));

  // An accepted send moved out of an endpoint that ended waits at the service for as long as it takes.
  router.upsertService(create(ServiceSchema, { metadata: { name: "moved", uid: "uid-moved" }, spec: { matchLabels: { app: "moved" } } }));
  router.upsertContainer(container("m1", { concurrency: 1 }, { app: "moved" }));
  const w1 = new Worker();
  router.setAvailability("m1", ready(w1));
  call(router, "service/moved", "in flight");
  const accepted = call(router, "service/moved", "queued");
  assert.deepEqual([accepted.value?.code, router.load("m1")?.queued], [0, 1]);
  router.setAvailability("m1", { link: w1, ready: false, accepts: "sends", notReady: "completed", refusal: 'container "m1" has ended' });
  assert.equal(accepted.env!.state, EnvelopeState.Waiting, "moved to the service");
  assert.equal(accepted.env!.deadline, 0, "accepted: it must not expire");
  router.upsertContainer(container("m2", {}, { app: "moved" }));
  const w2 = new Worker();
  router.setAvailability("m2", ready(w2));
  await tick();
  assert.deepEqual(w2.payloads(), ["queued"]);
  router.stop("done");
});

test("a worker that goes: sends come back first in line (at least once), requests fail UNAVAILABLE (at most once)", () => {
  const router = newRouter();
  router.upsertContainer(container("w", { concurrency: 3 }));
  const first = new Worker();
  router.setAvailability("w", ready(first));
  call(router, "w", "s1");
  const req = call(router, "w", "r1", { request: true, timeoutMs: 60_000 });
  call(router, "w", "s2");
  call(router, "w", "s3");
  assert.deepEqual(first.payloads(), ["s1", "r1", "s2"]);
  first.closed = true;
  router.linkLost(first, `its host "h1"`);
  assert.equal(req.value?.code, Code.Unavailable);
  assert.match(req.value!.message, /container "w" lost its host "h1" while handling the request/);
  const second = new Worker();
  router.setAvailability("w", ready(second));
  assert.deepEqual(second.payloads(), ["s1", "s2", "s3"], "the sends, in their order, and the request not again");
  // A worker that says it did not process a send (UNAVAILABLE) gets it again, later.
  settle(router, second, second.deliveries()[0]!, { code: Code.Unavailable, message: "not mine" });
  assert.equal(router.load("w")?.queued, 1);
  router.stop("done");
});

test("service messages move to another endpoint when theirs stops being ready; an ended container refuses requests", async () => {
  const router = newRouter();
  for (const name of ["e1", "e2"]) router.upsertContainer(container(name, {}, { app: "e" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "svc", uid: "s" }, spec: { matchLabels: { app: "e" } } }));
  const w1 = new Worker();
  router.setAvailability("e1", ready(w1));
  for (let i = 0; i < 3; i++) call(router, "service/svc", `m${i}`);
  assert.deepEqual(w1.payloads(), ["m0"], "one in flight, two queued at e1");
  const w2 = new Worker();
  router.setAvailability("e2", ready(w2));
  router.setAvailability("e1", notReady("back-off 200 ms before restarting"));
  assert.deepEqual(w2.payloads(), ["m1"], "the queued ones moved to e2 (concurrency 1: one in flight)");
  assert.equal(router.load("e2")?.queued, 1);
  assert.equal(router.load("e1")?.queued, 0);

  router.setAvailability("e2", { link: undefined, ready: false, accepts: "sends", notReady: "completed", refusal: `container "e2" has ended (Succeeded) and takes no more requests` });
  const refused = call(router, "container/e2", "r", { request: true, timeoutMs: 60_000 });
  assert.equal(refused.value?.code, Code.Unavailable);
  assert.match(refused.value!.message, /has ended \(Succeeded\)/);
  router.stop("done");
});

test("deadlines: requests expire in deadline order, saying why the container did not answer", async () => {
  const router = newRouter();
  router.upsertContainer(container("slow"));
  router.setAvailability("slow", notReady('no worker host serves module "m": none connected'));
  const later = call(router, "slow", "later", { request: true, timeoutMs: 400 });
  const sooner = call(router, "slow", "sooner", { request: true, timeoutMs: 20 });
  while (!later.value || !sooner.value) await new Promise((r) => setTimeout(r, 5));
  assert.ok(sooner.nth! < later.nth!, "the earlier deadline expired first");
  assert.equal(sooner.value.code, Code.DeadlineExceeded);
  assert.match(sooner.value.message, /waiting for container "slow" to answer; it is not ready: no worker host serves module "m"/);
  // A send to a service with no ready endpoint waits, then is refused at its deadline.
  router.upsertService(create(ServiceSchema, { metadata: { name: "none", uid: "n" }, spec: { selector: "zzz-*" } }));
  const waiting = call(router, "service/none", "x", { request: true, timeoutMs: 10 });
  while (!waiting.value) await tick();
  assert.equal(waiting.value.code, Code.Unavailable);
  assert.match(waiting.value.message, /no endpoint of service "none" became ready before the deadline/);
  router.stop("done");
});

test("a deleted container's messages go to the other endpoints of their service; direct requests fail", () => {
  const router = newRouter();
  for (const name of ["d1", "d2"]) router.upsertContainer(container(name, {}, { app: "d" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "dsvc", uid: "s" }, spec: { matchLabels: { app: "d" } } }));
  const w1 = new Worker();
  router.setAvailability("d1", ready(w1));
  call(router, "service/dsvc", "via-service-1");
  call(router, "service/dsvc", "via-service-2");
  const direct = call(router, "container/d1", "direct", { request: true, timeoutMs: 60_000 });
  const w2 = new Worker();
  router.setAvailability("d2", ready(w2));
  router.removeContainer("d1", "uid-d1");
  // The one in flight comes back first (at least once), then the queued one, in order.
  assert.deepEqual(w2.payloads(), ["via-service-1"], "the service messages moved on");
  assert.equal(router.load("d2")?.queued, 1);
  assert.equal(direct.value?.code, Code.Unavailable);
  assert.match(direct.value!.message, /container "d1" was deleted/);
  router.stop("done");
});

test("a deleted container's accepted sends that no endpoint takes are a MessagesDropped warning naming how many; moved ones are not", () => {
  const events = createEventRecorder();
  const router = newRouter({ events });
  const dropped = () => events.recent({ kind: "Container" }).filter((e) => e.reason === "MessagesDropped").map((e) => [e.type, e.name, e.message]);
  // Sent to the container itself, queued (no worker yet), so accepted: deleting it drops them.
  router.upsertContainer(container("solo"));
  const sends = ["a", "b"].map((t) => call(router, "container/solo", t));
  assert.deepEqual(sends.map((x) => x.value?.code), [0, 0], "both sends were accepted");
  const request = call(router, "container/solo", "r", { request: true, timeoutMs: 60_000 });
  router.removeContainer("solo", "uid-solo");
  assert.equal(request.value?.code, Code.Unavailable, "a request is answered itself");
  assert.deepEqual(dropped(), [["Warning", "solo", "2 accepted sends still queued were dropped: the container was deleted and no endpoint of a service took them"]]);

  // Through a service with another endpoint: the send moves there, nothing is dropped.
  for (const name of ["e1", "e2"]) router.upsertContainer(container(name, {}, { app: "e" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "esvc", uid: "es" }, spec: { matchLabels: { app: "e" } } }));
  router.setAvailability("e1", ready(new Worker()));
  assert.equal(call(router, "service/esvc", "moves").value?.code, 0);
  const w2 = new Worker();
  router.setAvailability("e2", ready(w2));
  router.removeContainer("e1", "uid-e1");
  assert.deepEqual(w2.payloads(), ["moves"], "the send went on to the other endpoint");
  assert.equal(dropped().filter(([, name]) => name === "e1").length, 0, "nothing dropped, nothing told");
  // Its service gone first, a send through it has nowhere to go either.
  router.upsertContainer(container("lone", {}, { app: "l" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "lsvc", uid: "ls" }, spec: { matchLabels: { app: "l" } } }));
  router.setAvailability("lone", ready(new Worker()));
  const lone = call(router, "service/lsvc", "via-lsvc");
  assert.equal(lone.value?.code, 0);
  router.removeService("lsvc", "ls");
  router.removeContainer("lone", "uid-lone");
  assert.equal(dropped().filter(([, name]) => name === "lone").length, 1, "a send whose service went first is dropped and told");
  router.stop("done");
});

test("a router that stops drops accepted sends with a MessagesDropped warning per container saying how many (journaled ones stay in their journal); requests and sends never accepted are answered", () => {
  const events = createEventRecorder();
  const router = newRouter({ events });
  const dropped = () =>
    events
      .recent({})
      .filter((e) => e.reason === "MessagesDropped")
      .map((e) => [e.kind, e.name, e.message]);
  // Queued at a container with no worker: accepted.
  router.upsertContainer(container("q"));
  assert.deepEqual(["a", "b", "c"].map((t) => call(router, "container/q", t).value?.code), [0, 0, 0]);
  // One in a worker's hands, unacknowledged, and one waiting behind it.
  const { w } = (() => {
    router.upsertContainer(container("busy"));
    const w = new Worker();
    router.setAvailability("busy", ready(w));
    return { w };
  })();
  call(router, "container/busy", "held");
  call(router, "container/busy", "behind");
  assert.deepEqual(w.payloads(), ["held"]);
  // Waiting for an endpoint of a service (none ready yet): not answered, so its caller hears of it.
  router.upsertContainer(container("ep", {}, { app: "s" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "svc", uid: "s1" }, spec: { matchLabels: { app: "s" } } }));
  const waiting = call(router, "service/svc", "w");
  // Accepted through the service by an endpoint whose worker then went: they wait for it there.
  const epWorker = new Worker();
  router.setAvailability("ep", ready(epWorker));
  assert.deepEqual(["w1", "w2"].map((t) => call(router, "service/svc", t).value?.code), [0, 0]);
  router.setAvailability("ep", { link: undefined, ready: false, accepts: "all", notReady: "restarting", refusal: "" });
  router.release("ep", "its worker restarts");
  const request = call(router, "container/q", "r", { request: true, timeoutMs: 60_000 });
  // A journaled send, accepted: it stays in the journal for whoever delivers the container next.
  const journaled = call(router, "container/q", "j");
  journaled.env!.journalKey = "k4s/journal/q/1";
  router.stop("server is stopping");
  assert.equal(request.value?.code, Code.Unavailable, "a request is answered");
  assert.equal(waiting.value?.code, Code.Unavailable, "a send never accepted (it waited for an endpoint) is told it failed");
  console.log(JSON.stringify([...router.loads()]));
  assert.deepEqual(dropped(), [
    ["Container", "q", "3 accepted sends that no worker acknowledged were dropped: server is stopping"],
    ["Container", "busy", "2 accepted sends that no worker acknowledged were dropped: server is stopping"],
    ["Container", "ep", "2 accepted sends that no worker acknowledged were dropped: server is stopping"],
  ]);
});

test("an unknown target is looked up in the store first; still unknown it is NOT_FOUND naming what was asked for", async () => {
  const plain = newRouter();
  assert.equal(call(plain, "container/nope", "x", { request: true, timeoutMs: 60_000 }).value?.message, 'no container named "nope"');
  assert.equal(call(plain, "service/nope", "x").value?.message, 'no service named "nope"');
  const bare = call(plain, "nope", "x");
  assert.equal(bare.value?.code, Code.NotFound);
  assert.equal(bare.value?.message, 'no container or service named "nope"');
  assert.equal(plain.knows(parseTarget("nope")), false);

  // The store has what the router's watch has not brought yet: the lookup hands it over.
  const looked: string[] = [];
  const router = newRouter({
    lookup: async (target) => {
      looked.push(target.name);
      if (target.name === "late") router.upsertContainer(container("late"));
      if (target.name === "broken") throw new Error("store unreachable");
    },
  });
  const late = call(router, "late", "hello");
  const missing = call(router, "container/ghost", "x", { request: true, timeoutMs: 60_000 });
  const broken = call(router, "broken", "x");
  assert.ok(!answered(late), "nothing is answered before the lookup ends");
  await tick();
  assert.deepEqual(looked, ["late", "ghost", "broken"]);
  assert.equal(late.value?.code, 0, "found by the lookup: accepted");
  assert.equal(router.load("late")?.queued, 1);
  assert.ok(router.knows(parseTarget("container/late")));
  assert.equal(router.knows(parseTarget("service/late")), false);
  assert.equal(missing.value?.code, Code.NotFound);
  assert.equal(missing.value?.message, 'no container named "ghost"');
  assert.equal(broken.value?.code, Code.Unavailable);
  assert.equal(broken.value?.message, 'looking up target "broken" failed: Error: store unreachable');

  // A send's deadline bounds only its wait for a service endpoint, not the lookup.
  const slowStore = newRouter({
    lookup: async (target) => {
      await new Promise((r) => setTimeout(r, 30));
      slowStore.upsertContainer(container(target.name));
    },
  });
  const noDeadline = call(slowStore, "first", "x");
  const shortDeadline = call(slowStore, "second", "y", { timeoutMs: 1 });
  while (!noDeadline.value || !shortDeadline.value) await tick();
  assert.deepEqual([noDeadline.value.code, shortDeadline.value.code], [0, 0], "both accepted once found");
  assert.deepEqual([slowStore.load("first")?.queued, slowStore.load("second")?.queued], [1, 1]);
  slowStore.stop("done");

  // A call given up on while its lookup runs is not routed when the lookup ends.
  let found!: () => void;
  const slow = newRouter({ lookup: () => new Promise<void>((r) => (found = r)) });
  const gone = call(slow, "slowpoke", "x", { request: true, timeoutMs: 60_000 });
  slow.abandon(gone.env!, Code.Canceled, "caller went away");
  assert.equal(gone.value?.code, Code.Canceled);
  await lookupEnds(slow, "slowpoke", found);
  slow.stop("done");
  router.stop("done");
});

test("stop answers every call in flight, queued or waiting for an endpoint UNAVAILABLE, and refuses new ones", () => {
  const router = newRouter();
  router.upsertContainer(container("s"));
  router.upsertService(create(ServiceSchema, { metadata: { name: "empty", uid: "e" }, spec: { selector: "zzz-*" } }));
  const w = new Worker();
  router.setAvailability("s", ready(w));
  const inFlight = call(router, "s", "a", { request: true, timeoutMs: 60_000 });
  const queued = call(router, "s", "b", { request: true, timeoutMs: 60_000 });
  const waiting = call(router, "service/empty", "c", { request: true, timeoutMs: 60_000 });
  assert.deepEqual(w.payloads(), ["a"]);
  assert.deepEqual([inFlight.value, queued.value, waiting.value], [undefined, undefined, undefined]);
  router.stop("server is shutting down");
  for (const a of [inFlight, queued, waiting]) {
    assert.equal(a.value?.code, Code.Unavailable);
    assert.equal(a.value?.message, "server is shutting down");
  }
  assert.equal(inFlight.value?.container, "s", "the container that had it is named");
  assert.equal(waiting.value?.container, "", "no container had the waiting one");
  assert.deepEqual(router.load("s"), { ...router.load("s")!, queued: 0, inFlight: 0 });
  const after = call(router, "s", "d");
  assert.equal(after.value?.code, Code.Unavailable);
  assert.equal(after.value?.message, "server is stopping and did not take this call");
  // A late result of a delivery made before the stop changes nothing.
  settle(router, w, w.deliveries()[0]!);
  assert.equal(inFlight.value?.message, "server is shutting down");
});

test("a container re-created under its name (new uid) fails what waited at the old one; a stale delete changes nothing", () => {
  const router = newRouter();
  router.upsertContainer(container("r"));
  const req = call(router, "r", "old", { request: true, timeoutMs: 60_000 });
  call(router, "r", "send");
  assert.equal(router.load("r")?.queued, 2);
  router.removeContainer("r", "some-other-uid");
  router.removeContainer("unknown", "uid-unknown");
  assert.equal(router.load("r")?.queued, 2, "a delete of another uid is not this container's");
  assert.ok(!answered(req));

  const renewed = create(ContainerSchema, { metadata: { name: "r", uid: "uid-r-2" }, spec: { module: "m", function: "f" } });
  router.upsertContainer(renewed);
  assert.equal(req.value?.code, Code.Unavailable);
  assert.equal(req.value?.message, 'container "r" was deleted');
  assert.equal(router.load("r")?.queued, 0, "the new container starts empty");
  router.removeContainer("r", "uid-r");
  assert.ok(router.load("r"), "deleting the old uid leaves the new container");
  router.removeContainer("r", "uid-r-2");
  assert.equal(router.load("r"), undefined);
  assert.equal(router.knows(parseTarget("r")), false);
  router.stop("done");
});

test("a service re-created or deleted fails the calls waiting for it; a stale delete changes nothing; services() lists published endpoints", () => {
  const router = newRouter();
  const svc = (uid: string, endpoints: string[] = []) =>
    create(ServiceSchema, { metadata: { name: "s", uid }, spec: { selector: "none-*" }, status: { endpoints } });
  router.upsertService(svc("u1", ["a", "b"]));
  assert.deepEqual([...router.services()], [{ name: "s", endpoints: ["a", "b"] }]);
  const first = call(router, "service/s", "1", { request: true, timeoutMs: 60_000 });
  router.upsertService(svc("u1", ["a"]));
  assert.ok(!answered(first), "an update of the same service keeps its waiting calls");
  router.upsertService(svc("u2"));
  assert.equal(first.value?.code, Code.Unavailable);
  assert.equal(first.value?.message, 'service "s" was deleted');
  const second = call(router, "service/s", "2", { request: true, timeoutMs: 60_000 });
  router.removeService("s", "u1");
  router.removeService("other", "u2");
  assert.ok(!answered(second), "a delete of another uid is not this service's");
  assert.ok(router.knows(parseTarget("service/s")));
  router.removeService("s", "u2");
  assert.equal(second.value?.code, Code.Unavailable);
  assert.equal(second.value?.message, 'service "s" was deleted');
  assert.equal(router.knows(parseTarget("service/s")), false);
  assert.deepEqual([...router.services()], []);
  router.stop("done");
});

test("a container that ends takes only sends: its queued requests fail, its service messages move on, its direct sends stay", async () => {
  const router = newRouter();
  for (const name of ["n1", "n2"]) router.upsertContainer(container(name, {}, { app: "n" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "ns", uid: "s" }, spec: { matchLabels: { app: "n" } } }));
  const w1 = new Worker();
  router.setAvailability("n1", ready(w1));
  call(router, "n1", "busy");
  const req = call(router, "n1", "req", { request: true, timeoutMs: 60_000 });
  call(router, "n1", "direct-send");
  call(router, "service/ns", "via-service");
  assert.equal(router.load("n1")?.queued, 3);
  // Repeating the same level changes nothing.
  router.setAvailability("n1", ready(w1));
  assert.equal(router.load("n1")?.queued, 3);
  assert.ok(!answered(req));

  const refusal = 'container "n1" has ended (Failed) and takes no more requests';
  router.setAvailability("n1", { link: undefined, ready: false, accepts: "sends", notReady: "ended", refusal });
  assert.equal(req.value?.code, Code.Unavailable);
  assert.equal(req.value?.message, refusal);
  assert.equal(router.load("n1")?.queued, 1, "the direct send stays; the service message left");
  await tick();
  const w2 = new Worker();
  router.setAvailability("n2", ready(w2));
  await tick();
  assert.deepEqual(w2.payloads(), ["via-service"], "it waited at the service for a ready endpoint");
  // Restarted (a new spec), it takes all again and its direct send goes out.
  router.setAvailability("n1", ready(w1));
  settle(router, w1, w1.deliveries()[0]!);
  assert.deepEqual(w1.payloads(), ["busy", "direct-send"]);
  router.stop("done");
});

test("a lost stream releases only what was on it and makes only its containers not ready, saying why", async () => {
  const router = newRouter();
  const [wa, wb] = [new Worker(), new Worker()];
  router.upsertContainer(container("la"));
  router.upsertContainer(container("lb"));
  router.setAvailability("la", ready(wa));
  router.setAvailability("lb", ready(wb));
  const ra = call(router, "la", "a", { request: true, timeoutMs: 60_000 });
  const rb = call(router, "lb", "b", { request: true, timeoutMs: 60_000 });
  router.linkLost(wa, 'its host "ha"');
  assert.equal(ra.value?.code, Code.Unavailable);
  assert.equal(ra.value?.message, 'container "la" lost its host "ha" while handling the request');
  assert.ok(!answered(rb), "the other stream's request is still in flight");
  assert.equal(router.load("la")?.ready, false);
  assert.equal(router.load("lb")?.ready, true);
  assert.equal(router.load("lb")?.inFlight, 1);
  // The container waits for a worker; a request times out saying why it is not ready.
  const waiting = call(router, "la", "later", { request: true, timeoutMs: 20 });
  while (!waiting.value) await new Promise((r) => setTimeout(r, 5));
  assert.equal(waiting.value.code, Code.DeadlineExceeded);
  assert.match(waiting.value.message, /it is not ready: lost its host "ha"/);
  assert.deepEqual(wa.payloads(), ["a"], "nothing more went to the lost stream");
  router.stop("done");
});

test("release: a container's worker lost what it had in flight; unknown names change nothing", () => {
  const router = newRouter();
  router.upsertContainer(container("rel", { concurrency: 2 }));
  const w = new Worker();
  router.setAvailability("rel", ready(w));
  const req = call(router, "rel", "r", { request: true, timeoutMs: 60_000 });
  call(router, "rel", "s");
  router.release("nobody", "exited");
  router.setAvailability("nobody", ready(w));
  assert.ok(!answered(req));
  // Releasing a container with nothing in flight changes nothing: its idle listeners hear nothing.
  const idle: string[] = [];
  router.onIdle((name) => idle.push(name));
  router.upsertContainer(container("empty"));
  router.setAvailability("empty", ready(new Worker()));
  router.release("empty", "exited");
  assert.deepEqual(idle, []);
  router.release("rel", "exited with code 1");
  assert.equal(req.value?.message, 'container "rel" exited with code 1 while handling the request');
  assert.deepEqual(w.payloads(), ["r", "s", "s"], "the send was handed out again, the request not");
  router.stop("done");
});

test("idle listeners hear when a container's last delivery settles; load counts what each container settled, timed from routing", () => {
  const router = newRouter();
  const idle: string[] = [];
  router.onIdle((name) => idle.push(name));
  router.upsertContainer(container("i1", { concurrency: 2 }));
  router.upsertContainer(container("i2"));
  const w = new Worker();
  router.setAvailability("i1", ready(w));
  const started = performance.now();
  call(router, "i1", "one");
  call(router, "i1", "two", { request: true, timeoutMs: 60_000 });
  const [first, second] = w.deliveries();
  settle(router, w, first!);
  assert.deepEqual(idle, [], "one still in flight");
  settle(router, w, second!, { code: Code.Internal, message: "boom" });
  const elapsed = performance.now() - started;
  assert.deepEqual(idle, ["i1"]);
  const load = router.load("i1")!;
  assert.deepEqual([load.counters.messages, load.counters.requests, load.counters.errors], [2, 1, 1]);
  // Each latency is at most the time since the test routed them (one bucket is ~6 % wide).
  assert.ok(quantileMs(load.counters.latency!, 2, 1) <= elapsed * 1.07 + 0.01, "latency measured from routing");
  assert.deepEqual([...router.loads()].map((l) => [l.name, l.ready]), [["i1", true], ["i2", false]]);

  const quiet = newRouter({ countLoad: false });
  quiet.upsertContainer(container("q"));
  quiet.setAvailability("q", ready(w));
  call(quiet, "q", "x");
  settle(quiet, w, w.deliveries().at(-1)!);
  assert.equal(quiet.load("q")?.counters.messages, 0, "countLoad false counts nothing");
  router.stop("done");
  quiet.stop("done");
});

test("with a request histogram, requests are timed from routing even when load is not counted", async () => {
  const metrics = createMetrics();
  const router = newRouter({ countLoad: false, metrics });
  router.upsertContainer(container("h"));
  const w = new Worker();
  router.setAvailability("h", ready(w));
  const started = performance.now();
  call(router, "h", "r", { request: true, timeoutMs: 60_000 });
  settle(router, w, w.deliveries()[0]!);
  const elapsed = (performance.now() - started) / 1000;
  const values = (await metrics.requestSeconds.get()).values;
  const count = values.find((v) => v.metricName?.endsWith("_count") && v.labels.code === "OK")?.value;
  const sum = values.find((v) => v.metricName?.endsWith("_sum") && v.labels.code === "OK")?.value;
  assert.equal(count, 1);
  assert.ok(sum! <= elapsed, `observed ${sum} s, at most the ${elapsed} s since routing`);
  router.stop("done");
});

test("defaults: one delivery in flight and 1000 waiting per container; a container being deleted takes nothing; a closed stream gets nothing", () => {
  const router = newRouter();
  router.upsertContainer(container("def"));
  const w = new Worker();
  router.setAvailability("def", ready(w));
  const answers = Array.from({ length: 1002 }, (_, i) => call(router, "def", `m${i}`));
  assert.deepEqual(w.payloads(), ["m0"]);
  assert.equal(router.load("def")?.queued, 1000);
  assert.equal(answers[1000]!.value?.code, 0);
  assert.equal(answers[1001]!.value?.code, Code.ResourceExhausted);
  assert.match(answers[1001]!.value!.message, /queueLimit 1000/);
  // A raised limit takes effect at once.
  router.upsertContainer(container("def", { concurrency: 3, queueLimit: 2000 }));
  assert.deepEqual(w.payloads(), ["m0", "m1", "m2"]);

  router.upsertContainer(container("del"));
  router.setAvailability("del", { link: undefined, ready: false, accepts: "none", notReady: "being deleted", refusal: 'container "del" is being deleted' });
  const refused = call(router, "del", "x");
  assert.equal(refused.value?.code, Code.Unavailable);
  assert.equal(refused.value?.message, 'container "del" is being deleted');

  router.upsertContainer(container("cl"));
  const closed = new Worker();
  closed.closed = true;
  router.setAvailability("cl", ready(closed));
  call(router, "cl", "y");
  assert.deepEqual(closed.payloads(), [], "nothing is written to a closed stream");
  assert.equal(router.load("cl")?.queued, 1);
  assert.equal(router.load("cl")?.ready, false);
  router.stop("done");
});

test("service messages left at an endpoint that stopped being ready move when another endpoint becomes ready later", () => {
  const router = newRouter();
  for (const name of ["s1", "s2"]) router.upsertContainer(container(name, {}, { app: "s" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "later", uid: "l" }, spec: { matchLabels: { app: "s" } } }));
  const w1 = new Worker();
  router.setAvailability("s1", ready(w1));
  for (let i = 0; i < 3; i++) call(router, "service/later", `m${i}`);
  const direct = call(router, "container/s1", "direct");
  assert.deepEqual(w1.payloads(), ["m0"]);
  // s1 crashes while no other endpoint is ready: its queued messages have nowhere to go yet.
  router.setAvailability("s1", notReady("back-off 30000 ms before restarting"));
  assert.equal(router.load("s1")?.queued, 3);
  const w2 = new Worker();
  router.setAvailability("s2", ready(w2));
  assert.deepEqual(w2.payloads(), ["m1"], "the service's messages did not wait for s1's back-off");
  assert.equal(router.load("s2")?.queued, 1);
  assert.equal(router.load("s1")?.queued, 1, "the message sent to s1 by name stays there");
  assert.equal(direct.value?.code, 0);
  router.stop("done");
});

test("a request to a container the lifecycle has not placed yet expires saying nothing serves it yet", async () => {
  const router = newRouter();
  router.upsertContainer(container("fresh"));
  const req = call(router, "fresh", "x", { request: true, timeoutMs: 10 });
  while (!req.value) await tick();
  assert.equal(req.value.code, Code.DeadlineExceeded);
  assert.equal(req.value.message, 'deadline exceeded waiting for container "fresh" to answer; it is not ready: no worker serves it yet');
  router.stop("done");
});

test("a congested stream gets no new deliveries until the router hears it drained; only the containers on that stream get theirs", () => {
  const router = newRouter();
  const [w1, w2] = [new Worker(), new Worker()];
  router.upsertContainer(container("c1", { concurrency: 10 }));
  router.upsertContainer(container("c2", { concurrency: 10 }));
  router.setAvailability("c1", ready(w1));
  router.setAvailability("c2", ready(w2));
  w1.congested = true;
  w2.congested = true;
  const sent = ["a", "b", "c"].flatMap((x) => [call(router, "c1", `1${x}`), call(router, "c2", `2${x}`)]);
  assert.deepEqual(sent.map((a) => a.value?.code), [0, 0, 0, 0, 0, 0], "accepted: they wait in their inboxes");
  assert.deepEqual([w1.payloads(), w2.payloads()], [[], []]);
  assert.deepEqual([router.load("c1")?.queued, router.load("c2")?.queued], [3, 3]);

  // Both drain, but the router is told only of w1: c2's messages wait for their own stream's word.
  w1.congested = false;
  w2.congested = false;
  router.linkDrained(w1);
  assert.deepEqual(w1.payloads(), ["1a", "1b", "1c"]);
  assert.deepEqual(w2.payloads(), []);
  router.linkDrained(new Worker());
  assert.deepEqual(w2.payloads(), [], "a stream that serves nothing drains nothing");

  // A stream that congests again part-way stops taking deliveries at once.
  w2.congestAt = 1;
  router.linkDrained(w2);
  assert.deepEqual(w2.payloads(), ["2a"]);
  assert.equal(router.load("c2")?.queued, 2);
  w2.congestAt = Infinity;
  w2.congested = false;
  router.linkDrained(w2);
  assert.deepEqual(w2.payloads(), ["2a", "2b", "2c"]);
  router.stop("done");
});

/**
 * The journal of durable sends in memory: appends wait until the test writes them (or fails
 * them), removes are recorded, and an owner may be made full.
 */
class MemoryJournal implements SendJournal {
  seq = 0;
  /** Appends on their way, oldest first. */
  pending: Array<{ owner: string; entry: JournalEntry; resolve(key: string): void; reject(err: unknown): void }> = [];
  /** Keys written, by owner. */
  written = new Map<string, string[]>();
  removed: string[] = [];
  full = new Set<string>();
  refuses(owner: string, bytes: number, what: string): string | undefined {
    return this.full.has(owner) ? `the journal of ${what} is full (${bytes} B more)` : undefined;
  }
  append(owner: string, entry: JournalEntry): Promise<string> {
    return new Promise((resolve, reject) => this.pending.push({ owner, entry, resolve, reject }));
  }
  /** Writes every pending append; resolves once their callbacks ran. */
  async flush(): Promise<void> {
    for (const p of this.pending.splice(0)) {
      const key = `k${++this.seq}`;
      this.written.set(p.owner, [...(this.written.get(p.owner) ?? []), key]);
      p.resolve(key);
    }
    await tick();
  }
  /** Fails every pending append. */
  async fail(message: string): Promise<void> {
    for (const p of this.pending.splice(0)) p.reject(new Error(message));
    await tick();
  }
  remove(key: string): void {
    this.removed.push(key);
  }
  released: string[] = [];
  release(key: string): void {
    this.released.push(key);
  }
  recover(): Promise<RecoveredEntry[]> {
    return Promise.resolve([]);
  }
  drop(): Promise<void> {
    return Promise.resolve();
  }
  usage(): { messages: number; bytes: number } {
    return { messages: 0, bytes: 0 };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const entry = (key: string, text: string, service = "", sender = "old-sender"): RecoveredEntry => ({
  key,
  data: new TextEncoder().encode(text),
  contentType: "text/plain",
  sender,
  service,
});

/** The attempt numbers and senders of a worker's deliveries. */
function attempts(w: Worker): Array<[string, number, string]> {
  return w.frames.flatMap((f) => (f.frame.case === "delivery" ? [[new TextDecoder().decode(f.frame.value.data), f.frame.value.attempt, f.frame.value.sender] as [string, number, string]] : []));
}

test("a send to a durable container is accepted only once its journal entry is written, and the entry is removed once the worker settled it", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  router.upsertContainer(container("dur", { concurrency: 5, delivery: "durable" }));
  router.upsertContainer(container("mem", { concurrency: 5 }));
  const w = new Worker();
  router.setAvailability("dur", ready(w));
  router.setAvailability("mem", ready(w));
  const send = call(router, "dur", "s1");
  const request = call(router, "dur", "r1", { request: true, timeoutMs: 60_000 });
  const plain = call(router, "mem", "m1");
  assert.ok(!answered(send), "not accepted before it is on disk");
  assert.deepEqual(w.payloads(), ["r1", "m1"], "requests and sends to a memory container are not journaled");
  assert.deepEqual(journal.pending.map((p) => [p.owner, p.entry.service]), [["uid-dur", ""]], "journaled against the container, through no service");
  assert.equal(plain.value?.code, 0);
  await journal.flush();
  assert.equal(send.value?.code, 0);
  assert.equal(send.value?.container, "dur");
  assert.deepEqual(w.payloads(), ["r1", "m1", "s1"]);
  assert.equal(journal.pending.length, 0, "written once");

  // Not processed (UNAVAILABLE): it waits again and keeps its entry; processed: the entry goes.
  const [, , id] = w.deliveries();
  settle(router, w, id!, { code: Code.Unavailable, message: "not mine" });
  assert.deepEqual(journal.removed, []);
  router.setAvailability("dur", ready(w));
  router.linkDrained(w);
  while (w.deliveries().length < 4) await new Promise((r) => setTimeout(r, 20));
  settle(router, w, w.deliveries()[3]!, { code: Code.Internal, message: "handler failed" });
  assert.deepEqual(journal.removed, ["k1"], "a failed handler settles it too");
  settle(router, w, w.deliveries()[0]!);
  assert.deepEqual(journal.removed, ["k1"], "a request has no entry");
  assert.ok(answered(request));
  router.stop("done");
});

test("a durable send that cannot be journaled is refused naming why; one given up on or whose container went while it was written fails and its entry goes", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  router.upsertContainer(container("dur", { delivery: "durable" }));
  journal.full.add("uid-dur");
  const full = call(router, "dur", "x");
  assert.equal(full.value?.code, Code.ResourceExhausted);
  assert.equal(full.value?.message, 'the journal of container "dur" is full (1 B more)');
  assert.equal(journal.pending.length, 0);
  journal.full.clear();

  const broken = call(router, "dur", "y");
  await journal.fail("disk gone");
  assert.equal(broken.value?.code, Code.Unavailable);
  assert.equal(broken.value?.message, 'could not write the send to the journal of container "dur": disk gone');
  assert.equal(router.load("dur")?.queued, 0);

  // Its caller went away while it was written: never accepted, so never delivered, not even after a restart.
  const cancelled = call(router, "dur", "c");
  router.abandon(cancelled.env!, Code.Canceled, "caller went away");
  await journal.flush();
  assert.equal(cancelled.value?.code, Code.Canceled);
  assert.equal(router.load("dur")?.queued, 0);
  assert.deepEqual(journal.removed, ["k1"], "its entry is removed");

  const orphan = call(router, "dur", "z");
  router.removeContainer("dur", "uid-dur");
  await journal.flush();
  assert.equal(orphan.value?.code, Code.Unavailable);
  assert.equal(orphan.value?.message, 'container "dur" was deleted');
  assert.deepEqual(journal.removed, ["k1", "k2"], "its entry is removed");
  router.stop("done");
});

test("a durable send still being journaled when another server takes its container over is accepted and its entry released to that server, not queued here", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  router.upsertContainer(container("dur", { delivery: "durable" }));
  const w = new Worker();
  router.setAvailability("dur", ready(w));
  const sent = call(router, "dur", "late");
  router.setAvailability("dur", notReady("held by another server of the cluster"));
  assert.deepEqual(router.takeBack("dur"), [], "nothing queued yet");
  await journal.flush();
  assert.equal(sent.value?.code, 0, "accepted: it is in the journal");
  assert.equal(router.load("dur")?.queued, 0, "not left in the inbox of a container held elsewhere");
  assert.deepEqual(journal.released, ["k1"], "its entry is released for the new holder to read back");
  assert.deepEqual(journal.removed, []);
  // Taken here again: a send written from then on is queued as before.
  router.setAvailability("dur", ready(w));
  const again = call(router, "dur", "back");
  await journal.flush();
  assert.equal(again.value?.code, 0);
  assert.deepEqual(w.payloads(), ["back"]);
  router.stop("done");
});

test("a durable send through a service is journaled against the service and goes to an endpoint ready once written: not to one that went or stopped being ready meanwhile", async () => {
  for (const meanwhile of ["deleted", "stopped"]) {
    const journal = new MemoryJournal();
    const router = newRouter({ journal });
    for (const name of ["d1", "d2"]) router.upsertContainer(container(name, { delivery: "durable" }, { app: "d" }));
    router.upsertService(create(ServiceSchema, { metadata: { name: "ds", uid: "uid-ds" }, spec: { matchLabels: { app: "d" } } }));
    const [w1, w2] = [new Worker(), new Worker()];
    router.setAvailability("d1", ready(w1));
    journal.full.add("uid-ds");
    const refused = call(router, "service/ds", "no room");
    assert.equal(refused.value?.code, Code.ResourceExhausted);
    assert.equal(refused.value?.message, 'the journal of service "ds" is full (7 B more)');
    journal.full.clear();
    const sent = call(router, "service/ds", "via");
    assert.deepEqual(journal.pending.map((p) => [p.owner, p.entry.service]), [["uid-ds", "ds"]]);
    router.setAvailability("d2", ready(w2));
    if (meanwhile === "deleted") router.removeContainer("d1", "uid-d1");
    else router.setAvailability("d1", notReady("back-off 30000 ms before restarting"));
    await journal.flush();
    assert.equal(sent.value?.code, 0, meanwhile);
    assert.equal(sent.value?.container, "d2", meanwhile);
    assert.deepEqual([w1.payloads(), w2.payloads()], [[], ["via"]], meanwhile);
    assert.equal(router.load("d1")?.queued ?? 0, 0, `nothing waits at the endpoint that ${meanwhile}`);
    assert.equal(journal.pending.length, 0, "not journaled twice");
    settle(router, w2, w2.deliveries()[0]!);
    assert.deepEqual(journal.removed, ["k1"]);
    router.stop("done");
  }
});

test("restore hands journaled sends of an earlier run back: first in line at their container, or through their service, as redeliveries", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  router.upsertContainer(container("dur", { concurrency: 5, delivery: "durable" }));
  const fresh = call(router, "dur", "new");
  await journal.flush();
  assert.equal(fresh.value?.code, 0);
  const old = [entry("old-1", "o1", "", "alice"), entry("old-2", "o2", "", "")];
  assert.equal(router.restore("container", "dur", "uid-other", old), false, "another object of that name");
  assert.equal(router.restore("container", "nobody", "uid-nobody", old), false);
  assert.equal(router.restore("service", "dur", "uid-dur", old), false, "no service of that name");
  assert.equal(router.load("dur")?.queued, 1);
  assert.equal(router.restore("container", "dur", "uid-dur", old), true);
  assert.equal(router.load("dur")?.queued, 3);
  const w = new Worker();
  router.setAvailability("dur", ready(w));
  assert.deepEqual(attempts(w), [["o1", 2, "alice"], ["o2", 2, ""], ["new", 1, ""]], "older than anything accepted since, delivered again");
  assert.ok(
    w.frames.every((f) => f.frame.case !== "delivery" || !f.frame.value.expectsReply),
    "sends: the worker's ack settles them, and a lost worker hands them back",
  );
  for (const id of w.deliveries()) settle(router, w, id);
  assert.deepEqual(journal.removed, ["old-1", "old-2", "k1"]);
  // Restored while its worker is ready: delivered at once, and handed back when the worker is lost.
  assert.equal(router.restore("container", "dur", "uid-dur", [entry("old-3", "o3")]), true);
  assert.deepEqual(w.payloads().slice(3), ["o3"]);
  router.release("dur", "exited");
  assert.deepEqual(w.payloads().slice(3), ["o3", "o3"]);
  settle(router, w, w.deliveries().at(-1)!);
  assert.deepEqual(journal.removed, ["old-1", "old-2", "k1", "old-3"]);
  assert.equal(journal.pending.length, 0, "restored sends are not journaled again");

  // Through a service: they wait for an endpoint (they were accepted long ago), then go to one.
  router.upsertService(create(ServiceSchema, { metadata: { name: "ds", uid: "uid-ds" }, spec: { matchLabels: { app: "d" } } }));
  assert.equal(router.restore("service", "ds", "uid-x", [entry("s-0", "x", "ds")]), false);
  assert.equal(router.restore("service", "ds", "uid-ds", [entry("s-1", "v1", "ds"), entry("s-2", "v2", "ds")]), true);
  router.upsertContainer(container("e1", { concurrency: 5, delivery: "durable" }, { app: "d" }));
  const e = new Worker();
  router.setAvailability("e1", ready(e));
  await tick();
  assert.deepEqual(attempts(e), [["v1", 2, "old-sender"], ["v2", 2, "old-sender"]]);
  assert.equal(journal.pending.length, 0);
  for (const id of e.deliveries()) settle(router, e, id);
  assert.deepEqual(journal.removed.slice(4), ["s-1", "s-2"]);

  // Accepted long ago, a restored send is never refused: with every endpoint full it waits at the service.
  router.upsertContainer(container("e1", { concurrency: 1, queueLimit: 1, delivery: "durable" }, { app: "d" }));
  call(router, "container/e1", "busy");
  call(router, "container/e1", "queued");
  await journal.flush();
  assert.equal(router.load("e1")?.queued, 1);
  assert.equal(router.restore("service", "ds", "uid-ds", [entry("s-3", "v3", "ds")]), true);
  assert.deepEqual(journal.removed.slice(6), [], "not failed");
  // It goes once another endpoint is ready.
  router.upsertContainer(container("e2", { delivery: "durable" }, { app: "d" }));
  const e2 = new Worker();
  router.setAvailability("e2", ready(e2));
  await tick();
  assert.deepEqual(attempts(e2), [["v3", 2, "old-sender"]]);
  router.stop("done");
});

test("a stranded endpoint's messages move per service: to an endpoint of their own service once one is ready or added by its labels", () => {
  const router = newRouter();
  router.upsertContainer(container("a", { concurrency: 1 }, { x: "1", y: "1" }));
  router.upsertContainer(container("b", { concurrency: 5 }, { y: "1" }));
  router.upsertContainer(container("c", { concurrency: 5 }, { other: "1" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "sx", uid: "ux" }, spec: { matchLabels: { x: "1" } } }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "sy", uid: "uy" }, spec: { matchLabels: { y: "1" } } }));
  const wa = new Worker();
  router.setAvailability("a", ready(wa));
  for (const m of ["busy", "x1", "y1", "x2", "y2"]) call(router, `service/${m.startsWith("y") ? "sy" : "sx"}`, m);
  assert.deepEqual(wa.payloads(), ["busy"]);
  router.setAvailability("a", notReady("back-off 30000 ms before restarting"));
  assert.equal(router.load("a")?.queued, 4, "nowhere to go yet");

  // b serves only sy: sy's messages go there, sx's stay at a.
  const wb = new Worker();
  router.setAvailability("b", ready(wb));
  assert.deepEqual(wb.payloads(), ["y1", "y2"]);
  assert.equal(router.load("a")?.queued, 2, "sx's two wait at a");

  // c is ready but in no service; once its labels put it in sx, sx's messages go to it.
  const wc = new Worker();
  router.setAvailability("c", ready(wc));
  assert.deepEqual(wc.payloads(), []);
  router.upsertContainer(container("c", { concurrency: 5 }, { x: "1" }));
  assert.deepEqual(wc.payloads(), ["x1", "x2"]);
  assert.equal(router.load("a")?.queued, 0);
  router.stop("done");
});

test("a journaled send that fails before it was accepted has its journal entry removed (its caller was told it failed)", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  router.upsertContainer(container("d1", { delivery: "durable" }, { app: "d" }));
  router.upsertContainer(container("d2", { queueLimit: 1 }, { app: "d" }));
  router.upsertService(create(ServiceSchema, { metadata: { name: "ds", uid: "uid-ds" }, spec: { matchLabels: { app: "d" } } }));
  const [w1, w2] = [new Worker(), new Worker()];
  router.setAvailability("d1", ready(w1));
  router.setAvailability("d2", ready(w2));
  call(router, "container/d2", "busy");
  call(router, "container/d2", "queued");
  const sent = call(router, "service/ds", "via");
  assert.deepEqual(journal.pending.map((p) => p.owner), ["uid-ds"], "d2 is full: it went to d1, journaled against the service");
  router.removeContainer("d1", "uid-d1");
  await journal.flush();
  assert.equal(sent.value?.code, Code.ResourceExhausted, "the only endpoint left is full");
  assert.match(sent.value!.message, /inbox of container "d2" is full/);
  assert.deepEqual(journal.removed, ["k1"]);
  router.stop("done");
});

test("a request in flight that expires or is given up on is withdrawn from its worker; the caller is answered once, or not at all when it is gone", async () => {
  const router = newRouter();
  const w = new Worker();
  router.upsertContainer(container("busy", { concurrency: 3 }));
  router.setAvailability("busy", ready(w));
  const cancels = () => w.frames.flatMap((f) => (f.frame.case === "cancelDelivery" ? [[Number(f.frame.value.id), f.frame.value.reason]] : []));
  // At its deadline: DEADLINE_EXCEEDED naming the container, and the worker is told why.
  const late = call(router, "busy", "late", { request: true, timeoutMs: 20 });
  assert.equal(w.deliveries().length, 1, "delivered at once");
  while (!late.value) await tick();
  assert.equal(late.value.code, Code.DeadlineExceeded);
  assert.equal(late.value.message, 'deadline exceeded waiting for container "busy" to answer');
  assert.equal(late.value.container, "busy");
  assert.deepEqual(cancels(), [[w.deliveries()[0], 'deadline exceeded waiting for container "busy" to answer']]);
  // Cancelled by its caller: answered with the caller's code and message.
  const cancelled = call(router, "busy", "cancelled", { request: true, timeoutMs: 60_000 });
  router.abandon(cancelled.env!, Code.Canceled, "cancelled by the caller");
  assert.equal(cancelled.value?.code, Code.Canceled);
  assert.equal(cancels()[1]?.[1], "cancelled by the caller");
  // Its caller gone (code 0): no answer, and the worker hears "caller gone".
  const gone = call(router, "busy", "gone", { request: true, timeoutMs: 60_000 });
  router.abandon(gone.env!, 0, "");
  assert.equal(gone.value, undefined);
  assert.equal(cancels()[2]?.[1], "caller gone");
  // Given up on twice, or after it was withdrawn, changes nothing.
  router.abandon(gone.env!, Code.Canceled, "again");
  router.abandon(cancelled.env!, Code.Canceled, "again");
  assert.equal(gone.value, undefined);
  assert.equal(cancels().length, 3);
  // The slots are free: the next three requests go out at once.
  for (let i = 0; i < 3; i++) call(router, "busy", `next-${i}`, { request: true, timeoutMs: 60_000 });
  assert.equal(w.deliveries().length, 6);
  router.stop("done");
});

test("an envelope given up on before it was routed is done, and answered with the caller's code", () => {
  const router = newRouter();
  const got: CallAnswer[] = [];
  const env: Letter = new Envelope({ data: new Uint8Array(), contentType: "", expectsReply: true, deadline: Date.now() + 60_000, onAnswer: (a) => got.push(a) });
  router.abandon(env, Code.Canceled, "never routed");
  assert.equal(env.state, EnvelopeState.Done);
  assert.deepEqual(got.map((a) => [a.code, a.message]), [[Code.Canceled, "never routed"]]);
  router.stop("done");
});

test("a queued request given up on leaves its inbox at once (room for the next); one expiring at a ready container says only that it did not answer", async () => {
  const router = newRouter();
  const w = new Worker();
  router.upsertContainer(container("one", { concurrency: 1, queueLimit: 1 }));
  router.setAvailability("one", ready(w));
  const first = call(router, "one", "first", { request: true, timeoutMs: 60_000 });
  const queued = call(router, "one", "queued", { request: true, timeoutMs: 60_000 });
  assert.equal(w.deliveries().length, 1);
  router.abandon(queued.env!, Code.Canceled, "cancelled by the caller");
  assert.equal(queued.value?.code, Code.Canceled);
  // Its place in the inbox is free now.
  const next = call(router, "one", "next", { request: true, timeoutMs: 20 });
  assert.ok(!answered(next), `refused: ${next.value?.message}`);
  while (!next.value) await tick();
  assert.equal(next.value.code, Code.DeadlineExceeded);
  assert.equal(next.value.message, 'deadline exceeded waiting for container "one" to answer');
  assert.equal(first.value, undefined);
  router.stop("done");
});

test("a request whose deadline passes while its target is still being looked up is answered DEADLINE_EXCEEDED, and not routed when the lookup ends", async () => {
  let found!: () => void;
  const router = newRouter({ lookup: () => new Promise<void>((r) => (found = r)) });
  const lost = call(router, "unseen", "x", { request: true, timeoutMs: 20 });
  assert.ok(!answered(lost), "nothing is answered before the deadline");
  // The deadline queue fires at the deadline; 10 s is the bound of a loaded machine.
  const giveUp = Date.now() + 10_000;
  while (!lost.value && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 5));
  assert.equal(lost.value?.code, Code.DeadlineExceeded, "answered at its deadline, not left waiting for the lookup");
  assert.equal(lost.value.message, "deadline exceeded");
  assert.equal(lost.value.container, "");
  assert.equal(lost.env!.state, EnvelopeState.Done);
  await lookupEnds(router, "unseen", found);
  router.stop("done");
});

test("a worker's error answers a request with its code (UNKNOWN for none); a failed send is a MessageFailed warning, at most one a second per container, counting those not shown", async () => {
  const events = createEventRecorder();
  const { router, w } = routerWithWorker("f", { concurrency: 10 }, { events });
  const failedRequest = call(router, "f", "r1", { request: true, timeoutMs: 60_000 });
  const unknownRequest = call(router, "f", "r2", { request: true, timeoutMs: 60_000 });
  const fine = call(router, "f", "r3", { request: true, timeoutMs: 60_000 });
  for (const text of ["s1", "s2", "s3"]) call(router, "f", text, { sender: "upstream" });
  const [r1, r2, r3, s1, s2, s3] = w.deliveries();
  settle(router, w, r1!, { code: Code.Internal, message: "boom" });
  settle(router, w, r2!, { code: 0 as Code, message: "no code" });
  settle(router, w, r3!);
  assert.deepEqual([failedRequest.value?.code, failedRequest.value?.message, failedRequest.value?.container], [Code.Internal, "boom", "f"]);
  assert.deepEqual([unknownRequest.value?.code, unknownRequest.value?.message], [Code.Unknown, "no code"]);
  assert.equal(fine.value?.code, 0);
  assert.equal(events.recent({ name: "f" }).length, 0, "a failed request is its caller's to hear about, not an event");

  const failures = () => events.recent({ kind: "Container", name: "f" }).map((e) => [e.type, e.reason, e.message]);
  settle(router, w, s1!, { code: Code.Internal, message: "bad input" });
  settle(router, w, s2!, { code: Code.Internal, message: "bad input" });
  settle(router, w, s3!, { code: Code.Internal, message: "bad input" });
  assert.deepEqual(failures(), [["Warning", "MessageFailed", 'handler failed on a message from "upstream": code 13: bad input']]);
  // A second later the next failure is shown, with how many were not.
  await new Promise((r) => setTimeout(r, 1100));
  call(router, "f", "s4");
  settle(router, w, w.deliveries().at(-1)!, { code: 0 as Code, message: "gone wrong" });
  assert.deepEqual(failures().at(-1), ["Warning", "MessageFailed", "handler failed on a message: code 2: gone wrong (2 more failures not shown)"]);
  assert.equal(failures().length, 2);
  // Every failure counts in the container's load, successes do not.
  assert.deepEqual([router.load("f")?.counters.messages, router.load("f")?.counters.errors], [7, 6]);
  router.stop("done");
});

test("deliveries: ids from 1 up, the attempt and the time left to a request's deadline (0 for sends and requests with none, 1 once passed); redeliveries counted; results from another stream dropped", async () => {
  const metrics = createMetrics();
  const { router, w } = routerWithWorker("d", { concurrency: 10 }, { metrics });
  const timed = call(router, "d", "timed", { request: true, timeoutMs: 60_000 });
  call(router, "d", "none", { request: true });
  call(router, "d", "send", { timeoutMs: 60_000 });
  const late: Letter = new Envelope({ data: new Uint8Array(), contentType: "", expectsReply: true, deadline: Date.now() - 5_000 });
  router.route(late, parseTarget("d"));
  const deliveries = w.frames.flatMap((f) => (f.frame.case === "delivery" ? [f.frame.value] : []));
  assert.deepEqual(deliveries.map((d) => d.id), [1n, 2n, 3n, 4n]);
  assert.deepEqual(deliveries.map((d) => d.attempt), [1, 1, 1, 1]);
  const [t, none, send, passed] = deliveries.map((d) => d.timeoutMs);
  assert.ok(t! > 30_000 && t! <= 60_000, `what is left of 60 s: ${t}`);
  assert.deepEqual([none, send, passed], [0, 0, 1]);

  // Only the stream a delivery went to can settle it or make calls under it.
  const other = new Worker();
  assert.equal(router.inflightOf(w, 1), timed.env);
  assert.equal(router.inflightOf(other, 1), undefined);
  assert.equal(router.inflightOf(w, 99), undefined);
  settle(router, other, 1);
  assert.ok(!answered(timed), "a result from another stream is dropped");
  settle(router, w, 1);
  assert.equal(timed.value?.code, 0);
  assert.equal(router.inflightOf(w, 1), undefined, "settled: no longer in flight");

  // A send handed out again counts as a redelivery; first deliveries do not.
  const redeliveries = async () => (await metrics.redeliveries.get()).values[0]?.value ?? 0;
  assert.equal(await redeliveries(), 0);
  router.release("d", "exited");
  const again = w.frames.flatMap((f) => (f.frame.case === "delivery" ? [f.frame.value] : [])).slice(4);
  assert.deepEqual(again.map((d) => [d.id, d.attempt, new TextDecoder().decode(d.data)]), [[5n, 2, "send"]]);
  assert.equal(await redeliveries(), 1);
  router.stop("done");
});

test("a send its worker did not process (UNAVAILABLE) goes back first in line and is offered again a little later, not at once", async () => {
  const { router, w } = routerWithWorker("u");
  call(router, "u", "first");
  call(router, "u", "second");
  settle(router, w, w.deliveries()[0]!, { code: Code.Unavailable, message: "not running here" });
  assert.deepEqual(w.payloads(), ["first"], "not offered again in a tight loop");
  assert.equal(router.load("u")?.queued, 2);
  const giveUp = Date.now() + 10_000;
  while (w.payloads().length < 2 && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(w.payloads(), ["first", "first"], "offered again, ahead of the next");
  router.stop("done");
});

test("a message through a service stays at its only endpoint when that stops being ready, and expires there saying why; one in flight at a deleted container fails naming the delete", async () => {
  const router = newRouter();
  router.upsertService(create(ServiceSchema, { metadata: { name: "solo-svc", uid: "uid-solo" }, spec: { matchLabels: { app: "solo" } } }));
  const w = new Worker();
  router.upsertContainer(container("solo", {}, { app: "solo" }));
  router.setAvailability("solo", ready(w));
  const inFlight = call(router, "service/solo-svc", "first", { request: true, timeoutMs: 60_000 });
  const queued = call(router, "service/solo-svc", "second", { request: true, timeoutMs: 50 });
  router.setAvailability("solo", notReady("back-off 30000 ms before restarting"));
  assert.equal(queued.env!.state, EnvelopeState.Queued, "no other endpoint: it stays where it is");
  assert.equal(router.load("solo")?.queued, 1);
  const giveUp = Date.now() + 10_000;
  while (!queued.value && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 5));
  assert.equal(queued.value?.code, Code.DeadlineExceeded);
  assert.equal(queued.value.message, 'deadline exceeded waiting for container "solo" to answer; it is not ready: back-off 30000 ms before restarting');
  router.removeContainer("solo", "uid-solo");
  assert.equal(inFlight.value?.code, Code.Unavailable);
  assert.equal(inFlight.value.message, 'container "solo" was deleted while handling the request');
  router.stop("done");
});

test("durable sends through a round-robin service land at the endpoint picked, one each; one whose service and endpoint both went while it was written fails naming the service", async () => {
  const journal = new MemoryJournal();
  const router = newRouter({ journal });
  for (const name of ["r1", "r2"]) {
    router.upsertContainer(container(name, { delivery: "durable" }, { app: "r" }));
    router.setAvailability(name, ready(new Worker()));
  }
  router.upsertService(create(ServiceSchema, { metadata: { name: "rs", uid: "uid-rs" }, spec: { matchLabels: { app: "r" }, strategy: "round-robin" } }));
  const landed: string[] = [];
  for (const text of ["a", "b"]) {
    const sent = call(router, "service/rs", text);
    await journal.flush();
    landed.push(sent.value!.container);
  }
  assert.deepEqual(landed.sort(), ["r1", "r2"]);

  const orphan = call(router, "service/rs", "c");
  router.removeService("rs", "uid-rs");
  router.removeContainer("r1", "uid-r1");
  router.removeContainer("r2", "uid-r2");
  await journal.flush();
  assert.equal(orphan.value?.code, Code.Unavailable);
  assert.equal(orphan.value?.message, 'service "rs" was deleted');
  router.stop("done");
});
