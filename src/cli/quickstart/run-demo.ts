/**
 * The seed's seven demos (demo.py), through the SDK against a real server and worker host:
 * basic container, replica set with load balancing, scaling, an inter-container pipeline,
 * generator → service, calculator request/response, and resource CRUD.
 */
import { Code, ConnectError, create, ContainerSchema, type Container, type K4sClient } from "../../client/index.js";
import { seedManifest as manifest } from "../package-files.js";

type Print = (line: string) => void;

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`demo failed: ${what}`);
}

async function applied(client: K4sClient, print: Print, text: string): Promise<void> {
  for (const r of await client.apply(text)) print(`  ${r.kind.toLowerCase()}/${r.name} ${r.action}`);
}

/** Counts each container's log lines that contain `needle`. */
async function logCounts(client: K4sClient, names: string[], needle: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const name of names) {
    counts[name] = 0;
    for await (const line of client.logs(name)) if (line.text.includes(needle)) counts[name]++;
  }
  return counts;
}

/** Waits (watching, not polling) until a container reaches one of the phases. */
async function waitForPhase(client: K4sClient, name: string, phases: string[], timeoutMs = 30_000): Promise<Container> {
  const signal = AbortSignal.timeout(timeoutMs);
  for await (const ev of client.watch({ kind: "Container", nameGlob: name, signal })) {
    const c = ev.object as Container;
    if (phases.includes(c.status?.phase ?? "")) return c;
  }
  throw new Error(`container ${name} did not reach ${phases.join("/")} within ${timeoutMs} ms`);
}

async function replicaNames(client: K4sClient, rs: string): Promise<string[]> {
  const list = await client.list("Container", { nameGlob: `${rs}-*` });
  return list.items.filter((c) => !c.metadata?.deletionTimestamp).map((c) => c.metadata!.name);
}

async function waitForReplicas(client: K4sClient, rs: string, n: number): Promise<string[]> {
  const signal = AbortSignal.timeout(30_000);
  for await (const ev of client.watch({ kind: "ReplicaSet", nameGlob: rs, signal })) {
    if (ev.object.$typeName !== "k4s.v1.ReplicaSet") continue;
    if (ev.object.status?.replicas === n && (await replicaNames(client, rs)).length === n) break;
  }
  return replicaNames(client, rs);
}

const demos: [string, (client: K4sClient, print: Print) => Promise<void>][] = [
  [
    "Demo 1: basic container deployment",
    async (client, print) => {
      await applied(client, print, manifest("echo.yaml"));
      for (let i = 1; i <= 3; i++) await client.send("echo-worker", `message ${i}`);
      const reply = await client.request<string>("echo-worker", "are you there?");
      print(`  request -> ${JSON.stringify(reply)}`);
      check(reply === "HELLO: are you there?", `echo replied ${reply}`);
      const lines = (await logCounts(client, ["echo-worker"], "HELLO: message"))["echo-worker"];
      print(`  echo-worker logged ${lines} of the 3 fire-and-forget messages`);
      check(lines === 3, `echo-worker logged ${lines} messages, expected 3`);
      await client.delete("Container", "echo-worker");
    },
  ],
  [
    "Demo 2: replica set with load balancing",
    async (client, print) => {
      await applied(client, print, manifest("generator.yaml").split("---\nkind: Container")[0]);
      for (let i = 0; i < 30; i++) await client.request("service/echo-service", `job ${i}`);
      const counts = await logCounts(client, ["echo-rs-0", "echo-rs-1"], "RS-ECHO: job");
      print(`  30 requests through echo-service landed: ${JSON.stringify(counts)}`);
      check(Object.values(counts).every((n) => n > 0), "a replica got no requests");
    },
  ],
  [
    "Demo 3: dynamic scaling",
    async (client, print) => {
      await client.scale("echo-rs", 5);
      print(`  scaled to 5: ${(await waitForReplicas(client, "echo-rs", 5)).join(", ")}`);
      await client.scale("echo-rs", 1);
      const names = await waitForReplicas(client, "echo-rs", 1);
      print(`  scaled to 1: ${names.join(", ")}`);
      check(names.join() === "echo-rs-0", `after scaling to 1: ${names.join()}`);
      await client.delete("ReplicaSet", "echo-rs");
      await client.delete("Service", "echo-service");
    },
  ],
  [
    "Demo 4: inter-container communication (processor -> aggregator)",
    async (client, print) => {
      await applied(client, print, manifest("pipeline.yaml"));
      for (const w of ["red", "green", "blue"]) await client.send("processor", w);
      const report = await client.request<{ count: number; messages: string[] }>("aggregator", "report?");
      print(`  aggregator report: ${JSON.stringify(report)}`);
      check(report.count >= 3 && report.messages.includes("RED"), "the aggregator did not see the processed words");
      await client.delete("Container", "processor");
      await client.delete("Container", "aggregator");
    },
  ],
  [
    "Demo 5: generator -> service pipeline",
    async (client, print) => {
      await applied(client, print, manifest("generator.yaml"));
      const gen = await waitForPhase(client, "generator", ["Succeeded", "Failed"]);
      print(`  generator finished: ${gen.status?.phase}`);
      check(gen.status?.phase === "Succeeded", `generator ended ${gen.status?.phase}: ${gen.status?.message}`);
      const counts = await logCounts(client, ["echo-rs-0", "echo-rs-1"], "RS-ECHO:");
      print(`  the echo replicas logged: ${JSON.stringify(counts)}`);
      check(counts["echo-rs-0"] + counts["echo-rs-1"] >= 6, "not every generated message arrived");
      await client.delete("Container", "generator");
      await client.delete("ReplicaSet", "echo-rs");
      await client.delete("Service", "echo-service");
    },
  ],
  [
    "Demo 6: calculator request/response",
    async (client, print) => {
      await applied(client, print, manifest("calculator.yaml"));
      for (const [operation, operands, expected] of [
        ["sum", [1, 2, 3, 4], 10],
        ["product", [2, 3, 4], 24],
        ["average", [2, 4, 6], 4],
      ] as const) {
        const result = await client.request<number>("calculator-service", { operation, operands });
        print(`  ${operation}(${operands.join(", ")}) = ${result}`);
        check(result === expected, `${operation} gave ${result}`);
      }
      try {
        await client.request("calculator-service", { operation: "divide", operands: [1, 0] });
        check(false, "an unknown operation succeeded");
      } catch (err) {
        print(`  divide -> error: ${(err as Error).message}`);
      }
      await client.delete("ReplicaSet", "calculator-rs");
      await client.delete("Service", "calculator-service");
      await client.delete("Container", "calculator");
    },
  ],
  [
    "Demo 7: resource CRUD",
    async (client, print) => {
      const created = await client.create(
        create(ContainerSchema, {
          metadata: { name: "crud-demo", labels: { tier: "demo" } },
          spec: { module: "workers", function: "echo_worker" },
        }),
      );
      print(`  created container/crud-demo (resourceVersion ${created.metadata?.resourceVersion})`);
      // Read-modify-write with the resourceVersion as precondition: the server writes the
      // container's status meanwhile (it is being scheduled), so a conflict (ABORTED) means
      // "read it again and retry", as with Kubernetes.
      let updated: Container | undefined;
      for (let attempt = 1; !updated; attempt++) {
        const got = await client.get("Container", "crud-demo");
        got.metadata!.labels.tier = "updated";
        try {
          updated = await client.update(got);
        } catch (err) {
          if (ConnectError.from(err).code !== Code.Aborted || attempt >= 10) throw err;
          print(`  update conflicted (resourceVersion ${got.metadata?.resourceVersion} is stale); retrying`);
        }
      }
      print(`  updated labels: ${JSON.stringify(updated.metadata?.labels)}`);
      const listed = await client.list("Container", { labels: { tier: "updated" } });
      print(`  listed by label: ${listed.items.map((c) => c.metadata?.name).join(", ")}`);
      check(listed.items.length === 1, "label query did not find the container");
      await client.delete("Container", "crud-demo");
      const after = await client.list("Container", { nameGlob: "crud-*" });
      print(`  deleted; remaining crud-* containers: ${after.items.filter((c) => !c.metadata?.deletionTimestamp).length}`);
    },
  ],
];

/** Runs all seven demos in order, printing what happens; throws on the first misbehaviour. */
export async function runDemo(client: K4sClient, print: Print = console.log): Promise<void> {
  for (const [title, demo] of demos) {
    print(`\n== ${title}`);
    await demo(client, print);
  }
  print("\nall demos finished");
}
