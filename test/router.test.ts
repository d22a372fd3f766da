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
import { Envelope, type CallAnswer, type FrameSink } from "../src/server/messaging/envelope.js";
import type { Availability, Letter } from "../src/server/messaging/mailbox.js";
import { createRouter, type Router } from "../src/server/messaging/router.js";

/** A worker's stream as the router sees it: it keeps the deliveries written to it. */
class Worker implements FrameSink {
  closed = false;
  frames: ServerFrame[] = [];
  push(frame: ServerFrame): void {
    this.frames.push(frame);
  }
  /** Ids of the deliveries received so far, in order. */
  deliveries(): number[] {
    return this.frames.flatMap((f) => (f.frame.case === "delivery" ? [Number(f.frame.value.id)] : []));
  }
  payloads(): string[] {
    return this.frames.flatMap((f) => (f.frame.case === "delivery" ? [new TextDecoder().decode(f.frame.value.data)] : []));
  }
}

function container(name: string, spec: { concurrency?: number; queueLimit?: number } = {}, labels: Record<string, string> = {}): Container {
  return create(ContainerSchema, { metadata: { name, uid: `uid-${name}`, labels }, spec: { module: "m", function: "f", ...spec } });
}

function ready(link: FrameSink): Availability {
  return { link, ready: true, accepts: "all", notReady: "", refusal: "" };
}

const notReady = (why: string): Availability => ({ link: undefined, ready: false, accepts: "all", notReady: why, refusal: "" });

/** Counts answers, so a test can tell in which order calls were answered. */
let answersGiven = 0;

/** Routes a message and returns what its caller is answered (undefined until answered) and when (nth answer). */
function call(router: Router, target: string, text: string, options: { request?: boolean; timeoutMs?: number } = {}) {
  const answer: { value?: CallAnswer; nth?: number } = {};
  const env: Letter = new Envelope({
    data: new TextEncoder().encode(text),
    contentType: "text/plain",
    expectsReply: options.request ?? false,
    deadline: options.timeoutMs ? Date.now() + options.timeoutMs : 0,
    onAnswer: (a) => {
      answer.value = a;
      answer.nth = ++answersGiven;
    },
  });
  router.route(env, parseTarget(target));
  return answer;
}

function settle(router: Router, link: FrameSink, id: number, error?: { code: Code; message: string }) {
  router.settle(link, create(DeliveryResultSchema, { id: BigInt(id), error }));
}

function newRouter(): Router {
  return createRouter({ events: createEventRecorder() });
}

const tick = () => new Promise((r) => setImmediate(r));

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
