/**
 * host-main: a minimal entry point running a worker host in its own process, for tests and for
 * use before `k4s worker` exists: `node --import tsx src/workers/runtime/host-main.ts --server
 * HOST:PORT [--name NAME] [--token T] [--tls-ca PEM_FILE] [--module NAME=PATH]...`. Prints "ready NAME" once welcomed.
 */
import { readFileSync } from "node:fs";
import { runWorkerHost } from "./host.js";

function parseArgs(argv: string[]) {
  const out: { server?: string; name?: string; token?: string; tlsCa?: string; modules: Record<string, string> } = { modules: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === "--server") out.server = v;
    else if (a === "--name") out.name = v;
    else if (a === "--token") out.token = v;
    else if (a === "--tls-ca") out.tlsCa = v;
    else if (a === "--module" && v?.includes("=")) {
      const [k, p] = v.split("=", 2) as [string, string];
      out.modules[k] = p;
    } else throw new Error(`host-main: unknown argument ${a}`);
    i++;
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const address = args.server ?? process.env.K4S_ADDRESS ?? "127.0.0.1:50051";
const host = await runWorkerHost({
  address,
  name: args.name,
  token: args.token ?? process.env.K4S_BEARER_TOKEN,
  modules: args.modules,
  tls: args.tlsCa ? { ca: readFileSync(args.tlsCa) } : undefined,
  onLog: (container, stream, lines) => {
    for (const line of lines) process.stdout.write(`[${container}] ${stream === "log" ? "" : `${stream}: `}${line}\n`);
  },
});
process.stdout.write(`ready ${host.name}\n`);
let stopping = false;
const shutdown = () => {
  if (stopping) return;
  stopping = true;
  void host.stop().then(() => process.exit(0));
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
