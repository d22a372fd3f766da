/** `k4s delete KIND NAME...` and `k4s delete -f FILE`: delete objects, printing `<kind>/<name> deleted`. */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kind } from "../api/kinds.js";
import { withClient } from "./connection.js";
import { CliError, formatError } from "./errors.js";
import { kindRef, loadYaml } from "./format.js";
import { manifestRefs, readManifests, type ObjectRef } from "./manifest-files.js";
import { collect, kindAndName } from "./options.js";

interface DeleteOptions {
  filename: string[];
  ignoreNotFound?: boolean;
}

/** Failures that are about the connection, not one object: the rest would fail the same way. */
const STOP_CODES = new Set([Code.Unavailable, Code.Unauthenticated, Code.PermissionDenied, Code.DeadlineExceeded, Code.Canceled]);

/** Creates the delete command. */
export function deleteCommand(): Command {
  return new Command("delete")
    .description("delete objects by kind and name, or those a manifest declares")
    .argument("[kind]", "containers|c, replicasets|rs, services|svc (or KIND/NAME)")
    .argument("[names...]", "names of the objects")
    .option("-f, --filename <path>", "delete the objects of a manifest file, directory or - (repeatable)", collect, [])
    .option("--ignore-not-found", "treat objects that do not exist as deleted")
    .action(async (kindArg: string | undefined, names: string[], opts: DeleteOptions, cmd: Command) => {
      const refs = await targets(kindArg, names, opts.filename);
      await withClient(cmd, async (client) => {
        // As kubectl: an object that cannot be deleted is reported and the others still go.
        let failed = false;
        for (const ref of refs) {
          try {
            await client.delete(ref.kind, ref.name);
          } catch (err) {
            if (opts.ignoreNotFound && err instanceof ConnectError && err.code === Code.NotFound) continue;
            if (!(err instanceof ConnectError) || STOP_CODES.has(err.code)) throw err;
            process.stderr.write(`error: ${formatError(err)}\n`);
            failed = true;
            continue;
          }
          console.log(`${kindRef(ref.kind, ref.name)} deleted`);
        }
        if (failed) process.exitCode = 1;
      });
    });
}

async function targets(kindArg: string | undefined, names: string[], files: string[]): Promise<ObjectRef[]> {
  if (files.length > 0) {
    if (kindArg !== undefined) throw new CliError("delete takes either -f FILE or KIND NAME, not both");
    await loadYaml();
    const refs = (await Promise.all(files.map(readManifests))).flat().flatMap(manifestRefs);
    // Users before what they use: services, then replicasets (which take their replicas), then containers.
    const order: Record<Kind, number> = { Service: 0, ReplicaSet: 1, Container: 2 };
    return refs.map((r, i) => ({ r, i })).sort((a, b) => order[a.r.kind] - order[b.r.kind] || a.i - b.i).map((x) => x.r);
  }
  if (kindArg === undefined) throw new CliError("delete needs KIND NAME, KIND/NAME or -f FILE");
  if (kindArg.includes("/")) {
    return [kindArg, ...names].map((arg) => {
      if (!arg.includes("/")) throw new CliError(`"${arg}": when one argument is KIND/NAME, all must be`);
      const { kind, name } = kindAndName(arg, undefined);
      return { kind, name: name! };
    });
  }
  const { kind } = kindAndName(kindArg, undefined);
  if (names.length === 0) throw new CliError(`delete ${kindArg} needs at least one NAME`);
  return names.map((name) => ({ kind, name }));
}
