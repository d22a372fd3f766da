/**
 * Process helpers of the benchmark: forking TypeScript children with an IPC channel, spawning
 * binaries, picking free loopback ports, and reading a process's CPU time and RSS from /proc
 * (the same way for Node children and for nats-server, which is a Go binary).
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

/** Clock ticks per second of /proc/<pid>/stat times (Linux: 100 almost everywhere). */
const CLK_TCK = 100;

/** Child is a started child process with a message channel (IPC) when it is a Node child. */
export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly process: ChildProcess;
  /** Sends a command over IPC and resolves with the first message answering it (same `id`). */
  ask<T = Record<string, unknown>>(msg: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  /** Resolves with the first IPC message for which match returns true. */
  waitMessage<T = Record<string, unknown>>(match: (m: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<T>;
  /** Collected stderr (last 8 KiB), for error messages. */
  stderr(): string;
  /** Stops the child: SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

let nextAskId = 1;

/** Every child still running, so a harness that exits or is interrupted leaves none behind. */
const live = new Set<ChildProcess>();
let reaperInstalled = false;

function installReaper(): void {
  if (reaperInstalled || process.send) return;
  reaperInstalled = true;
  process.on("exit", () => {
    for (const c of live) c.kill("SIGKILL");
  });
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      for (const c of live) c.kill("SIGTERM");
      process.exit(130);
    });
  }
}

function wrapChild(name: string, child: ChildProcess, passStdout: boolean): Child {
  installReaper();
  live.add(child);
  child.once("exit", () => live.delete(child));
  let err = "";
  child.stderr?.on("data", (d: Buffer) => {
    err = (err + d.toString()).slice(-8192);
  });
  if (passStdout) child.stdout?.on("data", () => {});
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listeners = new Set<(m: Record<string, unknown>) => void>();
  child.on("message", (m) => listeners.forEach((l) => l(m as Record<string, unknown>)));
  const waitMessage = <T>(match: (m: Record<string, unknown>) => boolean, timeoutMs = 30_000) =>
    new Promise<T>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        listeners.delete(onMessage);
        child.off("exit", onExit);
      };
      const onMessage = (m: Record<string, unknown>) => {
        if (!match(m)) return;
        done();
        if (m.ev === "error") reject(new Error(`${name}: ${String(m.message)}`));
        else resolve(m as T);
      };
      const onExit = (code: number | null, signal: string | null) => {
        done();
        reject(new Error(`${name} exited (${code ?? signal}) while waiting for a message; stderr:\n${err}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${name}: no answer within ${timeoutMs} ms; stderr:\n${err}`));
      }, timeoutMs);
      listeners.add(onMessage);
      child.once("exit", onExit);
    });
  return {
    name,
    pid: child.pid!,
    process: child,
    ask<T>(msg: Record<string, unknown>, timeoutMs = 60_000) {
      const id = nextAskId++;
      const answer = waitMessage<T>((m) => m.id === id, timeoutMs);
      child.send({ ...msg, id });
      return answer;
    },
    waitMessage,
    stderr: () => err,
    async stop(graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Forks a TypeScript file of the bench (run through tsx) with an IPC channel; waits for its {ev:"ready"}. */
export async function forkTs(
  name: string,
  file: URL,
  args: string[] = [],
  options: { execArgv?: string[]; readyTimeoutMs?: number; env?: Record<string, string> } = {},
): Promise<{ child: Child; ready: Record<string, unknown> }> {
  const child = fork(fileURLToPath(file), args, {
    execArgv: ["--import", "tsx", ...(options.execArgv ?? [])],
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    stdio: ["ignore", "inherit", "pipe", "ipc"],
  });
  const c = wrapChild(name, child, false);
  try {
    const ready = await c.waitMessage((m) => m.ev === "ready" || m.ev === "error", options.readyTimeoutMs ?? 120_000);
    return { child: c, ready };
  } catch (err) {
    await c.stop(500);
    throw err;
  }
}

/** Spawns a binary (no IPC) and waits until its stderr or stdout shows `readyText`. */
export async function spawnBinary(name: string, command: string, args: string[], readyText: RegExp, timeoutMs = 15_000): Promise<Child> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  const c = wrapChild(name, child, true);
  await new Promise<void>((resolve, reject) => {
    let seen = "";
    const check = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-8192);
      if (readyText.test(seen)) finish();
    };
    const finish = (err?: Error) => {
      clearTimeout(timer);
      child.stdout!.off("data", check);
      child.stderr!.off("data", check);
      child.off("exit", onExit);
      child.off("error", onError);
      if (err) reject(err);
      else resolve();
    };
    const onExit = (code: number | null) => finish(new Error(`${name} exited (${code}) before it was ready:\n${seen}`));
    const onError = (err: Error) => finish(new Error(`${name} could not start: ${err.message}`));
    const timer = setTimeout(() => finish(new Error(`${name} not ready within ${timeoutMs} ms:\n${seen}`)), timeoutMs);
    child.stdout!.on("data", check);
    child.stderr!.on("data", check);
    child.once("exit", onExit);
    child.once("error", onError);
  });
  return c;
}

/** Returns a free TCP port on 127.0.0.1 (free when asked; good enough on a loopback test box). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** CPU time (user + system) a process used so far, in microseconds; NaN when it is gone. */
export function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1e6) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/**
 * Read and write system calls a process made so far (/proc/PID/io: syscr + syscw, socket reads
 * and writes included); NaN where that cannot be read. Fewer per message: bigger batches.
 */
export function ioSyscalls(pid: number): number {
  try {
    const io = readFileSync(`/proc/${pid}/io`, "utf8");
    const field = (name: string) => Number(/^(\w+): (\d+)$/m.exec(io.slice(io.indexOf(`${name}:`)))?.[2]);
    return field("syscr") + field("syscw");
  } catch {
    return Number.NaN;
  }
}

/** Resident set size of a process in bytes; NaN when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Sends a message to the parent over IPC (no-op when run standalone). */
export function tellParent(msg: Record<string, unknown>): void {
  process.send?.(msg);
}

/** Reports a fatal start-up error to the parent and exits. */
export function failStartup(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.send?.({ ev: "error", message });
  console.error(err);
  process.exit(1);
}

let cleanup: (() => Promise<void> | void) | undefined;
let quitting = false;

async function quit(): Promise<void> {
  if (quitting) return;
  quitting = true;
  // A cleanup that hangs must not keep an orphan alive.
  setTimeout(() => process.exit(0), 3000).unref();
  try {
    await cleanup?.();
  } finally {
    process.exit(0);
  }
}

// Registered on import, before a child starts connecting anywhere, so a child stuck in its
// start-up still ends with the harness.
if (process.send) {
  process.on("disconnect", () => void quit());
  process.on("SIGTERM", () => void quit());
  process.on("SIGINT", () => void quit());
}

/** Sets what a child does before it exits when the harness stops it or goes away. */
export function exitWithParent(onExit?: () => Promise<void> | void): void {
  cleanup = onExit;
}
