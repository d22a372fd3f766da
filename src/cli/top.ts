/**
 * `k4s top [containers|services|hosts]`: the live load per container, service or host as a
 * table refreshed every sampling window (about a second), as `kubectl top` and `nats top` show
 * it; one table when the output is not a terminal or with --once; `-o json|yaml` prints one
 * snapshot.
 */
import { Command } from "commander";
import { toJson, type JsonObject } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { StatsSchema, type Load, type Stats } from "../gen/k4s/v1/stats_service_pb.js";
import { globalOptions, interruptSignal, withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { loadYaml, renderJson, renderTable, type Table } from "./format.js";

type TopKind = "containers" | "services" | "hosts";

const KIND_ALIASES: Record<string, TopKind> = {
  containers: "containers",
  container: "containers",
  c: "containers",
  services: "services",
  service: "services",
  svc: "services",
  hosts: "hosts",
  host: "hosts",
};

const SORTS = ["name", "msgs", "p99", "inflight", "queued"] as const;
type Sort = (typeof SORTS)[number];

interface TopOptions {
  output?: string;
  once?: boolean;
  sort: string;
}

const LOAD_HEADER = ["MSG/S", "REQ/S", "ERR/S", "IN-FLIGHT", "QUEUED", "P50", "P90", "P99"];

/** A rate with one decimal. */
function rate(n: number): string {
  return n.toFixed(1);
}

/** A latency with a unit that keeps it short: 850µs, 1.2ms, 340ms, 2.1s; "-" when none. */
function latency(ms: number): string {
  if (!ms) return "-";
  if (ms < 1) return `${Math.round(ms * 1000)}µs`;
  if (ms < 10) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${(ms / 1000).toFixed(1)}s`;
}

function loadCells(l: Load | undefined): string[] {
  if (!l) return ["0.0", "0.0", "0.0", "0", "0", "-", "-", "-"];
  return [rate(l.messagesPerSecond), rate(l.requestsPerSecond), rate(l.errorsPerSecond), String(l.inFlight), String(l.inboxDepth), latency(l.latencyP50Ms), latency(l.latencyP90Ms), latency(l.latencyP99Ms)];
}

/** Orders rows by name, or by a load figure, largest first. */
function sorter(sort: Sort): (a: { name: string; load?: Load }, b: { name: string; load?: Load }) => number {
  const key: Record<Exclude<Sort, "name">, (l: Load) => number> = {
    msgs: (l) => l.messagesPerSecond,
    p99: (l) => l.latencyP99Ms,
    inflight: (l) => l.inFlight,
    queued: (l) => l.inboxDepth,
  };
  if (sort === "name") return (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const k = key[sort];
  return (a, b) => (b.load ? k(b.load) : 0) - (a.load ? k(a.load) : 0) || (a.name < b.name ? -1 : 1);
}

/** The table of one kind of a snapshot. */
export function topTable(stats: Stats, kind: TopKind, sort: Sort = "name"): Table {
  const by = sorter(sort);
  switch (kind) {
    case "containers":
      return {
        header: ["NAME", "HOST", "PHASE", "RESTARTS", ...LOAD_HEADER],
        rows: [...stats.containers].sort(by).map((c) => [c.name, c.host || "<none>", c.phase, String(c.restarts), ...loadCells(c.load)]),
      };
    case "services":
      return {
        header: ["NAME", "ENDPOINTS", ...LOAD_HEADER],
        rows: [...stats.services].sort(by).map((s) => [s.name, String(s.endpoints.length), ...loadCells(s.load)]),
      };
    case "hosts":
      return {
        header: ["NAME", "CONTAINERS", ...LOAD_HEADER],
        rows: [...stats.hosts].sort(by).map((h) => [h.name || "<none>", String(h.containers.length), ...loadCells(h.load)]),
      };
  }
}

function parseKind(arg: string | undefined): TopKind {
  const kind = KIND_ALIASES[(arg ?? "containers").toLowerCase()];
  if (!kind) throw new CliError(`unknown kind "${arg}" for top: use containers, services or hosts`);
  return kind;
}

function parseSort(value: string): Sort {
  if (!(SORTS as readonly string[]).includes(value)) throw new CliError(`unknown --sort "${value}": use ${SORTS.join(", ")}`);
  return value as Sort;
}

/** Clears a terminal and puts the cursor home. */
const CLEAR = "\x1b[H\x1b[2J";

/** Creates the top command. */
export function topCommand(): Command {
  return new Command("top")
    .description("show the live load (msg/s, in flight, queued, latency) of containers, services or hosts")
    .argument("[kind]", "containers (c), services (svc) or hosts", "containers")
    .option("-o, --output <format>", "print one snapshot as json or yaml")
    .option("--once", "print one table and exit (the default when the output is not a terminal)")
    .option("--sort <column>", `order rows by ${SORTS.join(", ")} (largest first)`, "name")
    .action(async (kindArg: string | undefined, opts: TopOptions, cmd: Command) => {
      const kind = parseKind(kindArg);
      const sort = parseSort(opts.sort);
      const output = opts.output;
      if (output !== undefined && output !== "json" && output !== "yaml") {
        throw new CliError(`unknown output format "${output}": use json or yaml`);
      }
      await withClient(cmd, async (client) => {
        if (output) {
          const stats = await client.stats();
          const json = toJson(StatsSchema, stats, { alwaysEmitImplicit: true }) as JsonObject;
          const picked = { time: json.time, windowMs: json.windowMs, [kind]: json[kind] ?? [] };
          if (output === "yaml") await loadYaml();
          process.stdout.write(`${renderJson(picked, output)}\n`);
          return;
        }
        if (opts.once || !process.stdout.isTTY) {
          console.log(renderTable(topTable(await client.stats(), kind, sort)));
          return;
        }
        const server = globalOptions(cmd).server;
        for await (const stats of client.watchStats({ signal: interruptSignal() })) {
          const at = stats.time ? timestampDate(stats.time).toLocaleTimeString() : "";
          const title = `k4s top ${kind} · ${server} · ${at} · window ${(stats.windowMs / 1000).toFixed(1)}s · Ctrl-C to quit`;
          process.stdout.write(`${CLEAR}${title}\n\n${renderTable(topTable(stats, kind, sort))}\n`);
        }
      });
    });
}
