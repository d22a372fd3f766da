/**
 * Shared test helpers: a real server on port 0, real worker host processes, and the real CLI.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer, type K4sServer, type ServerOptions } from "../src/server/server.js";

export { eventually } from "./eventually.js";

/**
 * Path of the k4s command. It runs the compiled JavaScript of dist/, which `npm test` builds
 * first (its pretest script); run `npm run build` before running a test file on its own.
 */
export const K4S_BIN = fileURLToPath(new URL("../bin/k4s.js", import.meta.url));

/**
 * Path of the compiled worker SDK (what `k4s/workers` resolves to), for worker modules that tests
 * write as plain JavaScript and hand to `k4s worker --module`, which loads no TypeScript.
 */
export const WORKERS_SDK_JS = fileURLToPath(new URL("../dist/workers/index.js", import.meta.url));

/** Starts an in-process server on a free loopback port with in-memory state unless told otherwise. */
export async function startTestServer(options: ServerOptions = {}): Promise<K4sServer> {
  const server = createServer({ port: 0, onError: () => {}, ...options });
  await server.start();
  return server;
}

/** A child process with its collected output. */
export interface Proc {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process ended. */
  exited: Promise<number | string>;
  /** Resolves once stdout or stderr contains text (rejects after timeoutMs). */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

/**
 * Spawns `node bin/k4s.js ...args` and collects its output; `via` is a command that runs it
 * (e.g. `setpriv --reuid=...` to run it as another user).
 */
export function spawnK4s(args: string[], env: Record<string, string> = {}, via: readonly string[] = []): Proc {
  return spawnProcess([...via, process.execPath, K4S_BIN, ...args], { ...process.env, ...env }, "pipe");
}

/**
 * Starts a command line on a pseudo-terminal (util-linux's `script`); its stdout is what the
 * terminal shows (the command's stdout and stderr together).
 */
export function spawnInTerminal(commandLine: string, env: Record<string, string>): Proc {
  const { NO_COLOR: _n, FORCE_COLOR: _f, ...rest } = process.env;
  return spawnProcess(["script", "-qec", commandLine, "/dev/null"], { ...rest, TERM: "xterm", ...env }, "ignore");
}

/**
 * The JSON lines a test's worker appended to a file (none while it does not exist), those whose
 * `ev` is the one given: what a recorder worker got ("start") or handled ("done").
 */
export function recorderLines<T extends { ev: string }>(file: string, ev: T["ev"]): T[] {
  if (!existsSync(file)) return [];
  // Only whole lines (a newline after them): a line being appended may be read half written,
  // and even a half ending in "}" would not parse.
  return readFileSync(file, "utf8")
    .split("\n")
    .slice(0, -1)
    .filter((l) => l.endsWith("}"))
    .map((l) => JSON.parse(l) as T)
    .filter((l) => l.ev === ev);
}

/**
 * Prints the last lines of each process's output as test diagnostics: called when a test of
 * several processes fails, so that a failure seen once in CI says what each process did.
 */
export function dumpLogs(procs: Record<string, Proc | undefined>, lines = 60): void {
  for (const [name, p] of Object.entries(procs)) {
    if (!p) continue;
    const out = `${p.stdout()}${p.stderr() ? `\n[stderr]\n${p.stderr()}` : ""}`.trimEnd().split("\n").slice(-lines);
    console.log(`# --- ${name} (last ${out.length} lines) ---\n${out.map((l) => `#   ${l}`).join("\n")}`);
  }
}

/** Spawns argv with exactly env, collecting its output. */
function spawnProcess(argv: readonly string[], env: NodeJS.ProcessEnv, stdin: "pipe" | "ignore"): Proc {
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: [stdin, "pipe", "pipe"] });
  let out = "";
  let err = "";
  const waiters = new Set<() => void>();
  child.stdout!.on("data", (d) => {
    out += d;
    waiters.forEach((w) => w());
  });
  child.stderr!.on("data", (d) => {
    err += d;
    waiters.forEach((w) => w());
  });
  const exited = new Promise<number | string>((resolve) =>
    child.on("exit", (code, signal) => {
      resolve(code ?? signal ?? -1);
      waiters.forEach((w) => w());
    }),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(text, timeoutMs = 30_000) {
      const has = () => (typeof text === "string" ? (out + err).includes(text) : text.test(out + err));
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (has()) {
            cleanup();
            resolve();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`process exited before printing ${text}:\n${out}\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${text}; output:\n${out}\n${err}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion and returns its exit code and output. */
export async function runK4s(
  args: string[],
  env: Record<string, string> = {},
  input?: string,
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = spawnK4s(args, env);
  if (input !== undefined) p.child.stdin!.end(input);
  else p.child.stdin!.end();
  const code = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

/** A fresh self-signed certificate and key (PEM) for these subject alternative names, made by openssl. */
export function selfSignedCertificate(altNames = "DNS:localhost,IP:127.0.0.1"): { cert: Buffer; key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "k4s-cert-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=k4s-test",
    "-addext", `subjectAltName=${altNames}`,
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  return { cert: readFileSync(join(dir, "cert.pem")), key: readFileSync(join(dir, "key.pem")) };
}

/** A test certificate authority: its certificate, and the files of certificates it signs. */
export interface TestCa {
  /** The CA's certificate file (PEM). */
  caFile: string;
  /** Signs a fresh key's certificate for these subject alternative names; returns its files. */
  issue(name: string, altNames?: string): { certFile: string; keyFile: string };
}

/** Makes a fresh certificate authority with openssl, in a temporary folder. */
export function testCa(): TestCa {
  const dir = mkdtempSync(join(tmpdir(), "k4s-ca-"));
  const caFile = join(dir, "ca.pem");
  const caKey = join(dir, "ca-key.pem");
  const ssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  ssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=k4s-test-ca", "-keyout", caKey, "-out", caFile]);
  return {
    caFile,
    issue(name, altNames = "IP:127.0.0.1,DNS:localhost") {
      const [keyFile, csr, certFile, ext] = ["key.pem", "csr.pem", "cert.pem", "ext.cnf"].map((f) => join(dir, `${name}-${f}`)) as [string, string, string, string];
      writeFileSync(ext, `subjectAltName=${altNames}\n`);
      ssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", keyFile, "-out", csr]);
      ssl(["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKey, "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", certFile]);
      return { certFile, keyFile };
    },
  };
}

/** The Python the polyglot tests run: Debian's, with its gRPC packages (K4S_TEST_PYTHON to change). */
export const PYTHON = process.env.K4S_TEST_PYTHON || "/usr/bin/python3";

/**
 * Readies the Python parts of the tests: checks that PYTHON has gRPC and its code generator,
 * failing with one line that names the Debian packages when not, then generates the stubs.
 */
export function preparePython(): void {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const probe = spawnSync(PYTHON, ["-c", "import grpc, grpc_tools"], { encoding: "utf8" });
  if (probe.status !== 0) {
    throw new Error(
      `${PYTHON} cannot import grpc and grpc_tools: the Python tests need Debian's python3-grpcio and python3-grpc-tools (apt-get install python3-grpcio python3-grpc-tools)`,
    );
  }
  execFileSync("sh", ["examples/python/generate.sh"], { cwd: root, stdio: "inherit", env: { ...process.env, PYTHON } });
}

/** The pids of the live processes whose parent is `ppid` (from /proc). */
export function childrenOf(ppid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid && fields[0] !== "Z") pids.push(Number(entry));
    } catch {
      // It ended meanwhile.
    }
  }
  return pids;
}

/** Whether a process runs (and is not a zombie left for a parent that does not reap it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

/** Runs a command line on a pseudo-terminal (util-linux's `script`), returning what it printed. */
export async function inTerminal(commandLine: string, env: Record<string, string>): Promise<{ stdout: string }> {
  const p = spawnInTerminal(commandLine, env);
  const closed = new Promise<void>((resolve, reject) => {
    p.child.on("error", reject);
    p.child.on("close", () => resolve());
  });
  await closed;
  return { stdout: p.stdout() };
}
