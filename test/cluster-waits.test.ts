/**
 * Calls for a container no server of a cluster delivers yet: two `k4s server` processes over one
 * real etcd, no worker host at first, and a client speaking only to the standby. The calls wait on
 * the standby, at most the container's queueLimit of them (the next one is refused
 * RESOURCE_EXHAUSTED, naming the container and the limit); a request whose deadline passes first
 * fails DEADLINE_EXCEEDED; and once a worker host connects and the container is scheduled onto
 * it, the waiting calls are routed again at once (woken by the binding and the session records,
 * not polled) and answered. Figures are printed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";

/** The error a call failed with (fails the test when it succeeded). */
async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

test("cluster waits: calls wait on a standby for a container not placed yet, at most its queueLimit; a host's arrival wakes them and they are answered", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const standby = cluster.standbys[0] as ClusterServer;
  let host: Proc | undefined;
  let client: K4sClient | undefined;
  try {
    await standby.client.apply(`kind: Container
metadata: {name: waits}
spec: {module: workers, function: echo_worker, queueLimit: 3}
---
kind: Service
metadata: {name: waits-svc}
spec: {selector: "waits"}
`);
    client = createClient({ address: standby.address, reconnect: false });
    // A request whose deadline passes while no server delivers the container.
    let t0 = Date.now();
    const late = await failure(client.request("container/waits", "late", { timeoutMs: 800 }));
    assert.equal(late.code, Code.DeadlineExceeded, late.message);
    assert.match(late.rawMessage, /container "waits" is not running on any server of the cluster yet/);
    const lateMs = Date.now() - t0;

    // Three requests wait (its queueLimit); a fourth is refused at once, naming the container and the limit.
    const waiting = ["w0", "w1", "w2"].map((m) => client!.request("container/waits", m, { timeoutMs: 60_000 }));
    waiting.forEach((p) => p.catch(() => {}));
    // A request to a service with no ready endpoint waits too (for any endpoint).
    const viaService = client.request("service/waits-svc", "sv", { timeoutMs: 60_000 });
    viaService.catch(() => {});
    // Once the three wait on the server, a fourth is refused; until then (a loaded machine may
    // take its time to read them) a fourth is let wait too and gives up at its short deadline.
    const refused = (await eventually(async () => {
      const e = await failure(client!.request("container/waits", "one too many", { timeoutMs: 2000 }));
      if (e.code === Code.DeadlineExceeded) return undefined;
      return e;
    }, 60_000, "a fourth call refused while three wait"))!;
    assert.equal(refused.code, Code.ResourceExhausted, refused.message);
    assert.match(refused.rawMessage, /too many calls wait for container "waits" to run on a server of the cluster \(queueLimit 3\)/);
    const sendRefused = await failure(client.send("container/waits", "a send too"));
    assert.equal(sendRefused.code, Code.ResourceExhausted, sendRefused.message);

    // A host connects to the standby: the container is bound to it and started, and the waiting
    // requests go to it (nothing polls: a change of where it is wakes them).
    t0 = Date.now();
    host = spawnK4s(["worker", "--server", standby.address, "--name", "waits-host"]);
    assert.deepEqual(await Promise.all(waiting), ["ECHO: w0", "ECHO: w1", "ECHO: w2"]);
    const answeredMs = Date.now() - t0;
    assert.equal(await viaService, "ECHO: sv");
    const serviceMs = Date.now() - t0;
    // With them answered, calls wait no longer: one more is answered too.
    assert.equal(await client.request("container/waits", "after", { timeoutMs: 20_000 }), "ECHO: after");
    console.log(`# a request with an 800 ms deadline failed DEADLINE_EXCEEDED after ${lateMs} ms; 3 requests waited (queueLimit 3), the 4th refused RESOURCE_EXHAUSTED; a host started: the 3 answered ${answeredMs} ms later, the one through the service ${serviceMs} ms`);
  } catch (err) {
    dumpLogs({ ...Object.fromEntries(cluster.servers.map((s, i) => [`server ${i} ${s.address}`, s.proc])), host });
    throw err;
  } finally {
    await client?.close();
    await host?.kill();
    await cluster.stop();
  }
});

/** A one-shot command container (exits at once, never restarted). */
const ONE_SHOT = `kind: Container
metadata: {name: one-shot}
spec: {command: [/bin/true], restartPolicy: Never}
`;

/** How a server answers a request and a send for the ended one-shot container: code and message ("" when accepted). */
async function endedAnswers(client: K4sClient): Promise<{ request: string; send: string; ms: number }> {
  const t0 = Date.now();
  const answer = (p: Promise<unknown>) =>
    p.then(
      () => "",
      (err: unknown) => {
        const e = ConnectError.from(err);
        return `${Code[e.code]}: ${e.rawMessage}`;
      },
    );
  const request = await answer(client.request("container/one-shot", "r", { timeoutMs: 60_000 }));
  const send = await answer(client.send("container/one-shot", "s"));
  return { request, send, ms: Date.now() - t0 };
}

test("cluster waits: a call through a standby for an ended one-shot container is answered at once, as a single server answers it", async () => {
  const single = spawnK4s(["server", "--port", "0", "--no-dashboard", "--memory", "--allow-command"]);
  const cluster = await startCluster(2, { flags: ["--allow-command"] });
  let singleClient: K4sClient | undefined;
  try {
    await single.waitFor(/listening on \S+/, 30_000);
    singleClient = createClient({ address: /listening on (\S+)/.exec(single.stdout())![1]!, reconnect: false });
    const standby = cluster.standbys[0] as ClusterServer;
    const ended = async (c: K4sClient) => {
      await c.apply(ONE_SHOT);
      const phase = async () => (await c.get("Container", "one-shot")).status?.phase ?? "";
      const deadline = Date.now() + 60_000;
      while (!["Succeeded", "Failed"].includes(await phase())) {
        assert.ok(Date.now() < deadline, `one-shot ended (phase ${await phase()})`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return phase();
    };
    const singlePhase = await ended(singleClient);
    const clusterPhase = await ended(standby.client);
    assert.equal(clusterPhase, singlePhase);
    const onOne = await endedAnswers(singleClient);
    const viaStandby = await endedAnswers(standby.client);
    assert.match(onOne.request, /^Unavailable: .*has ended/, "a single server refuses a request for an ended container");
    assert.deepEqual({ request: viaStandby.request, send: viaStandby.send }, { request: onOne.request, send: onOne.send }, "the standby answers as the single server");
    console.log(`# one-shot ${singlePhase}: a single server answered in ${onOne.ms} ms (${onOne.request} / send ${onOne.send || "accepted"}), a standby of a cluster in ${viaStandby.ms} ms`);
  } catch (err) {
    dumpLogs({ single, ...Object.fromEntries(cluster.servers.map((s, i) => [`server ${i} ${s.address}`, s.proc])) });
    throw err;
  } finally {
    await singleClient?.close();
    await single.kill();
    await cluster.stop();
  }
});
