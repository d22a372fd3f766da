/**
 * The router's directory and its service routes, in memory: which containers a service routes
 * to, in which order, how each strategy picks among them, and when the cached endpoint lists are
 * recomputed. (The router's tests reach these through the router; these pin what each promises.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { parseTarget } from "../src/api/target.js";
import { ContainerSchema, ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { createDirectory, isReady, type Directory } from "../src/server/messaging/directory.js";
import { Mailbox } from "../src/server/messaging/mailbox.js";
import { ServiceRoute } from "../src/server/messaging/service-route.js";

const open = { closed: false, push: () => {} };

function container(name: string, labels: Record<string, string> = {}, uid = `uid-${name}`) {
  return create(ContainerSchema, { metadata: { name, uid, labels }, spec: {} });
}

function service(spec: { selector?: string; matchLabels?: Record<string, string>; strategy?: string } | undefined, endpoints?: string[], uid = "svc-uid", name = "svc") {
  return create(ServiceSchema, { metadata: { name, uid }, spec, status: endpoints ? { endpoints } : undefined });
}

/** Puts a ready container (an open link) into the directory. */
function readyContainer(d: Directory, name: string, labels: Record<string, string> = {}): Mailbox {
  const { mailbox } = d.putContainer(container(name, labels));
  mailbox.ready = true;
  mailbox.link = open;
  d.topologyChanged();
  return mailbox;
}

/** A mailbox with a given load (deliveries in flight, messages waiting), for pick(). */
function loaded(name: string, inflight: number, waiting: number): Mailbox {
  const m = new Mailbox(name, `uid-${name}`);
  for (let i = 0; i < inflight; i++) m.inflight.add({} as never);
  Object.defineProperty(m.inbox, "live", { value: waiting });
  return m;
}

test("a mailbox is ready only when marked ready with a stream that is open", () => {
  const m = new Mailbox("m", "u");
  assert.equal(isReady(m), false, "fresh");
  m.link = open;
  assert.equal(isReady(m), false, "a stream but not ready");
  m.ready = true;
  assert.equal(isReady(m), true);
  m.link = { closed: true, push: () => {} };
  assert.equal(isReady(m), false, "its stream closed");
  m.link = undefined;
  assert.equal(isReady(m), false, "no stream");
});

test("a service selects by glob and by labels, both when both are given; an empty selector selects nothing", () => {
  const a = new Mailbox("web-1", "u1");
  a.labels = { app: "web", tier: "front" };
  const b = new Mailbox("db-1", "u2");
  b.labels = { app: "db" };
  const glob = new ServiceRoute("svc", "u", service({ selector: "web-*" }));
  assert.deepEqual([glob.selects(a), glob.selects(b)], [true, false]);
  const labels = new ServiceRoute("svc", "u", service({ matchLabels: { app: "web" } }));
  assert.deepEqual([labels.selects(a), labels.selects(b)], [true, false]);
  const both = new ServiceRoute("svc", "u", service({ selector: "web-*", matchLabels: { tier: "back" } }));
  assert.equal(both.selects(a), false, "the glob matches, the labels do not");
  assert.equal(new ServiceRoute("svc", "u", service({})).selects(a), false, "empty selector");
  // A Service stored without spec or status selects nothing and publishes nothing.
  const bare = new ServiceRoute("svc", "u", create(ServiceSchema, { metadata: { name: "svc" } }));
  assert.equal(bare.selects(a), false);
  assert.deepEqual(bare.statusEndpoints, []);
  assert.equal(bare.strategy, "round-robin");
  // A glob is a glob only: a leading "!" does not negate it.
  assert.equal(new ServiceRoute("svc", "u", service({ selector: "!db-*" })).selects(a), false);
});

test("a service routes to what it selects and to what its status publishes", () => {
  const s = new ServiceRoute("svc", "u", service({ selector: "web-*" }, ["other"]));
  assert.equal(s.routesTo(new Mailbox("web-1", "u1")), true);
  assert.equal(s.routesTo(new Mailbox("other", "u2")), true);
  assert.equal(s.routesTo(new Mailbox("third", "u3")), false);
});

test("strategies: the spec's random or least-in-flight, anything else round-robin", () => {
  const strategy = (s: string | undefined) => new ServiceRoute("svc", "u", service({ selector: "*", strategy: s })).strategy;
  assert.equal(strategy("random"), "random");
  assert.equal(strategy("least-in-flight"), "least-in-flight");
  assert.equal(strategy("round-robin"), "round-robin");
  assert.equal(strategy(""), "round-robin");
  assert.equal(strategy(undefined), "round-robin");
  // apply() takes a changed spec, and resets the cached endpoints.
  const s = new ServiceRoute("svc", "u", service({ selector: "*" }));
  s.endpointsVersion = 7;
  s.apply(service({ selector: "*", strategy: "random" }, ["x"]));
  assert.deepEqual([s.strategy, s.statusEndpoints, s.endpointsVersion], ["random", ["x"], -1]);
});

test("round-robin takes each endpoint in turn whatever their load, and its cursor wraps before it grows unbounded", () => {
  const s = new ServiceRoute("svc", "u", service({ selector: "*" }));
  const eps = [loaded("a", 5, 5), loaded("b", 0, 0), loaded("c", 1, 0)];
  assert.deepEqual(Array.from({ length: 7 }, () => s.pick(eps)), [0, 1, 2, 0, 1, 2, 0]);
  assert.equal(s.pick([eps[0]!]), 0, "one endpoint");
  s.cursor = 0x3ffffffe;
  s.pick(eps);
  assert.equal(s.cursor, 0x3fffffff, "not wrapped yet");
  s.pick(eps);
  assert.equal(s.cursor, 0, "wrapped past 0x3fffffff");
});

test("random picks every endpoint, in no fixed order, and leaves the rotation alone", () => {
  const s = new ServiceRoute("svc", "u", service({ selector: "*", strategy: "random" }));
  const eps = [loaded("a", 0, 0), loaded("b", 0, 0), loaded("c", 0, 0)];
  const picks = Array.from({ length: 300 }, () => s.pick(eps));
  assert.deepEqual([...new Set(picks)].sort(), [0, 1, 2]);
  assert.notDeepEqual(picks.slice(0, 30), Array.from({ length: 30 }, (_, i) => i % 3), "not the round-robin order");
  assert.equal(s.cursor, 0);
});

test("least-in-flight picks the fewest in flight plus waiting; ties go to the rotation's next", () => {
  const s = new ServiceRoute("svc", "u", service({ selector: "*", strategy: "least-in-flight" }));
  // a: 1 in flight + 5 waiting = 6; b: 2 + 0 = 2.
  assert.equal(s.pick([loaded("a", 1, 5), loaded("b", 2, 0)]), 1);
  // All equal: the rotation decides, as round-robin would.
  const even = [loaded("a", 1, 1), loaded("b", 1, 1), loaded("c", 1, 1)];
  assert.deepEqual(Array.from({ length: 4 }, () => s.pick(even)), [1, 2, 0, 1]);
});

test("the directory resolves a bare name to a container first, then a service; a kind picks only that kind", () => {
  const d = createDirectory();
  const { mailbox } = d.putContainer(container("svc"));
  const { route } = d.putService(service({ selector: "*" }));
  assert.equal(d.resolve(parseTarget("svc")), mailbox);
  assert.equal(d.resolve(parseTarget("service/svc")), route);
  assert.equal(d.resolve(parseTarget("container/svc")), mailbox);
  d.remove(mailbox);
  assert.equal(d.resolve(parseTarget("svc")), route, "no container of that name: the service");
  assert.equal(d.resolve(parseTarget("container/svc")), undefined, "a container target never resolves to a service");
  assert.equal(d.resolve(parseTarget("service/nothing")), undefined);
});

test("a service's endpoints are its ready containers by name; the list is kept until something changes", () => {
  const d = createDirectory();
  const { route } = d.putService(service({ matchLabels: { app: "web" } }));
  readyContainer(d, "web-c", { app: "web" });
  readyContainer(d, "web-a", { app: "web" });
  readyContainer(d, "web-b", { app: "web" });
  const notReady = d.putContainer(container("web-0", { app: "web" })).mailbox;
  d.topologyChanged();
  const first = d.endpointsOf(route);
  assert.deepEqual(first.map((m) => m.name), ["web-a", "web-b", "web-c"]);
  assert.equal(d.endpointsOf(route), first, "nothing changed: the same list");
  // The same container again with the same labels changes nothing.
  d.putContainer(container("web-a", { app: "web" }));
  assert.equal(d.endpointsOf(route), first, "same labels: the same list");
  // New labels of a known container are a change.
  d.putContainer(container("web-b", { app: "db" }));
  assert.deepEqual(d.endpointsOf(route).map((m) => m.name), ["web-a", "web-c"]);
  // So is a container becoming ready, once the router says the topology changed.
  const cached = d.endpointsOf(route);
  notReady.ready = true;
  notReady.link = open;
  assert.equal(d.endpointsOf(route), cached, "not told yet");
  d.topologyChanged();
  assert.deepEqual(d.endpointsOf(route).map((m) => m.name), ["web-0", "web-a", "web-c"]);
});

test("each put, remove and topology change makes the next endpoint list current", () => {
  const d = createDirectory();
  const first = d.putService(service({ selector: "*" }));
  readyContainer(d, "a");
  // A service put after its containers sees them at once.
  const again = d.putService(service({ selector: "*" }));
  assert.equal(again.route, first.route, "the same service: the same route");
  assert.equal(again.replaced, undefined);
  assert.deepEqual(d.endpointsOf(again.route).map((m) => m.name), ["a"]);
  // A new container made ready.
  readyContainer(d, "b");
  assert.deepEqual(d.endpointsOf(again.route).map((m) => m.name), ["a", "b"]);
  // A fresh directory: a service put first, its list read empty, then a container put and made ready.
  const d2 = createDirectory();
  const { route } = d2.putService(service({ selector: "*" }));
  assert.deepEqual(d2.endpointsOf(route), []);
  const { mailbox } = d2.putContainer(container("x"));
  mailbox.ready = true;
  mailbox.link = open;
  d2.topologyChanged();
  assert.deepEqual(d2.endpointsOf(route).map((m) => m.name), ["x"]);
  // A removed container is no endpoint.
  d2.remove(mailbox);
  assert.deepEqual(d2.endpointsOf(route), []);
});

test("a container or service re-created under its name replaces the old one; removing the old one leaves the new", () => {
  const d = createDirectory();
  const old = d.putContainer(container("c", {}, "uid-1")).mailbox;
  const next = d.putContainer(container("c", {}, "uid-2"));
  assert.equal(next.replaced, old);
  d.remove(old);
  assert.equal(d.mailbox("c"), next.mailbox, "a stale remove changes nothing");
  const oldRoute = d.putService(service({ selector: "*" }, undefined, "s-1")).route;
  const nextRoute = d.putService(service({ selector: "*" }, undefined, "s-2"));
  assert.equal(nextRoute.replaced, oldRoute);
  d.remove(oldRoute);
  assert.equal(d.service("svc"), nextRoute.route);
  d.remove(nextRoute.route);
  assert.equal(d.service("svc"), undefined);
});

test("endpoints come sorted by name whatever order their containers came in", () => {
  for (const order of [["e", "d", "c", "b", "a"], ["c", "a", "e", "b", "d"], ["b", "e", "a", "d", "c"]]) {
    const d = createDirectory();
    const { route } = d.putService(service({ selector: "*" }));
    for (const name of order) readyContainer(d, name);
    assert.deepEqual(d.endpointsOf(route).map((m) => m.name), ["a", "b", "c", "d", "e"], `put in the order ${order.join(",")}`);
  }
});

test("a list computed before a label change is not served after it, even when another service is put next", () => {
  const d = createDirectory();
  const { route } = d.putService(service({ matchLabels: { app: "web" } }, undefined, "s-web", "web"));
  readyContainer(d, "a", { app: "db" });
  assert.deepEqual(d.endpointsOf(route), []);
  d.putContainer(container("a", { app: "web" }));
  d.putService(service({ selector: "x-*" }, undefined, "s-other", "other"));
  assert.deepEqual(d.endpointsOf(route).map((m) => m.name), ["a"]);
});
