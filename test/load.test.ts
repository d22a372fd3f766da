/**
 * Load through a real server and a real worker host process: many concurrent clients on a
 * service, thousands of messages at a blocked container (its inbox stops at queueLimit with
 * RESOURCE_EXHAUSTED), and a flooded hot container next to a quiet one whose requests still
 * answer. Sizes scale with K4S_LOAD_SCALE (default 1; scripts/soak.ts raises it).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { ContainerSchema, ContainerSpecSchema, ReplicaSetSchema, ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, WORKERS_SDK_JS, type Proc } from "./helpers.js";

const SCALE = Number(process.env.K4S_LOAD_SCALE ?? 1);

/** A gated recorder: holds every delivery until the gate file exists, then writes it down. */
const LOAD_MODULE = `import { appendFileSync, existsSync } from "node:fs";
import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const gated = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    while (!existsSync(ctx.params.gate)) await new Promise((r) => setTimeout(r, 20));
    appendFileSync(ctx.params.file, JSON.stringify(msg.value) + "\\n");
    return msg.expectsReply ? msg.value : undefined;
  });
});
`;

let dir: string;
let server: K4sServer;
let host: Proc;
const clients: K4sClient[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "k4s-load-"));
  writeFileSync(join(dir, "load-module.mjs"), LOAD_MODULE);
  server = await startTestServer({ heartbeatIntervalMs: 2000 });
  host = spawnK4s(["worker", "--server", server.address, "--name", "ld-host", "--module", `load=${join(dir, "load-module.mjs")}`]);
  await host.waitFor("host ld-host serving", 20_000);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await host.kill("SIGKILL");
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

function client(): K4sClient {
  const c = createClient({ address: server.address });
  clients.push(c);
  return c;
}

async function container(name: string, spec: MessageInitShape<typeof ContainerSpecSchema>): Promise<void> {
  await server.resources.create(create(ContainerSchema, { metadata: { name }, spec }));
  await eventually(async () => (await server.resources.get("Container", name))?.status?.ready, 20_000, `${name} ready`);
}

function lines(file: string): unknown[] {
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
}

test("20 concurrent clients × 200 requests through a service of 3 replicas all answer correctly", async () => {
  await server.resources.create(
    create(ReplicaSetSchema, {
      metadata: { name: "ld-calc" },
      spec: { replicas: 3, template: { spec: { module: "workers", function: "calculator_worker", concurrency: 8 } } },
    }),
  );
  await server.resources.create(create(ServiceSchema, { metadata: { name: "ld-svc" }, spec: { selector: "ld-calc-*", strategy: "least-in-flight" } }));
  for (const n of ["ld-calc-0", "ld-calc-1", "ld-calc-2"]) {
    await eventually(async () => (await server.resources.get("Container", n))?.status?.ready, 20_000, `${n} ready`);
  }
  const CLIENTS = 20;
  const PER_CLIENT = 200 * SCALE;
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, ci) => {
      const c = client();
      let ok = 0;
      // Four in flight per client: each client pipelines on its own session.
      await Promise.all(
        Array.from({ length: 4 }, async (_, lane) => {
          for (let i = lane; i < PER_CLIENT; i += 4) {
            const reply = await c.request("service/ld-svc", { operation: "sum", operands: [ci, i, 1] }, { timeoutMs: 20_000 });
            assert.equal(reply, ci + i + 1);
            ok++;
          }
        }),
      );
      return ok;
    }),
  );
  const ms = Date.now() - started;
  const total = results.reduce((a, b) => a + b, 0);
  assert.equal(total, CLIENTS * PER_CLIENT);
  console.log(`load figures: ${total} requests from ${CLIENTS} clients in ${ms} ms (${Math.round((total * 1000) / ms)} req/s)`);
});

test("thousands of messages at a blocked container stop at queueLimit with RESOURCE_EXHAUSTED; every accepted one arrives", async () => {
  const gate = join(dir, "gate-q");
  const file = join(dir, "q.log");
  const LIMIT = 100;
  await container("ld-slow", { module: "load", function: "gated", queueLimit: LIMIT, parameters: { gate, file } });
  const c = client();
  const N = 3000 * SCALE;
  const outcomes = await Promise.all(
    Array.from({ length: N }, (_, i) => c.send("ld-slow", i).then(() => undefined, (err) => ConnectError.from(err))),
  );
  const refused = outcomes.filter((o) => o !== undefined);
  const accepted = N - refused.length;
  for (const e of refused) assert.equal(e!.code, Code.ResourceExhausted, e!.message);
  // The inbox holds queueLimit; one more may be in the worker's hands (concurrency 1).
  assert.ok(accepted <= LIMIT + 1, `accepted ${accepted} with the worker blocked, queueLimit ${LIMIT}`);
  assert.ok(accepted >= LIMIT, `accepted only ${accepted}`);
  assert.match(refused[0]!.rawMessage, /ld-slow/);
  writeFileSync(gate, "");
  await eventually(() => lines(file).length === accepted, 20_000, `${accepted} accepted messages delivered`);
  const delivered = lines(file) as number[];
  assert.deepEqual(delivered, [...delivered].sort((a, b) => a - b), "FIFO with concurrency 1");
  console.log(`load figures: ${N} sends at a blocked container: ${accepted} accepted, ${refused.length} RESOURCE_EXHAUSTED`);
});

test("a flooded hot container does not starve another container's requests", async () => {
  const gate = join(dir, "gate-hot");
  const hotFile = join(dir, "hot.log");
  const coldFile = join(dir, "cold.log");
  await container("ld-hot", { module: "load", function: "gated", queueLimit: 2000, concurrency: 4, parameters: { gate, file: hotFile } });
  // The quiet container's gate is a path that already exists: it answers at once.
  await container("ld-cold", { module: "load", function: "gated", parameters: { gate: dir, file: coldFile } });
  const flooder = client();
  const caller = client();
  let flooding = true;
  const flood = (async () => {
    let sent = 0;
    let refused = 0;
    while (flooding && sent < 20_000 * SCALE) {
      const batch = await Promise.all(Array.from({ length: 200 }, (_, i) => flooder.send("ld-hot", sent + i).then(() => 0, () => 1)));
      sent += batch.length;
      refused += batch.reduce<number>((a, b) => a + b, 0);
    }
    return { sent, refused };
  })();
  const COLD = 50 * SCALE;
  for (let i = 0; i < COLD; i++) assert.equal(await caller.request("ld-cold", i, { timeoutMs: 10_000 }), i);
  flooding = false;
  const f = await flood;
  writeFileSync(gate, "");
  console.log(`load figures: ${COLD} requests to a quiet container answered while ${f.sent} sends flooded a hot one (${f.refused} refused)`);
  assert.equal(lines(coldFile).length, COLD);
  assert.ok(f.sent > 0);
});
