/**
 * The load process: connects to one system under test and runs the scenarios the harness asks
 * for, one at a time, telling it when the measured window starts and ends (so the harness reads
 * CPU time and receiver counts at those instants) and answering with what it measured.
 * Args: system name, then a JSON object with where the system listens.
 */
import type { BenchClient } from "./clients/bench-client.js";
import { createGrpcBenchClient } from "./clients/grpc-bench-client.js";
import { createK4sBenchClient } from "./clients/k4s-bench-client.js";
import { createMoleculerBenchClient } from "./clients/moleculer-bench-client.js";
import { createNatsBenchClient } from "./clients/nats-bench-client.js";
import { closedLoop, openLoop } from "./lib/load-drivers.js";
import { exitWithParent, failStartup, tellParent } from "./lib/processes.js";
import type { RunCommand } from "./lib/scenarios.js";

const [system, infoJson] = process.argv.slice(2);
const info = JSON.parse(infoJson ?? "{}") as { address?: string; url?: string; nodeID?: string; urls?: string[]; responders?: string[] };

async function connectSystem(): Promise<BenchClient> {
  switch (system) {
    case "k4s":
      return createK4sBenchClient(info.address!);
    case "grpc":
      return createGrpcBenchClient(info.address!);
    case "nats":
      return createNatsBenchClient(info.url!);
    case "moleculer":
      return createMoleculerBenchClient(info.nodeID!, info.urls!, info.responders!);
    default:
      throw new Error(`unknown system "${system}"`);
  }
}

async function run(client: BenchClient, cmd: RunCommand): Promise<unknown> {
  const s = cmd.scenario;
  const payload = client.payload(s.bytes);
  const phases = {
    warmupMs: cmd.warmupMs,
    durationMs: cmd.durationMs,
    onMeasureStart: () => tellParent({ ev: "measuring", run: cmd.run }),
    onMeasureEnd: () => tellParent({ ev: "measured", run: cmd.run }),
  };
  switch (s.kind) {
    case "closed":
      return closedLoop(() => client.request(s.target, payload), s.concurrency, phases);
    case "ff":
      return closedLoop(() => client.send(payload), s.concurrency, phases);
    case "open":
      return openLoop(() => client.request(s.target, payload), s.rate, phases);
  }
}

try {
  const client = await connectSystem();
  // One run at a time: the harness waits for each answer before the next command.
  process.on("message", (m: RunCommand & { id: number }) => {
    if (m.cmd !== "run") return;
    run(client, m).then(
      (result) => tellParent({ id: m.id, result }),
      (err) => tellParent({ id: m.id, ev: "error", message: err instanceof Error ? err.message : String(err) }),
    );
  });
  exitWithParent(() => client.close());
  tellParent({ ev: "ready" });
} catch (err) {
  failStartup(err);
}
