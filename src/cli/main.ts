/**
 * The k4s command line: a kubectl-shaped client for a k4s server (apply, get, describe, delete,
 * scale, send, request, logs, events) plus the `server` and `worker` processes themselves.
 */
import { Command, CommanderError, Option } from "commander";
import { normalizeAddress } from "../api/address.js";
import { packageVersion } from "../server/package-version.js";
import { applyCommand } from "./apply.js";
import { setColourMode, type ColourMode } from "./colour.js";
import { complete, completionCommand } from "./completion.js";
import { defaultServer } from "./connection.js";
import { dashboardCommand } from "./dashboard.js";
import { deleteCommand } from "./delete.js";
import { describeCommand } from "./describe.js";
import { diffCommand } from "./diff.js";
import { editCommand } from "./edit.js";
import { CliError, formatError } from "./errors.js";
import { eventsCommand } from "./events.js";
import { explainCommand } from "./explain.js";
import { getCommand } from "./get.js";
import { annotateCommand, labelCommand } from "./label.js";
import { logsCommand } from "./logs.js";
import { requestCommand } from "./request.js";
import { rolloutCommand } from "./rollout.js";
import { scaleCommand } from "./scale.js";
import { sendCommand } from "./send.js";
import { serverCommand } from "./server.js";
import { topCommand } from "./top.js";
import { versionCommand } from "./version.js";
import { workerCommand } from "./worker.js";

/** Builds the k4s program with every command; exported so other entry points can add theirs. */
export function createProgram(): Command {
  const program = new Command("k4s")
    .description("k4s: a Kubernetes-shaped control plane for message-driven microservices")
    .option("-s, --server <address>", "k4s server host:port, or the servers of one cluster comma-separated (env K4S_ADDRESS)", defaultServer())
    .option("--token <token>", "bearer token for the server (env K4S_TOKEN); visible to other users in ps, prefer --token-file")
    .option("--token-file <file>", "read the bearer token from this file (its first line)")
    .option("--tls", "connect over TLS, trusting the system's CAs (env K4S_TLS=1)")
    .option("--tls-ca <file>", "connect over TLS, trusting this PEM certificate (env K4S_TLS_CA: the PEM itself)")
    .option("--tls-server-name <name>", "name to check the server's certificate against (env K4S_TLS_SERVERNAME)")
    .addOption(new Option("--color <when>", "colour the output: auto (on a terminal, unless NO_COLOR is set), always or never").choices(["auto", "always", "never"]).default("auto"))
    .version(packageVersion(), "--version", "print the version of this k4s command")
    .showSuggestionAfterError()
    .hook("preAction", (cmd) => setColourMode(cmd.opts<{ color: ColourMode }>().color));
  for (const cmd of [
    serverCommand(),
    workerCommand(),
    applyCommand(),
    getCommand(),
    describeCommand(),
    editCommand(),
    diffCommand(),
    explainCommand(),
    deleteCommand(),
    scaleCommand(),
    rolloutCommand(),
    labelCommand(),
    annotateCommand(),
    sendCommand(),
    requestCommand(),
    logsCommand(),
    eventsCommand(),
    topCommand(),
    versionCommand(),
    completionCommand(),
    dashboardCommand(),
    // Their code (the embedded cluster, the walkthrough) loads only when they run.
    new Command("example")
      .description("run the quick-start walkthrough on an embedded cluster")
      .action(async () => (await import("./example.js")).runOnLocalCluster("example")),
    new Command("demo")
      .description("run the seven demos on an embedded cluster")
      .action(async () => (await import("./example.js")).runOnLocalCluster("demo")),
  ]) {
    program.addCommand(cmd);
  }
  return program;
}

/**
 * Runs the k4s command line with process.argv-style arguments. Failures print one line,
 * `error: <message>`, on stderr and set exit code 1; usage errors are commander's (exit 1).
 */
export async function main(argv: string[], program: Command = createProgram()): Promise<void> {
  exitQuietlyOnClosedOutput();
  // The shells' completion scripts call this with the words typed so far (see completion.ts);
  // they are not parsed as options.
  if (argv[2] === "__complete") {
    const candidates = await complete(program, argv.slice(3));
    if (candidates.length > 0) process.stdout.write(`${candidates.join("\n")}\n`);
    return;
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`error: ${formatError(err, namedServer(program))}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  }
}

/**
 * Ends the process quietly when its reader went away (`k4s events | head`): like every Unix tool
 * killed by SIGPIPE, without the stack trace Node prints for an unhandled EPIPE.
 */
function exitQuietlyOnClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE" || err.code === "ERR_STREAM_DESTROYED") process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
}

/** The server address the command used, as dialled (with the default port), to name in errors. */
function namedServer(program: Command): string | undefined {
  const server = program.opts<{ server?: string }>().server;
  try {
    return server === undefined ? undefined : normalizeAddress(server);
  } catch {
    return server;
  }
}
