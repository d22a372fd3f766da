/**
 * At most once across servers: a handler's own error is the caller's answer, never a reason to
 * run the request again. Two `k4s server` processes over one real etcd, a worker host on each
 * (each serving a module of its own, so each container runs on the host of one server), a
 * Service over both containers, and a client of server A only: a request the Service sends on
 * to B's container fails there with the handler's NOT_FOUND or UNAVAILABLE (even one whose words
 * read like a server's refusal), and A answers it with that, without sending it to the next
 * endpoint or routing it again. Each run is a line in a file.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, recorderLines, spawnK4s, WORKERS_SDK_JS, type Proc } from "./helpers.js";

/** Appends {ev: "run", v, c} for every message it handles, then fails it as the message says (or echoes it). */
const MODULE = `import { appendFileSync } from "node:fs";
import { defineWorker, ConnectError, Code } from ${JSON.stringify(WORKERS_SDK_JS)};
export const failer = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    appendFileSync(ctx.params.file, JSON.stringify({ ev: "run", v: msg.value, c: ctx.name }) + "\\n");
    const v = msg.value;
    if (v.code) throw new ConnectError(v.message, Code[v.code]);
    return { echo: v.tag, by: ctx.container };
  });
});
`;

interface Run {
  ev: "run";
  v: { tag: string };
  c: string;
}

let dir: string;
let modulePath: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-cluster-once-"));
  modulePath = join(dir, "failer.mjs");
  writeFileSync(modulePath, MODULE);
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** The error a request failed with (a success fails the test). */
async function failure(p: Promise<unknown>): Promise<ConnectError> {
  return p.then(
    (v) => assert.fail(`the request succeeded: ${JSON.stringify(v)}`),
    (err: unknown) => ConnectError.from(err),
  );
}

test("cluster at most once: a handler's NOT_FOUND or UNAVAILABLE on another server's endpoint is the answer; the request runs once, not again on the next endpoint", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const hosts: Proc[] = [];
  const file = join(dir, "runs.jsonl");
  try {
    const [a, b] = cluster.servers as [ClusterServer, ClusterServer];
    hosts.push(spawnK4s(["worker", "--server", a.address, "--name", "host-a", "--module", `ona=${modulePath}`]));
    hosts.push(spawnK4s(["worker", "--server", b.address, "--name", "host-b", "--module", `onb=${modulePath}`]));
    const params = JSON.stringify({ file });
    await a.client.apply(
      `kind: Container\nmetadata: {name: once-a, labels: {app: once}}\nspec: {module: ona, function: failer, parameters: ${params}}\n---\n` +
        `kind: Container\nmetadata: {name: once-b, labels: {app: once}}\nspec: {module: onb, function: failer, parameters: ${params}}\n---\n` +
        `kind: Service\nmetadata: {name: once-svc}\nspec: {matchLabels: {app: once}}\n`,
    );
    for (const name of ["once-a", "once-b"]) await eventually(async () => (await a.client.get("Container", name)).status?.ready === true, 60_000, `${name} ready`);
    assert.equal((await a.client.get("Container", "once-b")).status?.host, "host-b");
    // A knows the Service's endpoints on both servers before the requests (B's is reached over the link).
    await eventually(async () => (await a.client.request("once-b", { tag: "warm" }, { timeoutMs: 20_000 })) !== undefined, 30_000, "once-b reached through A");

    const cases = [
      { code: "NotFound", message: "no such order" },
      { code: "FailedPrecondition", message: "order already shipped" },
      { code: "ResourceExhausted", message: "quota used up" },
      { code: "Unavailable", message: "could not reach payment API" },
      // A handler that rethrows an error k4s gave it (a nested call's) words and all.
      { code: "Unavailable", message: 'container "x" is not held by server 127.0.0.1:1' },
      { code: "Unavailable", message: "server 127.0.0.1:1 is stopping and did not take this call" },
    ] as const;
    const tags: string[] = [];
    /** The requests not answered with the handler's own code and words. */
    const wrong: string[] = [];
    for (const { code, message } of cases) {
      // Enough requests that the Service's turn comes to B's endpoint (each case at least once).
      for (let i = 0; i < 4; i++) {
        const tag = `${code}-${i}-${tags.length}`;
        tags.push(tag);
        const err = await failure(a.client.request("service/once-svc", { tag, code, message }, { timeoutMs: 20_000 }));
        if (err.code !== Code[code] || err.rawMessage !== message) wrong.push(`${tag}: ${err.message}`);
      }
      // Sent to B's container itself: answered with the handler's error, not routed again.
      const tag = `direct-${code}-${tags.length}`;
      tags.push(tag);
      const err = await failure(a.client.request("container/once-b", { tag, code, message }, { timeoutMs: 20_000 }));
      if (err.code !== Code[code] || err.rawMessage !== message) wrong.push(`${tag}: ${err.message}`);
    }
    const runs = recorderLines<Run>(file, "run").filter((r) => r.v.tag !== "warm");
    const byTag = new Map<string, string[]>();
    for (const r of runs) byTag.set(r.v.tag, [...(byTag.get(r.v.tag) ?? []), r.c]);
    const twice = [...byTag].filter(([, cs]) => cs.length !== 1).map(([tag, cs]) => `${tag} ran ${cs.length} times: ${cs.join(", ")}`);
    assert.deepEqual({ twice, wrong }, { twice: [], wrong: [] }, "every request ran exactly once and was answered with its handler's error");
    assert.deepEqual([...byTag.keys()].sort(), [...tags].sort(), "every request ran");
    const onB = runs.filter((r) => r.c === "once-b" && !r.v.tag.startsWith("direct-")).length;
    assert.ok(onB >= cases.length, `the Service sent requests to B's endpoint (${onB})`);
    console.log(`# ${tags.length} failing requests through A, each run once; ${onB} of the Service's on B's endpoint`);
  } catch (err) {
    dumpLogs({ "server A": cluster.servers[0]?.proc, "server B": cluster.servers[1]?.proc, "host-a": hosts[0], "host-b": hosts[1] });
    throw err;
  } finally {
    for (const h of hosts) await h.kill();
    await cluster.stop();
  }
});
