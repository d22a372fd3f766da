/**
 * `k4s server`: runs a k4s server on one port and, unless --no-local-worker, a local worker host
 * child process for the built-in workers, so one command gives a working cluster.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { DEFAULT_PORT } from "../api/address.js";
import { createBackoff } from "../api/backoff.js";
import { globalOptions } from "./connection.js";
import { CliError } from "./errors.js";
import { advertiseOption, byteSizeOption, intOption } from "./options.js";
import { K4S_BIN } from "./package-files.js";
import { connectionEnvironment } from "../transport/environment.js";
import { untilStopped } from "./signals.js";

interface ServerCommandOptions {
  host: string;
  port: number;
  dataDir: string;
  store?: string;
  memory?: boolean;
  localWorker: boolean;
  heartbeatMs?: number;
  tlsCert?: string;
  tlsKey?: string;
  metricsPort?: number;
  dashboard: boolean;
  dashboardHost: string;
  dashboardPort?: number;
  allowCommand?: boolean;
  maxConnections?: number;
  advertise?: string;
  leaseTtl?: number;
  journalMaxMessages?: number;
  journalMaxBytes?: number;
  maxSessionBufferBytes?: number;
  maxInboxBytes?: number;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CliError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Back-off between restarts of the local worker host: doubles per quick death, capped. */
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
/** A worker host that lived this long is healthy again: the next restart is quick. */
const HEALTHY_RUN_MS = 10_000;
/** How long a stopping worker host gets before it is killed. */
const WORKER_STOP_GRACE_MS = 8_000;
/**
 * How long a shutdown may take in all (the local host's grace, then the calls' 2 s and the
 * store's close) before the process exits anyway: a server told to stop always stops.
 */
const SHUTDOWN_DEADLINE_MS = WORKER_STOP_GRACE_MS + 10_000;

/** What to do about a port in use, per setting. */
const STARTUP_HINTS: Record<string, string> = {
  port: "another k4s server? pick another --port",
  metricsPort: "pick another --metrics-port",
  dashboardPort: "another k4s server? pick another --dashboard-port, or --no-dashboard",
};

/** Creates the server command. */
export function serverCommand(): Command {
  return new Command("server")
    .description("run a k4s server (and a local worker host for the built-in workers)")
    .option("--host <host>", "interface to listen on", "127.0.0.1")
    .option("--port <n>", "port to listen on (0 picks a free one; the bound address is printed)", intOption(0, 65535), DEFAULT_PORT)
    .option("--data-dir <dir>", "folder of the durable state (the same as --store sqlite:DIR)", "./k4s-data")
    .option("--store <url>", "where the state lives: sqlite:DIR (default sqlite:./k4s-data) or etcd://HOST:PORT[,HOST:PORT...]")
    .option("--memory", "keep state in memory only (lost on exit)")
    .option("--no-local-worker", "do not start the local worker host")
    .option("--heartbeat-ms <n>", "heartbeat interval announced to worker sessions", intOption(1))
    .option("--max-connections <n>", "connections the port holds at once; more are refused (default 1024)", intOption(1))
    .option("--max-session-buffer-bytes <size>", "bytes a worker session may leave unread before it is ended RESOURCE_EXHAUSTED (default 64Mi)", byteSizeOption)
    .option("--max-inbox-bytes <size>", "payload bytes one container's inbox holds; more is refused RESOURCE_EXHAUSTED (default 64Mi)", byteSizeOption)
    .option("--tls-cert <file>", "serve TLS with this PEM certificate chain (needs --tls-key)")
    .option("--tls-key <file>", "PEM private key of --tls-cert")
    .option("--metrics-port <n>", "serve Prometheus /metrics over HTTP on this port", intOption(0, 65535))
    .option("--dashboard-host <host>", "interface of the web dashboard's HTTP port", "127.0.0.1")
    .option("--dashboard-port <n>", "port of the web dashboard (default: --port + 1; a free one with --port 0)", intOption(0, 65535))
    .option("--no-dashboard", "do not serve the web dashboard")
    .option("--advertise <host:port>", "with --store etcd://: the address other servers and clients reach this one at (default: the listen address)", advertiseOption)
    .option("--lease-ttl <seconds>", "with --store etcd://: TTL of this server's lease, how long a dead leader keeps its place (default 3)", intOption(2, 60))
    .option("--allow-command", "let the local worker host spawn command containers (spec.command); off by default")
    .option("--journal-max-messages <n>", "unsettled durable sends journaled per container or service (default 10000)", intOption(1))
    .option("--journal-max-bytes <n>", "payload bytes of unsettled durable sends journaled per container or service (default 67108864)", intOption(1))
    .action(async (opts: ServerCommandOptions, cmd: Command) => {
      if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new CliError("--tls-cert and --tls-key go together");
      const dataDirGiven = cmd.getOptionValueSource("dataDir") !== "default";
      if (opts.store && (dataDirGiven || opts.memory)) throw new CliError(`--store goes alone: not with ${opts.memory ? "--memory" : "--data-dir"}`);
      const g = globalOptions(cmd);
      // --tls-ca: the CA of the cluster's server certificates, which peer links and the local host trust.
      const tls = opts.tlsCert && opts.tlsKey ? { cert: readPem(opts.tlsCert, "certificate"), key: readPem(opts.tlsKey, "key"), ca: g.tls?.ca } : undefined;
      const { token } = g;
      // A signal from here on (while the server's modules load, or during its start) stops what
      // the start started (its member leaves the cluster) and exits with a line saying so.
      const stopped = untilStopped();
      // grpc-js would also log a failed bind on its own ("No address added out of total 1
      // resolved"); the one error line below says it all. It is loaded already (the client
      // modules use it), so its environment variable would be read too late.
      if (!process.env.GRPC_VERBOSITY) {
        const grpc = await import("@grpc/grpc-js");
        grpc.setLogVerbosity(grpc.logVerbosity.NONE);
      }
      // Loaded here so client commands do not pay for the server's modules.
      const { createServer } = await import("../server/server.js");
      const { StartupError } = await import("../server/startup-error.js");
      const server = createServer({
        host: opts.host,
        port: opts.port,
        store: opts.store,
        dataDir: opts.memory || opts.store ? undefined : opts.dataDir,
        heartbeatIntervalMs: opts.heartbeatMs,
        maxConnections: opts.maxConnections,
        advertise: opts.advertise,
        leaseTtlSeconds: opts.leaseTtl,
        onLeadership: (leader) => console.log(`k4s server ${leader ? "is the leader: it runs the controllers" : "is standing by"}`),
        journalMaxMessages: opts.journalMaxMessages,
        journalMaxBytes: opts.journalMaxBytes,
        maxSessionBufferBytes: opts.maxSessionBufferBytes,
        maxInboxBytes: opts.maxInboxBytes,
        token,
        tls,
        metricsPort: opts.metricsPort,
        dashboard: opts.dashboard
          ? { host: opts.dashboardHost, port: opts.dashboardPort ?? (opts.port === 0 ? 0 : opts.port + 1) }
          : undefined,
      });
      /** Stops the server (and the local worker) after why, then exits; a second signal exits at once. */
      const shutDown = async (why: string, worker?: LocalWorker): Promise<never> => {
        console.log(`k4s server: ${why}; shutting down`);
        // A second signal means "now": skip the graceful path.
        const force = () => process.exit(1);
        process.once("SIGINT", force);
        process.once("SIGTERM", force);
        setTimeout(() => {
          console.error(`k4s server: the shutdown did not finish within ${SHUTDOWN_DEADLINE_MS / 1000} s; exiting now`);
          process.exit(1);
        }, SHUTDOWN_DEADLINE_MS).unref();
        await worker?.stop();
        await server.stop();
        process.exit(0);
      };
      const startup = server.start();
      const early = await Promise.race([startup.then(() => undefined, () => undefined), stopped]);
      if (early !== undefined) await shutDown(`${early} while starting`);
      try {
        await startup;
      } catch (err) {
        if (!(err instanceof StartupError)) throw err;
        const hint = STARTUP_HINTS[err.setting];
        throw new CliError(hint && /address already in use/.test(err.message) ? `${err.message} (${hint})` : err.message);
      }
      console.log(`k4s server listening on ${server.address}${tls ? " (TLS)" : ""}`);
      if (server.dashboardUrl) console.log(`k4s dashboard on ${server.dashboardUrl}`);
      if (server.metricsPort !== undefined) console.log(`k4s server metrics on http://${opts.host}:${server.metricsPort}/metrics`);
      // The local worker trusts the cluster's CA, else the server's own certificate (the usual self-signed case);
      // --tls-server-name says which name in it to check when it lacks the loopback address.
      const address = workerAddress(opts.host, server.port);
      const workerEnv = connectionEnvironment({
        address,
        token,
        tls: tls ? { ca: tls.ca ?? tls.cert, ...(g.tls?.servername ? { servername: g.tls.servername } : {}) } : undefined,
      });
      // Over etcd each server has a local host of its own: they need names of their own.
      const localName = server.cluster ? `local-${server.port}` : "local";
      const worker = opts.localWorker ? startLocalWorker(address, localName, workerEnv, opts.allowCommand ? ["--allow-command"] : []) : undefined;

      await shutDown(await stopped, worker);
    });
}

/** The address a local worker dials: loopback when the server listens on every interface. */
function workerAddress(host: string, port: number): string {
  if (host === "0.0.0.0" || host === "") return `127.0.0.1:${port}`;
  if (host === "::" || host === "[::]") return `[::1]:${port}`;
  return `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
}

/** A supervised local worker host child process. */
interface LocalWorker {
  stop(): Promise<void>;
}

/**
 * Starts the local worker host and restarts it when it dies. Its standard input is a pipe from
 * this process that nothing writes to: when this process ends, however it ends (SIGKILL too),
 * the pipe closes and the host stops, so no host outlives the server that started it.
 */
function startLocalWorker(address: string, name: string, serverEnv: Record<string, string>, extraArgs: readonly string[]): LocalWorker {
  let child: ChildProcess | undefined;
  let stopping = false;
  const restarts = createBackoff({ initialMs: RESTART_MIN_MS, maxMs: RESTART_MAX_MS });
  let restartTimer: NodeJS.Timeout | undefined;

  const launch = () => {
    const startedAt = Date.now();
    const c = spawn(process.execPath, [K4S_BIN, "worker", "--server", address, "--name", name, "--until-stdin-closes", ...extraArgs], {
      stdio: ["pipe", "inherit", "inherit"],
      // Token and certificate travel in the environment, not argv, so `ps` does not show them.
      env: { ...process.env, ...serverEnv },
    });
    child = c;
    // Nothing is written to the lifeline; a host that died first must not make it throw.
    c.stdin?.on("error", () => {});
    c.on("exit", (code, sig) => {
      child = undefined;
      if (stopping) return;
      if (Date.now() - startedAt > HEALTHY_RUN_MS) restarts.reset();
      const delay = restarts.next();
      console.error(`k4s server: local worker host exited (${sig ?? `code ${code}`}); restarting in ${delay} ms`);
      restartTimer = setTimeout(launch, delay);
    });
  };
  launch();

  return {
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => c.kill("SIGKILL"), WORKER_STOP_GRACE_MS);
        c.once("exit", () => {
          clearTimeout(kill);
          resolve();
        });
        c.kill("SIGTERM");
      });
    },
  };
}
