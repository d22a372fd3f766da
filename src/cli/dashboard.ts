/**
 * `k4s dashboard`: prints the address of the server's web dashboard (with the token in its
 * fragment, which the browser never sends to the server) and opens it in a browser when the
 * machine has a display.
 */
import { spawn } from "node:child_process";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { Command } from "commander";
import { globalOptions } from "./connection.js";
import { CliError } from "./errors.js";

interface DashboardOptions {
  url?: string;
  open: boolean;
}

/** How long the dashboard may take to answer the check (ms). */
const CHECK_TIMEOUT_MS = 5000;

/** The dashboard's address by the server's default: the gRPC port + 1 on the same host. */
function defaultUrl(server: string, tls: boolean): string {
  const m = /^(.*):(\d+)$/.exec(server.replace(/^https?:\/\//, ""));
  if (!m) throw new CliError(`cannot tell the dashboard's address from --server ${server}: pass --url`);
  return `${tls ? "https" : "http"}://${m[1]}:${Number(m[2]) + 1}/`;
}

/** Resolves once the page answers 200, or rejects saying what went wrong. */
function check(url: string, ca: string | Buffer | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith("https:") ? httpsRequest : httpRequest;
    const req = get(url, { method: "GET", timeout: CHECK_TIMEOUT_MS, ...(ca ? { ca } : {}) }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve();
      else reject(new Error(`HTTP ${res.statusCode}`));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)));
    req.on("error", reject);
    req.end();
  });
}

/** The command that opens a URL on this desktop, when there is one. */
function opener(): string | undefined {
  if (process.platform === "darwin") return "open";
  if (process.platform === "win32") return "explorer";
  return process.env.DISPLAY || process.env.WAYLAND_DISPLAY ? "xdg-open" : undefined;
}

/** Creates the dashboard command. */
export function dashboardCommand(): Command {
  return new Command("dashboard")
    .description("print the web dashboard's address (with the token) and open it in a browser when there is one")
    .option("--url <url>", "the dashboard's address (default: the --server host, its port + 1)")
    .option("--no-open", "only print the address")
    .action(async (opts: DashboardOptions, cmd: Command) => {
      const g = globalOptions(cmd);
      const base = (opts.url ?? defaultUrl(g.server, g.tls !== undefined)).replace(/\/*$/, "/");
      try {
        await check(base, g.tls?.ca);
      } catch (err) {
        throw new CliError(
          `no dashboard answers at ${base}: ${(err as Error).message} (is the server running with its dashboard? pass --url when it uses another --dashboard-port)`,
        );
      }
      const url = g.token ? `${base}#token=${encodeURIComponent(g.token)}` : base;
      console.log(url);
      const open = opts.open && process.stdout.isTTY ? opener() : undefined;
      if (open) spawn(open, [url], { stdio: "ignore", detached: true }).on("error", () => {}).unref();
    });
}
