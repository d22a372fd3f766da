/** `k4s scale rs NAME --replicas N` (also `replicaset/NAME`): set a ReplicaSet's replica count. */
import { Command } from "commander";
import { withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { durationFlag, intOption, kindAndName } from "./options.js";
import { waitReady } from "./wait-ready.js";

interface ScaleOptions {
  replicas: number;
  wait?: boolean;
  timeout: number;
}

/** Creates the scale command. */
export function scaleCommand(): Command {
  return new Command("scale")
    .description("set the number of replicas of a ReplicaSet")
    .argument("<kind>", "replicasets|replicaset|rs, or replicaset/NAME")
    .argument("[name]", "the ReplicaSet's name")
    .requiredOption("--replicas <n>", "the new number of replicas", intOption(0))
    .option("--wait", "wait until the ReplicaSet has that many ready replicas, showing progress")
    .addOption(durationFlag("--timeout <duration>", "how long --wait waits, e.g. 30s, 2m", 60_000))
    .action(async (kindArg: string, nameArg: string | undefined, opts: ScaleOptions, cmd: Command) => {
      const { kind, name } = kindAndName(kindArg, nameArg);
      if (kind !== "ReplicaSet") throw new CliError(`cannot scale a ${kind}: only ReplicaSets (rs) have replicas`);
      if (!name) throw new CliError(`scale ${kindArg} needs a NAME`);
      await withClient(cmd, async (client) => {
        await client.scale(name, opts.replicas);
        console.log(`replicaset/${name} scaled`);
        if (opts.wait) await waitReady(client, [{ kind: "ReplicaSet", name }], { timeoutMs: opts.timeout, print: (line) => console.log(line) });
      });
    });
}
