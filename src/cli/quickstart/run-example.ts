/**
 * The quick-start walkthrough (the seed's example.py): an echo container, a replicated
 * calculator behind a service, scaling, and a processing pipeline — all through the SDK,
 * against a real server and a real worker host process.
 */
import type { K4sClient } from "../../client/index.js";
import { seedManifest as manifest } from "../package-files.js";

/** Runs the walkthrough against a cluster, printing each step; throws when a step misbehaves. */
export async function runExample(client: K4sClient, print: (line: string) => void = console.log): Promise<void> {
  const step = (title: string) => print(`\n== ${title}`);
  const expect = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`example failed: ${what}`);
  };

  step("1. Deploy an echo container");
  for (const r of await client.apply(manifest("echo.yaml"))) print(`${r.kind.toLowerCase()}/${r.name} ${r.action}`);
  const echoed = await client.request<string>("container/echo-worker", "hi");
  print(`request container/echo-worker "hi" -> ${JSON.stringify(echoed)}`);
  expect(echoed === "HELLO: hi", `echo answered ${JSON.stringify(echoed)}`);
  for (const text of ["one", "two", "three"]) await client.send("echo-worker", text);
  print("sent 3 fire-and-forget messages to echo-worker");

  step("2. A replicated calculator behind a service");
  for (const r of await client.apply(manifest("calculator.yaml"))) print(`${r.kind.toLowerCase()}/${r.name} ${r.action}`);
  const sum = await client.request<number>("service/calculator-service", { operation: "sum", operands: [1, 2, 3] });
  print(`sum [1,2,3] -> ${sum}`);
  expect(sum === 6, `sum was ${sum}`);
  const product = await client.request<number>("calculator-service", { operation: "product", operands: [2, 3, 4] });
  print(`product [2,3,4] -> ${product}`);
  expect(product === 24, `product was ${product}`);
  try {
    await client.request("calculator-service", { operation: "modulo", operands: [1] });
    expect(false, "an unknown operation was accepted");
  } catch (err) {
    print(`unknown operation -> error: ${(err as Error).message}`);
  }

  step("3. Scale the calculator to 5, then back to 2");
  await client.scale("calculator-rs", 5);
  await waitForReplicas(client, "calculator-rs", 5);
  print(`replicas: ${await replicaNames(client)}`);
  await client.scale("calculator-rs", 2);
  await waitForReplicas(client, "calculator-rs", 2);
  const names = await replicaNames(client);
  print(`replicas: ${names}`);
  expect(names === "calculator-rs-0, calculator-rs-1", `replicas after scale-down were ${names}`);

  step("4. A pipeline: processor -> aggregator");
  for (const r of await client.apply(manifest("pipeline.yaml"))) print(`${r.kind.toLowerCase()}/${r.name} ${r.action}`);
  for (const word of ["alpha", "beta", "gamma"]) await client.send("processor", word);
  const report = await client.request<{ count: number; messages: unknown[] }>("aggregator", "report?");
  print(`aggregator report -> ${JSON.stringify(report)}`);

  step("5. Clean up");
  for (const [kind, name] of [
    ["ReplicaSet", "calculator-rs"],
    ["Service", "calculator-service"],
    ["Container", "calculator"],
    ["Container", "echo-worker"],
    ["Container", "processor"],
    ["Container", "aggregator"],
  ] as const) {
    await client.delete(kind, name);
    print(`${kind.toLowerCase()}/${name} deleted`);
  }
  print("\nexample finished");
}

async function replicaNames(client: K4sClient): Promise<string> {
  const list = await client.list("Container", { nameGlob: "calculator-rs-*" });
  return list.items
    .filter((c) => !c.metadata?.deletionTimestamp)
    .map((c) => c.metadata?.name)
    .join(", ");
}

async function waitForReplicas(client: K4sClient, name: string, n: number): Promise<void> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 30_000);
  try {
    for await (const ev of client.watch({ kind: "ReplicaSet", nameGlob: name, signal: controller.signal })) {
      const rs = ev.object.$typeName === "k4s.v1.ReplicaSet" ? ev.object : undefined;
      if (rs?.status?.replicas === n && (rs.spec?.replicas ?? 1) === n) return;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}
