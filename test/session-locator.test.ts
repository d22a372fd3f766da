/**
 * The session locator over a real etcd: which server holds each host's and attached process's
 * session, as the servers' records under their leases say, followed as they change.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClusterMember, type ClusterMember } from "../src/server/cluster/cluster-member.js";
import { createSessionLocator } from "../src/server/cluster/session-locator.js";
import { openStore } from "../src/server/store/open-store.js";
import { startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";

const member = (endpoints: string[], advertise: string): ClusterMember =>
  createClusterMember({ endpoints, advertise, leaseTtlSeconds: 2, onLeadership: () => {}, onError: () => {} });

test("session locator: follows which server holds each host and attached process; a host that moved is where its newer record says, an unproven session takes no name over; a server that leaves takes its records along", async () => {
  const etcd = await startEtcd();
  const store = await openStore({ url: etcd.storeUrl });
  const a = member(etcd.endpoints, "127.0.0.1:1");
  const b = member(etcd.endpoints, "127.0.0.1:2");
  const c = member(etcd.endpoints, "127.0.0.1:3");
  const errors: string[] = [];
  const locator = createSessionLocator({ store, onError: (m) => errors.push(m) });
  let changes = 0;
  /** What each change touched ("*": a listing, anything may have changed). */
  const touched: string[] = [];
  locator.onChange((t) => {
    changes++;
    touched.push(t ? t.map((x) => `${x.kind}/${x.name}`).join(",") : "*");
  });
  try {
    await Promise.all([a.start(), b.start(), c.start()]);
    await locator.start();
    assert.equal(locator.host("h1"), undefined, "no session recorded yet");
    const offer = { modules: ["echo"], capacity: 3, canSpawn: false };
    a.sessionStarted({ kind: "host", name: "h1", sessionId: "s1", host: offer });
    a.sessionStarted({ kind: "attached", name: "c1", sessionId: "s2" });
    const h1 = (await eventually(() => locator.host("h1"), 30_000, "host h1 located"))!;
    assert.equal(h1.server, "127.0.0.1:1");
    assert.equal(h1.sessionId, "s1");
    assert.deepEqual(h1.host, offer, "what the host runs comes along, for a scheduler of every server's hosts");
    assert.equal((await eventually(() => locator.attached("c1"), 30_000, "attached c1 located"))?.server, "127.0.0.1:1");
    assert.equal(locator.host("c1"), undefined, "hosts and attached processes are apart");

    // h1 reconnected to server b (showing its credential) while a's record of it is still there:
    // b's, the newer, is in force.
    b.sessionStarted({ kind: "host", name: "h1", sessionId: "s3", host: offer, proven: true });
    await eventually(() => locator.host("h1")?.server === "127.0.0.1:2", 30_000, "h1 on server b");
    assert.deepEqual(locator.hosts().map((h) => `${h.name}@${h.server}`), ["h1@127.0.0.1:2"]);
    // A session on a third server that claims the name without its credential takes nothing over,
    // however new its record: nor would it from an unproven holder (the first claim keeps the name).
    c.sessionStarted({ kind: "host", name: "h1", sessionId: "s6", host: offer });
    c.sessionStarted({ kind: "host", name: "u1", sessionId: "s7", host: offer });
    await eventually(() => locator.own("127.0.0.1:3", "host", "h1"), 30_000, "c's record of h1 seen");
    assert.equal(locator.host("h1")?.server, "127.0.0.1:2", "an unproven record does not take a proven holder's name");
    b.sessionStarted({ kind: "host", name: "u1", sessionId: "s8", host: offer });
    await eventually(() => locator.own("127.0.0.1:2", "host", "u1"), 30_000, "b's record of u1 seen");
    assert.equal(locator.host("u1")?.server, "127.0.0.1:3", "between unproven records, the first claim keeps the name");
    await c.stop();
    await eventually(() => locator.host("u1")?.server === "127.0.0.1:2", 30_000, "u1 on b once c left");
    a.sessionEnded({ kind: "host", name: "h1", sessionId: "s1" });
    b.sessionStarted({ kind: "host", name: "h2", sessionId: "s4", host: offer });
    await eventually(() => locator.hosts().length === 3, 30_000, "h2 located");
    assert.equal(locator.host("h1")?.server, "127.0.0.1:2", "a's old record going leaves b's");

    // A locator started now lists what is there.
    const late = createSessionLocator({ store, onError: (m) => errors.push(m) });
    await late.start();
    assert.deepEqual(late.hosts().map((h) => `${h.name}@${h.server}`), ["h1@127.0.0.1:2", "h2@127.0.0.1:2", "u1@127.0.0.1:2"]);
    assert.equal(late.attached("c1")?.server, "127.0.0.1:1");
    late.stop();

    // Server a leaves: its lease goes, and its attached process's record with it.
    await a.stop();
    await eventually(() => locator.attached("c1") === undefined, 30_000, "a's records gone");
    assert.equal(locator.host("h1")?.server, "127.0.0.1:2");
    assert.ok(changes >= 5, `listeners told of every change (${changes})`);
    // Each change names the sessions it touched (a listing: any), so that a server looks again
    // only at the containers of those hosts and attached processes.
    assert.equal(touched[0], "*", "the first listing");
    const named = new Set(touched.slice(1).flatMap((t) => t.split(",")));
    for (const id of ["host/h1", "attached/c1", "host/u1", "host/h2"]) assert.ok(named.has(id), `a change named ${id}: ${JSON.stringify(touched)}`);
    assert.ok(!named.has("*"), `no relisting meanwhile: ${JSON.stringify(touched)}`);
    assert.deepEqual(errors, []);
  } finally {
    locator.stop();
    await a.stop();
    await b.stop();
    await c.stop();
    await store.close();
    await etcd.stop();
  }
});
