/** `k4s version [--client] [-o json|yaml]`: the versions of this command and of the server, as kubectl shows them. */
import { Command } from "commander";
import type { ServerVersion } from "../client/client.js";
import { packageVersion } from "../server/package-version.js";
import { withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { loadYaml, renderJson } from "./format.js";

interface VersionOptions {
  client?: boolean;
  output?: string;
}

function line(what: string, v: Omit<ServerVersion, "apiVersion">): string {
  return `${what} Version: ${v.version} (node ${v.runtimeVersion}, ${v.platform})`;
}

/** Creates the version command. */
export function versionCommand(): Command {
  return new Command("version")
    .description("print the version of this command and of the server it talks to")
    .option("--client", "only this command's version (no server needed)")
    .option("-o, --output <format>", "json or yaml")
    .action(async (opts: VersionOptions, cmd: Command) => {
      if (opts.output !== undefined && opts.output !== "json" && opts.output !== "yaml") {
        throw new CliError(`unknown output format "${opts.output}": use json or yaml`);
      }
      const client = { version: packageVersion(), runtimeVersion: process.version, platform: `${process.platform}/${process.arch}` };
      if (!opts.output) console.log(line("Client", client));
      // As kubectl: the client's version is printed even when the server cannot be asked.
      const server = opts.client ? undefined : await withClient(cmd, (c) => c.serverVersion());
      if (!opts.output) {
        if (server) console.log(`${line("Server", server)}, API ${server.apiVersion}`);
        return;
      }
      if (opts.output === "yaml") await loadYaml();
      console.log(renderJson({ clientVersion: client, ...(server ? { serverVersion: { ...server } } : {}) }, opts.output));
    });
}
