/**
 * `k4s logs`, as kubectl's: the output lines of a container, of every replica of a ReplicaSet
 * (`rs/NAME`), of every container a Service selects (`svc/NAME`) or of every container a label
 * selector matches (`-l`), each line prefixed `[NAME]` when several containers may speak.
 * `--since` keeps the recent lines, `--previous` the lines of the run before the current one.
 */
import { Command } from "commander";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Kind } from "../api/kinds.js";
import type { K4sClient } from "../client/client.js";
import type { ResumeOptions } from "../client/resume.js";
import type { LogLine } from "../gen/k4s/v1/log_service_pb.js";
import { ContainerSchema, type Container } from "../gen/k4s/v1/resources_pb.js";
import { colourFor, paint } from "./colour.js";
import { followThroughRestarts, interruptSignal, withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { collect, durationOption, intOption, kindAndName, labelSelectorOption } from "./options.js";

interface LogsOptions {
  follow?: boolean;
  tail?: number;
  timestamps?: boolean;
  since?: number;
  previous?: boolean;
  prefix?: boolean;
  selector: string[];
  reconnectTimeout?: number;
}

/** The containers whose lines are printed, and whether lines carry their container's name. */
interface Sources {
  containers: Container[];
  prefix: boolean;
  /** What was asked for, in words, for "nothing matched" messages. */
  what: string;
}

/** Creates the logs command. */
export function logsCommand(): Command {
  return new Command("logs")
    .description("print the output (ctx.log lines, stdout and stderr) of a container, a ReplicaSet's replicas, a Service's containers or those -l selects")
    .argument("[target]", "NAME or container/NAME, rs/NAME (its replicas), svc/NAME (the containers it selects)")
    .option("-l, --selector <selector>", "every container whose labels match, instead of a target (repeatable)", collect, [])
    .option("-f, --follow", "keep printing new lines until interrupted")
    .option("--tail <n>", "only the last N kept lines (of each container)", intOption(0))
    .option("--since <duration>", "only lines newer than this, e.g. 30s, 5m, 1h", durationOption)
    .option("-p, --previous", "the lines of the container's previous run, after a restart")
    .option("--prefix", "prefix each line with [NAME] even for one container (always on for rs/, svc/ and -l)")
    .option("--timestamps", "prefix each line with its time")
    .option("--reconnect-timeout <duration>", "with -f: how long to wait for a server that went away before giving up (default 5m)", durationOption)
    .action(async (target: string | undefined, opts: LogsOptions, cmd: Command) => {
      const selector = labelSelectorOption(opts.selector);
      if (target && selector) throw new CliError("logs takes a target or -l SELECTOR, not both");
      if (!target && !selector) throw new CliError("logs needs a target (NAME, rs/NAME, svc/NAME) or -l SELECTOR");
      if (opts.previous && opts.follow) throw new CliError("--previous shows a finished run: it cannot --follow");
      await withClient(cmd, async (client) => {
        const sources = await resolve(client, target, selector, opts.previous === true);
        if (sources.containers.length === 0) {
          process.stderr.write(`No containers found for ${sources.what}.\n`);
          return;
        }
        const previous = opts.previous ? await previousRuns(client, sources.containers) : undefined;
        const print = printer(opts, sources.prefix || opts.prefix === true);
        const signal = opts.follow ? interruptSignal() : undefined;
        const resume = opts.follow ? once(followThroughRestarts(cmd, opts.reconnectTimeout)) : undefined;
        const since = opts.since === undefined ? undefined : Date.now() - opts.since;
        const keep = (line: LogLine) => {
          const at = line.time ? timestampMs(line.time) : undefined;
          if (since !== undefined && at !== undefined && at < since) return false;
          if (previous === undefined) return true;
          const run = previous.get(line.container);
          return run !== undefined && at !== undefined && at < run.to && (run.from === undefined || at >= run.from);
        };
        const streams = sources.containers
          .filter((c) => previous === undefined || previous.has(c.metadata!.name))
          .map((c) => client.logs(c.metadata!.name, { follow: opts.follow, tail: opts.previous ? undefined : opts.tail, signal, resume }));
        if (opts.follow) {
          await Promise.all(streams.map(async (lines) => {
            for await (const line of lines) if (keep(line)) print(line);
          }));
          return;
        }
        // Several containers' kept lines, in the order they were written.
        const all: LogLine[][] = await Promise.all(streams.map(async (lines) => {
          const kept: LogLine[] = [];
          for await (const line of lines) if (keep(line)) kept.push(line);
          return opts.previous && opts.tail ? kept.slice(-opts.tail) : kept;
        }));
        const merged = all.flat().sort((a, b) => (a.time && b.time ? timestampMs(a.time) - timestampMs(b.time) : 0));
        for (const line of merged) print(line);
      });
    });
}

/** Finds the containers a target or selector names. */
async function resolve(client: K4sClient, target: string | undefined, selector: string | undefined, previous: boolean): Promise<Sources> {
  if (selector) {
    const { items } = await client.list("Container", { labelSelector: selector });
    return { containers: items, prefix: true, what: `-l ${selector}` };
  }
  const { kind, name } = target!.includes("/") ? kindAndName(target!, undefined) : { kind: "Container" as Kind, name: target! };
  switch (kind) {
    case "Container": {
      // Only --previous needs the object; lines are kept a moment past a deletion, so read them directly.
      const container = previous ? await client.get("Container", name!) : create(ContainerSchema, { metadata: { name } });
      return { containers: [container], prefix: false, what: `container/${name}` };
    }
    case "ReplicaSet": {
      const rs = await client.get("ReplicaSet", name!);
      const { items } = await client.list("Container", { nameGlob: `${name}-*` });
      const owned = items.filter((c) => c.metadata?.ownerReference?.kind === "ReplicaSet" && c.metadata.ownerReference.uid === rs.metadata?.uid);
      return { containers: owned, prefix: true, what: `replicaset/${name}` };
    }
    case "Service": {
      const svc = await client.get("Service", name!);
      const { items } = await client.list("Container", { nameGlob: svc.spec?.selector || undefined, labels: svc.spec?.matchLabels });
      return { containers: items, prefix: true, what: `service/${name}` };
    }
  }
}

/** The span of a container's previous run, in ms since the epoch: from (when known) up to before `to`. */
interface Run {
  from?: number;
  to: number;
}

/**
 * The previous run of each container, for --previous: a run starts when the container is
 * scheduled onto a host, so the previous run is the time between the last two Scheduled events
 * (kept with the cluster's recent events); when those have scrolled out, everything before the
 * current run started. A container that never restarted has no previous run; none at all is an error.
 */
async function previousRuns(client: K4sClient, containers: readonly Container[]): Promise<Map<string, Run>> {
  const runs = new Map<string, Run>();
  for (const c of containers) {
    const name = c.metadata!.name;
    if ((c.status?.restarts ?? 0) === 0 || !c.status?.startedAt) continue;
    const scheduled: number[] = [];
    for await (const e of client.events({ kind: "Container", name })) {
      if (e.reason === "Scheduled" && e.time) scheduled.push(timestampMs(e.time));
    }
    const started = timestampMs(c.status.startedAt);
    const before = scheduled.filter((t) => t <= started);
    runs.set(name, before.length >= 2 ? { from: before.at(-2)!, to: before.at(-1)! } : { to: before.at(-1) ?? started });
  }
  if (runs.size === 0) {
    const names = containers.map((c) => c.metadata!.name).join(", ");
    throw new CliError(`no previous run: ${containers.length === 1 ? `container ${names} has` : `containers ${names} have`} not been restarted`);
  }
  return runs;
}

/** Prints lines with the chosen prefixes; the [NAME] prefix coloured on a terminal. */
function printer(opts: LogsOptions, prefix: boolean): (line: LogLine) => void {
  const colour = colourFor(process.stdout);
  return (line) => {
    const time = opts.timestamps && line.time ? `${timestampDate(line.time).toISOString()} ` : "";
    const name = prefix ? `${paint(`[${line.container}]`, "cyan", colour)} ` : "";
    process.stdout.write(`${name}${time}${line.text}\n`);
  };
}

/** The resume options shared by several streams: each change of the connection said once, not per stream. */
function once(options: ResumeOptions): ResumeOptions {
  let last: "lost" | "resumed" | undefined;
  return {
    ...options,
    onConnection(state, err) {
      if (state === last) return;
      last = state;
      options.onConnection?.(state, err);
    },
  };
}
