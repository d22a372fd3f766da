/** `k4s worker`: runs a worker host that serves the built-in workers and any --module given. */
import { resolve } from "node:path";
import { Command } from "commander";
import { globalOptions } from "./connection.js";
import { CliError } from "./errors.js";
import { collect } from "./options.js";
import { untilStopped } from "./signals.js";

interface WorkerCommandOptions {
  name?: string;
  module: string[];
  builtin: boolean;
  allowCommand?: boolean;
  untilStdinCloses?: boolean;
}

/** Parses `NAME=PATH` module arguments into a module map with absolute paths. */
function parseModules(values: readonly string[]): Record<string, string> {
  const modules: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    if (eq <= 0 || eq === v.length - 1) throw new CliError(`invalid --module "${v}": expected NAME=PATH`);
    const name = v.slice(0, eq);
    if (Object.hasOwn(modules, name)) throw new CliError(`--module "${name}" is given twice`);
    modules[name] = resolve(v.slice(eq + 1));
  }
  return modules;
}

/** Resolves once standard input reaches its end or closes (its writer, the parent, is gone). */
function stdinClosed(): Promise<string> {
  return new Promise((resolve) => {
    const done = () => resolve("standard input closed (the process that started it exited)");
    process.stdin.once("end", done);
    process.stdin.once("close", done);
    process.stdin.on("data", () => {});
    process.stdin.resume();
  });
}

/** Creates the worker command. */
export function workerCommand(): Command {
  return new Command("worker")
    .description("run a worker host: it connects to the server and runs the containers assigned to it")
    .option("--name <name>", "host name shown in container status (default: this machine's name)")
    .option("--module <name=path>", "serve a worker module: NAME=PATH of a JavaScript file of defineWorker exports (repeatable)", collect, [])
    .option("--no-builtin", "do not serve the built-in \"workers\" module (a --module may then take its name)")
    .option(
      "--allow-command",
      "spawn command containers (spec.command) on this machine; off by default, since anyone who may create a Container could then run any program here",
    )
    .option("--until-stdin-closes", "stop when standard input closes (the process that started this host went away)")
    .action(async (opts: WorkerCommandOptions, cmd: Command) => {
      const modules = parseModules(opts.module);
      const g = globalOptions(cmd);
      // Listen before connecting: a host whose parent is gone, or that is told to stop, while it
      // still waits for the server's first Welcome must not linger.
      const ending = Promise.race([untilStopped(), ...(opts.untilStdinCloses ? [stdinClosed()] : [])]);
      const { runWorkerHost } = await import("../workers/runtime/worker-host.js");
      const host = await Promise.race([
        runWorkerHost({ address: g.server, name: opts.name, token: g.token, tls: g.tls, modules, builtin: opts.builtin, canSpawn: opts.allowCommand ?? false }),
        ending.then(() => undefined),
      ]);
      if (!host) {
        console.log(`k4s worker host: ${await ending} before the server at ${g.server} welcomed it; exiting`);
        process.exit(0);
      }
      const served = host.served().map((m) => `  ${m.module}: ${m.functions.join(", ")}\n`);
      const spawns = opts.allowCommand ? " (spawns command containers)" : "";
      process.stdout.write(`k4s worker host ${host.name} serving containers from ${g.server}${spawns}\n${served.join("")}`);
      // The server ending the session for good (a newer session of this host took its name over,
      // say) ends the host: reconnecting would only take the name back.
      let failed = false;
      const endedByServer = host.done.then(
        () => new Promise<never>(() => {}),
        (err: unknown) => {
          failed = true;
          return `the server ended its session (${err instanceof Error ? err.message : String(err)})`;
        },
      );
      const why = await Promise.race([ending, endedByServer]);
      console.log(`k4s worker host ${host.name}: ${why}; stopping`);
      const force = () => process.exit(1);
      process.once("SIGINT", force);
      process.once("SIGTERM", force);
      await host.stop();
      process.exit(failed ? 1 : 0);
    });
}
