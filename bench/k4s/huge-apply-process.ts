/**
 * The applier of the huge-apply benchmark, a process of its own so that encoding thousands of
 * objects does not stall the harness's probe: one Apply of N Containers (typed objects), then
 * tells the harness {ev: "ready", ms} (or {ev: "error", message}). Args: address, N.
 */
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema, createClient } from "../../src/client/index.js";
import { failStartup, tellParent } from "../lib/processes.js";

const [address, countArg] = process.argv.slice(2);
const client = createClient({ address: address! });
try {
  const objects = Array.from({ length: Number(countArg) }, (_, i) =>
    create(ContainerSchema, {
      metadata: { name: `huge-${String(i).padStart(6, "0")}`, labels: { bench: "huge" } },
      // A module no host serves: the containers stay Pending, so the store and controllers work, not hosts.
      spec: { module: "bench-none", function: "f", parameters: { note: "x".repeat(160) } },
    }),
  );
  const t0 = performance.now();
  await client.apply(objects);
  tellParent({ ev: "ready", ms: performance.now() - t0 });
} catch (err) {
  failStartup(err);
} finally {
  await client.close();
}
