/**
 * Durable sends through a Service in a cluster, through real parts: `k4s server` processes over
 * one real etcd, real `k4s worker` hosts, the SDK as the sender. A send through a Service is
 * journaled against the Service by the server that accepted it, naming that server: it is that
 * server's to deliver while it lives (a server starting meanwhile leaves it alone), and the
 * leader reads it back once that server is gone.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { JOURNAL_PREFIX } from "../src/server/messaging/send-journal.js";
import { clusterServer, startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";
import { counts, duplicates, journalKeys, lines, recorderDir } from "./journal-recorder.js";

const at = recorderDir("k4s-cluster-service-journal-");

/** The lease of the tests that assert no duplicates while every server lives. */
const LONG_LEASE = ["--lease-ttl", "5"];

/** Two servers (B leads, A stands by), with no local worker hosts (and `flags`). */
async function twoServers(flags: string[] = []) {
  const cluster = await startCluster(2, { flags: ["--no-local-worker", ...flags] });
  return { cluster, a: cluster.standbys[0] as ClusterServer, b: cluster.leader };
}

/** Whether a server holds a host's session now, as `observer` lists the servers. */
async function holdsHost(observer: ClusterServer, server: ClusterServer, host: string): Promise<boolean> {
  return (await observer.client.servers()).find((s) => s.address === server.address)?.sessions.some((x) => x.name === host) ?? false;
}

/** A container of the recorder, durable, one message at a time. */
const container = (name: string, module: string, params: object) =>
  `kind: Container\nmetadata: {name: ${name}}\nspec: {module: ${module}, function: recorder, concurrency: 1, delivery: durable, parameters: ${JSON.stringify(params)}}\n`;

/**
 * A host on A (B leads) serves the only endpoint of a Service (module `da`, or `o.module`), its
 * worker blocked on the first message; `n` sends through the Service accepted by A wait in A's
 * inbox, journaled by A against the Service. Returns the Service's journal keys.
 */
async function sendsJournaledByA(
  a: ClusterServer,
  b: ClusterServer,
  storeUrl: string,
  o: { service: string; selector: string; endpoint: string; file: string; gate: string; n: number; module?: string },
) {
  await b.client.apply(`kind: Service\nmetadata: {name: ${o.service}}\nspec: {selector: "${o.selector}"}\n`);
  await b.client.apply(container(o.endpoint, o.module ?? "da", { file: o.file, gate: o.gate }));
  await eventually(async () => (await a.client.get("Container", o.endpoint)).status?.ready === true, 60_000, `${o.endpoint} ready`);
  await eventually(async () => (await a.client.get("Service", o.service)).status?.endpoints.includes(o.endpoint), 30_000, `${o.endpoint} an endpoint of ${o.service}`);
  for (let i = 0; i < o.n; i++) await a.client.send(`service/${o.service}`, { i });
  await eventually(() => lines(o.file, "start").length > 0, 30_000, "the worker holds a message");
  const uid = (await a.client.get("Service", o.service)).metadata?.uid ?? "";
  const keys = (await journalKeys(storeUrl)).filter((k) => k.startsWith(`${JOURNAL_PREFIX}${uid}/`));
  assert.equal(keys.length, o.n, "every accepted send is in the Service's journal");
  assert.ok(
    keys.every((k) => k.startsWith(`${JOURNAL_PREFIX}${uid}/`) && k.includes(`-${a.address}-`)),
    `every send is journaled against the Service, naming server A (${keys[0]})`,
  );
  return keys;
}

/**
 * A host of module `da` (held by A, moving to B when A dies; told to `started`) and `n` sends
 * through a Service journaled by A behind its blocked worker (see sendsJournaledByA).
 */
async function hostAndSendsOnA(
  a: ClusterServer,
  b: ClusterServer,
  storeUrl: string,
  name: string,
  started: (host: Proc) => void,
  o: { service: string; selector: string; endpoint: string; file: string; gate: string; n: number },
) {
  started(spawnK4s(["worker", "--server", `${a.address},${b.address}`, "--name", name, "--module", `da=${at.modulePath}`]));
  await eventually(() => holdsHost(b, a, name), 30_000, "host held by A");
  await sendsJournaledByA(a, b, storeUrl, o);
}

test("a server SIGKILLed with durable sends through a Service unsettled: the leader reads them back once its lease is gone, and the endpoint handles them all on the server its host moved to; the journal ends empty", async () => {
  const { cluster, a, b } = await twoServers();
  const [file, gate] = [join(at.dir, "killed.jsonl"), join(at.dir, "killed.gate")];
  let host: Proc | undefined;
  try {
    const n = 40;
    await hostAndSendsOnA(a, b, cluster.etcd.storeUrl, "svc-mover", (p) => (host = p), { service: "orders", selector: "taker", endpoint: "taker", file, gate, n });

    const t0 = Date.now();
    await a.proc.kill("SIGKILL");
    await eventually(() => holdsHost(b, b, "svc-mover"), 30_000, "host held by B");
    const movedMs = Date.now() - t0;
    writeFileSync(gate, "");
    await eventually(
      () => {
        const c = counts(file);
        return Array.from({ length: n }, (_, i) => i).every((i) => c.has(i));
      },
      90_000,
      "every send A accepted through the Service handled via B",
    );
    const handledMs = Date.now() - t0;
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(`# killed: ${n} sends through a Service journaled by A, A SIGKILLed; host on B after ${movedMs} ms, all handled after ${handledMs} ms; duplicates ${duplicates(file)}, lost 0`);
  } catch (err) {
    dumpLogs({ "server A (killed)": a.proc, "server B (leader)": b.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

test("three servers: the leader, which holds no endpoint, reads back what a SIGKILLed server journaled through a Service and sends it on to the endpoint on the third server (not left in its own queue for the service)", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const b = cluster.leader;
  const [a, c] = cluster.standbys as [ClusterServer, ClusterServer];
  const [file, gate] = [join(at.dir, "three.jsonl"), join(at.dir, "three.gate")];
  let host: Proc | undefined;
  try {
    host = spawnK4s(["worker", "--server", `${a.address},${c.address}`, "--name", "svc-third", "--module", `da=${at.modulePath}`]);
    await eventually(() => holdsHost(b, a, "svc-third"), 30_000, "host held by A");
    const n = 30;
    await sendsJournaledByA(a, b, cluster.etcd.storeUrl, { service: "shipping", selector: "shipper", endpoint: "shipper", file, gate, n });

    const t0 = Date.now();
    await a.proc.kill("SIGKILL");
    await eventually(() => holdsHost(b, c, "svc-third"), 30_000, "host held by C");
    writeFileSync(gate, "");
    await eventually(() => counts(file).size === n, 90_000, "every send A accepted through the Service handled via C");
    const handledMs = Date.now() - t0;
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(`# three: ${n} sends through a Service journaled by A, A SIGKILLed, endpoint on C, leader B; all handled after ${handledMs} ms; duplicates ${duplicates(file)}, lost 0`);
  } catch (err) {
    dumpLogs({ "server A (killed)": a.proc, "server B (leader)": b.proc, "server C": c.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

test("a server SIGKILLed while another lives with entries of its own: the leader reads back the dead one's only; the live one delivers its own, each once", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker", ...LONG_LEASE] });
  const b = cluster.leader;
  const [a, c] = cluster.standbys as [ClusterServer, ClusterServer];
  const [fileA, fileC, gateA, gateC] = ["lw-a.jsonl", "lw-c.jsonl", "lw-a.gate", "lw-c.gate"].map((f) => join(at.dir, f)) as [string, string, string, string];
  let hostA: Proc | undefined;
  let hostC: Proc | undefined;
  try {
    hostA = spawnK4s(["worker", "--server", `${a.address},${b.address}`, "--name", "lw-host-a", "--module", `da=${at.modulePath}`]);
    hostC = spawnK4s(["worker", "--server", c.address, "--name", "lw-host-c", "--module", `dc=${at.modulePath}`]);
    await eventually(async () => (await holdsHost(b, a, "lw-host-a")) && (await holdsHost(b, c, "lw-host-c")), 30_000, "hosts held by A and C");
    const n = 20;
    await sendsJournaledByA(a, b, cluster.etcd.storeUrl, { service: "lw-a", selector: "lw-a", endpoint: "lw-a", file: fileA, gate: gateA, n });
    const keysC = await sendsJournaledByA(c, b, cluster.etcd.storeUrl, { service: "lw-c", selector: "lw-c", endpoint: "lw-c", file: fileC, gate: gateC, n, module: "dc" });

    await a.proc.kill("SIGKILL");
    // The leader takes A's entries (they move under its own keys) once A's lease is gone.
    await eventually(async () => !(await journalKeys(cluster.etcd.storeUrl)).some((k) => k.includes(`-${a.address}-`)), 60_000, "A's entries read back by the leader");
    const prefixC = keysC[0]!.slice(0, keysC[0]!.lastIndexOf("/") + 1);
    const stillC = (await journalKeys(cluster.etcd.storeUrl)).filter((k) => k.startsWith(prefixC));
    assert.deepEqual(stillC, keysC, "C's entries are C's still: the leader did not take those of a live member");
    writeFileSync(gateA, "");
    writeFileSync(gateC, "");
    await eventually(() => counts(fileA).size === n && counts(fileC).size === n, 90_000, "every send handled");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(`# live writer: ${n} + ${n} sends journaled by A and C, A SIGKILLed; duplicates of A's ${duplicates(fileA)}, of C's ${duplicates(fileC)}`);
    assert.equal(duplicates(fileC), 0, "C's sends each handled once");
  } catch (err) {
    dumpLogs({ "server A (killed)": a.proc, "server B (leader)": b.proc, "server C": c.proc, hostA, hostC });
    throw err;
  } finally {
    await hostA?.kill();
    await hostC?.kill();
    await cluster.stop();
  }
});

test("a server SIGKILLed and started again at its address while the leader delivers what it read back of its journal: each send is delivered by one of them (the leader claimed the entries: none is the restarted server's)", async () => {
  const { cluster, a, b } = await twoServers();
  const [file, gate] = [join(at.dir, "again.jsonl"), join(at.dir, "again.gate")];
  let host: Proc | undefined;
  let again: ClusterServer | undefined;
  try {
    const n = 30;
    await hostAndSendsOnA(a, b, cluster.etcd.storeUrl, "svc-again", (p) => (host = p), { service: "returns", selector: "returner", endpoint: "returner", file, gate, n });
    await a.proc.kill("SIGKILL");
    // The leader claimed A's entries: they moved under its own keys.
    await eventually(async () => !(await journalKeys(cluster.etcd.storeUrl)).some((k) => k.includes(`-${a.address}-`)), 60_000, "A's entries read back by the leader");
    // A again, at its address, while the worker still holds the first send and the rest wait.
    again = await clusterServer(cluster.etcd.storeUrl, ["--no-local-worker", "--port", a.address.slice(a.address.lastIndexOf(":") + 1)]);
    cluster.servers.push(again);
    assert.equal(again.address, a.address);
    await eventually(async () => (await again!.client.get("Service", "returns")).metadata?.name === "returns", 30_000, "A again sees the Service");
    writeFileSync(gate, "");
    await eventually(() => counts(file).size === n, 90_000, "every send handled");
    // What is journaled anywhere (a copy sent on included) is settled once handled.
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(`# again: ${n} sends through a Service journaled by A, A SIGKILLed, its entries taken by the leader, A started again at its address; duplicates ${duplicates(file)}`);
    assert.ok(duplicates(file) <= 1, `at most the send in the worker's hand handled twice (${duplicates(file)})`);
  } catch (err) {
    dumpLogs({ "server A (killed)": a.proc, "server B (leader)": b.proc, "server A again": again?.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

test("a container deleted on A: the sends it had accepted through a Service go on to the Service's endpoint on B, not left in A's own queue for the service", async () => {
  const { cluster, a, b } = await twoServers();
  const [fileA, fileB, gate] = [join(at.dir, "deleted-a.jsonl"), join(at.dir, "deleted-b.jsonl"), join(at.dir, "deleted.gate")];
  let hostA: Proc | undefined;
  let hostB: Proc | undefined;
  try {
    hostA = spawnK4s(["worker", "--server", a.address, "--name", "sq-host-a", "--module", `da=${at.modulePath}`]);
    hostB = spawnK4s(["worker", "--server", b.address, "--name", "sq-host-b", "--module", `db=${at.modulePath}`]);
    await b.client.apply(`kind: Service\nmetadata: {name: sq}\nspec: {selector: "sq-*"}\n`);
    const memory = (name: string, module: string, params: object) =>
      `kind: Container\nmetadata: {name: ${name}}\nspec: {module: ${module}, function: recorder, concurrency: 1, terminationGraceSeconds: 1, parameters: ${JSON.stringify(params)}}\n`;
    await b.client.apply(memory("sq-1", "da", { file: fileA, gate }));
    await b.client.apply(memory("sq-2", "db", { file: fileB }));
    await eventually(async () => (await a.client.get("Service", "sq")).status?.endpoints.length === 2, 60_000, "sq-1 and sq-2 endpoints of sq");
    // A's router takes turns between its own sq-1 (its worker blocked) and sq-2 on B.
    const n = 20;
    for (let i = 0; i < n; i++) await a.client.send("service/sq", { i });
    await eventually(() => lines(fileA, "start").length > 0, 30_000, "sq-1's worker holds a message");
    const onB = counts(fileB).size;
    const t0 = Date.now();
    await b.client.delete("Container", "sq-1");
    await eventually(() => counts(fileB).size === n, 60_000, "every send handled by sq-2 on B");
    console.log(`# deleted: ${n} sends through a Service from A, ${n - onB} not handled yet when sq-1 (on A, its worker blocked) was deleted; all handled by sq-2 on B ${Date.now() - t0} ms after the delete`);
  } catch (err) {
    dumpLogs({ "server A": a.proc, "server B (leader)": b.proc, hostA, hostB });
    throw err;
  } finally {
    await hostA?.kill();
    await hostB?.kill();
    await cluster.stop();
  }
});

test("a server started while the server that journaled durable sends through a Service lives does not deliver them: each is handled once, by the endpoint on that server", async () => {
  // A lease of 5 s: a renewal late on a loaded machine must not lapse A's lease (the leader would
  // then read A's entries back while A still delivers them: the one duplicate a cluster allows).
  const { cluster, a, b } = await twoServers(LONG_LEASE);
  const fileA = join(at.dir, "alive-a.jsonl");
  const fileC = join(at.dir, "alive-c.jsonl");
  const gate = join(at.dir, "alive.gate");
  let hostA: Proc | undefined;
  let hostC: Proc | undefined;
  let c: ClusterServer | undefined;
  try {
    hostA = spawnK4s(["worker", "--server", a.address, "--name", "svc-stay", "--module", `da=${at.modulePath}`]);
    await eventually(() => holdsHost(b, a, "svc-stay"), 30_000, "host held by A");
    const n = 30;
    await sendsJournaledByA(a, b, cluster.etcd.storeUrl, { service: "billing", selector: "billing-*", endpoint: "billing-a", file: fileA, gate, n });

    // C starts while A lives and holds the entries; a host on C serves a second endpoint.
    c = await clusterServer(cluster.etcd.storeUrl, ["--no-local-worker", ...LONG_LEASE]);
    cluster.servers.push(c);
    hostC = spawnK4s(["worker", "--server", c.address, "--name", "svc-new", "--module", `dc=${at.modulePath}`]);
    await b.client.apply(container("billing-c", "dc", { file: fileC }));
    await eventually(async () => (await c!.client.get("Service", "billing")).status?.endpoints.includes("billing-c"), 60_000, "billing-c an endpoint of billing");
    // Anything C had read back for the service went to its endpoint there before this marker.
    await c.client.send("container/billing-c", { marker: 1 });
    await eventually(() => lines(fileC).some((l) => l.v.marker === 1), 30_000, "the marker handled on C");

    writeFileSync(gate, "");
    await eventually(() => counts(fileA).size === n, 60_000, "every send handled by the endpoint on A");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    const onC = counts(fileC);
    const twice = duplicates(fileA) + [...onC.values()].reduce((s, k) => s + k, 0);
    console.log(`# alive: ${n} sends through a Service journaled by A, server C started meanwhile; handled on A ${counts(fileA).size}, on C ${onC.size}; duplicates ${twice}`);
    assert.equal(twice, 0, "no send A journaled was delivered by C (or twice by A)");
  } catch (err) {
    dumpLogs({ "server A": a.proc, "server B (leader)": b.proc, "server C": c?.proc, hostA, hostC });
    throw err;
  } finally {
    rmSync(gate, { force: true });
    await hostA?.kill();
    await hostC?.kill();
    await cluster.stop();
  }
});
