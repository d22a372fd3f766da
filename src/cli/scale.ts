/** `k4s scale rs NAME --replicas N` (also `replicaset/NAME`): set a ReplicaSet's replica count. */
import { Command } from "commander";
import { withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { kindAndName, intOption } from "./options.js";

/** Creates the scale command. */
export function scaleCommand(): Command {
  return new Command("scale")
    .description("set the number of replicas of a ReplicaSet")
    .argument("<kind>", "replicasets|replicaset|rs, or replicaset/NAME")
    .argument("[name]", "the ReplicaSet's name")
    .requiredOption("--replicas <n>", "the new number of replicas", intOption(0))
    .action(async (kindArg: string, nameArg: string | undefined, opts: { replicas: number }, cmd: Command) => {
      const { kind, name } = kindAndName(kindArg, nameArg);
      if (kind !== "ReplicaSet") throw new CliError(`cannot scale a ${kind}: only ReplicaSets (rs) have replicas`);
      if (!name) throw new CliError(`scale ${kindArg} needs a NAME`);
      await withClient(cmd, async (client) => {
        await client.scale(name, opts.replicas);
        console.log(`replicaset/${name} scaled`);
      });
    });
}
