/**
 * The worker host: a process that says Hello as a host, runs the module containers the server
 * assigns to it (worker functions of its modules) and spawns its command containers, and
 * reports their states. It reconnects after a server restart and names the containers it
 * still runs, so they resume instead of restarting.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { hostname } from "node:os";
import { resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Assign, ServerFrame, Stop } from "../../gen/k4s/v1/worker_service_pb.js";
import { builtinWorkers, BUILTIN_MODULE } from "../builtin/index.js";
import { createContainerRuntime, toIncomingDelivery, type ContainerLink, type ContainerRuntime } from "./container-runtime.js";
import { toWorkerDefinition, type WorkerDefinition } from "./define-worker.js";
import type { TlsOptions } from "../../transport/channel.js";
import { connectionEnvironment, ENV } from "../../transport/environment.js";
import { openSession, type Session } from "../../transport/session.js";

/** A worker module: a path to import, or its already loaded exports. */
export type WorkerModuleSource = string | Readonly<Record<string, unknown>>;

/** WorkerHostOptions configure runWorkerHost. */
export interface WorkerHostOptions {
  /** Server host:port. */
  address: string;
  /** Host name (default: the machine's hostname and pid). */
  name?: string;
  /** Bearer token of the server; spawned commands get it as K4S_TOKEN. */
  token?: string;
  /** Connect over TLS; spawned commands get K4S_TLS=1 and the CA as K4S_TLS_CA. */
  tls?: boolean | TlsOptions;
  labels?: Record<string, string>;
  /** Containers it runs at once (0: no limit). */
  capacity?: number;
  /** Extra worker modules: module name → path of a JS/TS module (or its exports). */
  modules?: Record<string, WorkerModuleSource>;
  /** Serve the built-in "workers" module (default true). */
  builtin?: boolean;
  /**
   * Spawn command containers (default false): whoever may create a Container could otherwise
   * run any program on this machine, so a host opts in.
   */
  canSpawn?: boolean;
  /** Also receives every output line of its containers (e.g. to print them). */
  onLog?: (container: string, stream: string, lines: readonly string[]) => void;
  /** Receives problems the host cannot report to the server, and each change of its connection (lost, reconnected). */
  onError?: (message: string, err?: unknown) => void;
}

/** WorkerHost is a running worker host. */
export interface WorkerHost {
  /** The name the server registered it under. */
  readonly name: string;
  /** Names of the containers it runs now. */
  containers(): string[];
  /** The worker modules it serves and each one's function names, sorted. */
  served(): { module: string; functions: string[] }[];
  /** Stops every container (their grace periods apply), reports them Stopped, and disconnects. */
  stop(): Promise<void>;
  /**
   * Resolves once stopped; rejects when the server ended the host's session for good, for
   * instance ALREADY_EXISTS when a newer session of this host (same name and credential) took
   * over: the host must then not carry on, or the two would take turns.
   */
  readonly done: Promise<void>;
}

interface Running {
  name: string;
  uid: string;
  /** Grace the container gets when its host shuts down (spec.terminationGraceSeconds). */
  graceMs: number;
  runtime?: ContainerRuntime<unknown>;
  child?: ChildProcess;
  stopRequested: boolean;
  /** Resolves once the container ended and its final state was queued. */
  finished: Promise<void>;
  markFinished: () => void;
  killTimer?: NodeJS.Timeout;
}

const EMPTY = new Uint8Array(0);
/** Longest grace the host grants on its own shutdown. */
const MAX_SHUTDOWN_GRACE_MS = 10_000;
/** Most bytes of one output line forwarded; longer lines are cut. */
const MAX_LINE = 16 * 1024;

/** Spawned processes still running: killed when this process exits, so none is orphaned. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of liveChildren) c.kill("SIGKILL");
  });
}

/** Loads worker modules: each export that is a worker (or async function) becomes a function. */
async function loadModules(sources: Record<string, WorkerModuleSource>): Promise<Map<string, Map<string, WorkerDefinition<unknown>>>> {
  const modules = new Map<string, Map<string, WorkerDefinition<unknown>>>();
  for (const [name, source] of Object.entries(sources)) {
    let exports: Record<string, unknown>;
    if (typeof source === "string") {
      try {
        exports = (await import(pathToFileURL(resolvePath(source)).href)) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`cannot load worker module "${name}" from ${source}: ${(err as Error).message}`);
      }
    } else {
      exports = { ...source };
    }
    const fns = new Map<string, WorkerDefinition<unknown>>();
    const add = (key: string, value: unknown) => {
      const def = toWorkerDefinition(value);
      if (def && key !== "default") fns.set(key, def);
    };
    if (typeof exports.default === "object" && exports.default !== null) {
      for (const [k, v] of Object.entries(exports.default)) add(k, v);
    }
    for (const [k, v] of Object.entries(exports)) add(k, v);
    if (fns.size === 0) {
      const seen = Object.keys(exports).filter((k) => k !== "default");
      const from = typeof source === "string" ? ` (${source})` : "";
      throw new Error(
        `worker module "${name}"${from} exports no worker function: export defineWorker(...) results` +
          (seen.length > 0 ? ` (exports seen: ${seen.join(", ")})` : " (it exports nothing)"),
      );
    }
    modules.set(name, fns);
  }
  return modules;
}

/** Splits a chunked output stream into lines, calling onLines with each tick's batch. */
function lineSplitter(onLines: (lines: string[]) => void) {
  let partial = "";
  let batch: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (batch.length === 0) return;
    const lines = batch;
    batch = [];
    onLines(lines);
  };
  return {
    write(chunk: string) {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      if (partial.length > MAX_LINE) {
        parts.push(partial.slice(0, MAX_LINE));
        partial = "";
      }
      for (const p of parts) batch.push(p.length > MAX_LINE ? p.slice(0, MAX_LINE) : p.replace(/\r$/, ""));
      if (!scheduled && batch.length > 0) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    end() {
      if (partial) batch.push(partial);
      partial = "";
      flush();
    },
  };
}

class WorkerHostImpl implements WorkerHost {
  readonly session: Session;
  private readonly running = new Map<string, Running>();
  private stopping = false;
  private readonly onError: (message: string, err?: unknown) => void;

  constructor(
    private readonly options: WorkerHostOptions,
    private readonly modules: Map<string, Map<string, WorkerDefinition<unknown>>>,
  ) {
    this.onError = options.onError ?? ((m, e) => console.error(`k4s worker host: ${m}`, e ?? ""));
    this.session = openSession({
      address: options.address,
      token: options.token,
      tls: options.tls,
      reconnect: true,
      hello: () => ({
        // Once registered, keep the name the server gave (it may have added a suffix), so a
        // reconnect resumes as the same host.
        name: (this.session as Session | undefined)?.name || options.name || `${hostname()}-${process.pid}`,
        role: "host",
        labels: options.labels,
        modules: [...modules.keys()],
        capacity: options.capacity ?? 0,
        canSpawn: options.canSpawn ?? false,
        running: [...this.running.values()].filter((r) => !r.stopRequested).map((r) => ({ name: r.name, uid: r.uid })),
      }),
      onFrame: (frame) => this.onFrame(frame),
      // One line per change of the connection, never one per attempt.
      onDisconnect: (err) => {
        for (const r of this.running.values()) r.runtime?.abandonDeliveries(`connection to the server lost: ${err.rawMessage}`);
        this.onError(`lost the connection to ${options.address} (${err.rawMessage}); reconnecting`);
      },
      onConnectFailed: (err) => this.onError(`cannot connect to ${options.address} (${err.rawMessage}); retrying`),
      onWelcome: ({ reconnect, name }) => {
        if (reconnect) this.onError(`reconnected to ${options.address} as host ${name}`);
      },
    });
  }

  get name(): string {
    return this.session.name;
  }

  get done(): Promise<void> {
    return this.session.done;
  }

  containers(): string[] {
    return [...this.running.keys()];
  }

  served(): { module: string; functions: string[] }[] {
    return [...this.modules]
      .map(([module, fns]) => ({ module, functions: [...fns.keys()].sort() }))
      .sort((a, b) => (a.module < b.module ? -1 : a.module > b.module ? 1 : 0));
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const all = [...this.running.values()];
    for (const r of all) this.stopContainer(r, r.graceMs);
    await Promise.all(all.map((r) => r.finished));
    await this.session.close();
  }

  private onFrame(frame: ServerFrame): void {
    const f = frame.frame;
    switch (f.case) {
      case "assign":
        this.assign(f.value);
        break;
      case "stop":
        this.stopFrame(f.value);
        break;
      case "delivery": {
        const d = f.value;
        const r = this.running.get(d.container);
        // A stopping container still takes deliveries that crossed its Stop: it drains them
        // within its grace period, or leaves them unsettled for the server to hand on.
        if (!r?.runtime) {
          this.session.send({
            case: "result",
            value: { id: d.id, error: { code: Code.Unavailable, message: `container ${d.container} is not running on host ${this.name}` } },
          });
          return;
        }
        r.runtime.deliver(toIncomingDelivery(d));
        break;
      }
      case "cancelDelivery":
        for (const r of this.running.values()) r.runtime?.cancel(Number(f.value.id), f.value.reason);
        break;
      default:
        break;
    }
  }

  private report(container: string, uid: string, phase: string, message = "", exitCode = 0): void {
    this.session.send({ case: "state", value: { container, uid, phase, message, exitCode } });
  }

  private log(container: string, stream: string, lines: string[]): void {
    this.session.send({ case: "log", value: { container, lines, stream } });
    this.options.onLog?.(container, stream, lines);
  }

  private assign(a: Assign): void {
    const existing = this.running.get(a.container);
    if (existing) {
      // A reassignment of what runs already (e.g. after a reconnect) only needs its state again.
      if (existing.uid === a.uid && !existing.stopRequested) {
        if (existing.runtime || existing.child?.pid !== undefined) this.report(a.container, a.uid, "Running");
        return;
      }
      this.stopContainer(existing, 0);
      void existing.finished.then(() => this.assign(a));
      return;
    }
    if (this.stopping) {
      this.report(a.container, a.uid, "Failed", `host ${this.name} is shutting down`);
      return;
    }
    let markFinished!: () => void;
    const finished = new Promise<void>((r) => (markFinished = r));
    const graceSeconds = a.spec?.terminationGraceSeconds || 5;
    const r: Running = {
      name: a.container,
      uid: a.uid,
      graceMs: Math.min(graceSeconds * 1000, MAX_SHUTDOWN_GRACE_MS),
      stopRequested: false,
      finished,
      markFinished,
    };
    const spec = a.spec;
    if (spec && spec.command.length > 0) {
      this.running.set(a.container, r);
      this.spawnCommand(r, a);
      return;
    }
    const moduleName = spec?.module ?? "";
    const fnName = spec?.function ?? "";
    const mod = this.modules.get(moduleName);
    const def = mod?.get(fnName);
    if (!def) {
      const why = !mod
        ? `host ${this.name} has no worker module "${moduleName}" (it serves ${[...this.modules.keys()].map((m) => `"${m}"`).join(", ") || "none"})`
        : `module "${moduleName}" has no function "${fnName}"`;
      this.report(a.container, a.uid, "Failed", why);
      return;
    }
    const params: unknown = spec?.parameters ?? {};
    const link: ContainerLink = {
      call: (opts) => this.session.call(opts),
      result: (id, payload, error) => this.session.result(id, payload?.data ?? EMPTY, payload?.contentType ?? "", error),
      log: (stream, lines) => this.log(a.container, stream, lines),
    };
    r.runtime = createContainerRuntime<unknown>({ name: a.container, params, concurrency: spec?.concurrency, link });
    this.running.set(a.container, r);
    this.report(a.container, a.uid, "Running");
    void r.runtime.run(def.run).then((outcome) => {
      if (this.running.get(r.name) !== r) return;
      this.running.delete(r.name);
      if (r.killTimer) clearTimeout(r.killTimer);
      if (r.stopRequested) this.report(r.name, r.uid, "Stopped");
      else if (outcome.ok) this.report(r.name, r.uid, "Succeeded");
      else this.report(r.name, r.uid, "Failed", errorMessage(outcome.error));
      r.markFinished();
    });
  }

  private spawnCommand(r: Running, a: Assign): void {
    const spec = a.spec!;
    const [cmd, ...cmdArgs] = spec.command;
    let child: ChildProcess;
    const finish = (phase: string, message: string, exitCode = 0) => {
      if (this.running.get(r.name) !== r) return;
      this.running.delete(r.name);
      if (r.killTimer) clearTimeout(r.killTimer);
      this.report(r.name, r.uid, r.stopRequested ? "Stopped" : phase, message, exitCode);
      r.markFinished();
    };
    try {
      child = spawn(cmd!, [...cmdArgs, ...spec.args], {
        env: this.commandEnvironment(spec.env, a),
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      finish("Failed", `cannot start command ${JSON.stringify(spec.command.join(" "))}: ${(err as Error).message}`, -1);
      return;
    }
    r.child = child;
    liveChildren.add(child);
    child.once("exit", () => liveChildren.delete(child));
    const out = lineSplitter((lines) => this.log(r.name, "stdout", lines));
    const errOut = lineSplitter((lines) => this.log(r.name, "stderr", lines));
    child.stdout!.setEncoding("utf8").on("data", (d: string) => out.write(d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => errOut.write(d));
    child.on("error", (err) => {
      out.end();
      errOut.end();
      finish("Failed", `cannot start command ${JSON.stringify(spec.command.join(" "))}: ${err.message}`, -1);
    });
    child.on("spawn", () => this.report(r.name, r.uid, "Running"));
    child.on("close", (code, signal) => {
      out.end();
      errOut.end();
      if (code === 0) finish("Succeeded", "", 0);
      else if (signal) finish("Failed", `process killed by ${signal}`, 128);
      else finish("Failed", `process exited with code ${code}`, code ?? -1);
    });
  }

  /**
   * A spawned process's environment: this host's, the container's `spec.env`, then how to reach
   * the server as this host does and which container to serve with which credential. The k4s
   * variables this host inherited are dropped first, so a child never sees a stale one.
   */
  private commandEnvironment(specEnv: Readonly<Record<string, string>>, a: Assign): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ...specEnv };
    for (const name of Object.values(ENV)) delete env[name];
    return {
      ...env,
      // No bearer token: the process's own attach credential is all it gets.
      ...connectionEnvironment({ address: this.options.address, tls: this.options.tls }),
      [ENV.container]: a.container,
      [ENV.attachToken]: a.token,
    };
  }

  private stopFrame(s: Stop): void {
    const r = this.running.get(s.container);
    if (!r || (s.uid && r.uid !== s.uid)) {
      // Nothing to stop: say so, so the server does not wait for a grace period.
      this.report(s.container, s.uid, "Stopped", "not running on this host");
      return;
    }
    this.stopContainer(r, s.graceMs);
  }

  private stopContainer(r: Running, graceMs: number): void {
    if (r.stopRequested) return;
    r.stopRequested = true;
    if (r.runtime) {
      r.runtime.stop(graceMs);
      // Cut off: a function that ignores ctx.signal is abandoned after the grace period.
      r.killTimer = setTimeout(() => {
        if (this.running.get(r.name) !== r) return;
        this.running.delete(r.name);
        this.report(r.name, r.uid, "Stopped", `did not finish within ${graceMs} ms of its stop`);
        r.markFinished();
      }, graceMs + 200);
    } else if (r.child) {
      r.child.kill("SIGTERM");
      r.killTimer = setTimeout(() => r.child?.kill("SIGKILL"), graceMs);
      r.killTimer.unref();
    }
  }
}

function errorMessage(err: unknown): string {
  if (err instanceof ConnectError) return err.rawMessage;
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/**
 * Runs a worker host: loads its modules (the built-in "workers" plus options.modules), connects
 * to the server and resolves once the server welcomed it.
 */
export async function runWorkerHost(options: WorkerHostOptions): Promise<WorkerHost> {
  if ((options.builtin ?? true) && options.modules && Object.hasOwn(options.modules, BUILTIN_MODULE)) {
    throw new Error(`worker module name "${BUILTIN_MODULE}" is the built-in module's: pick another name, or leave the built-in module out to replace it (builtin: false; k4s worker --no-builtin)`);
  }
  const modules = await loadModules(options.modules ?? {});
  if (options.builtin ?? true) {
    modules.set(BUILTIN_MODULE, new Map(Object.entries(builtinWorkers) as [string, WorkerDefinition<unknown>][]));
  }
  installExitHook();
  const host = new WorkerHostImpl(options, modules);
  await host.session.ready;
  return host;
}
