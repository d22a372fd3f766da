/**
 * Why a server could not start, in one sentence naming the address or path at fault, and which
 * setting to change, so a command line can add its own flag name.
 */
/** The server setting a StartupError is about. */
export type StartupSetting = "port" | "metricsPort" | "dashboardPort" | "dataDir" | "store";

/** StartupError is a server start that failed because of its environment: nothing was written. */
export class StartupError extends Error {
  override name = "StartupError";
  constructor(
    message: string,
    /** The setting to change. */
    readonly setting: StartupSetting,
  ) {
    super(message);
  }
}

const REASONS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "no such address on this machine",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
};

/** The words for an errno-style failure, from its code or else its message. */
export function reasonOf(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const known = /\b(E[A-Z]+)\b/.exec(`${e.code ?? ""} ${e.message ?? ""}`)?.[1];
  return (known && REASONS[known]) || (e.message ?? String(err)).replace(/^\w+: /, "");
}

/** A failure to listen on host:port, as a StartupError about the given setting. */
export function listenError(err: unknown, what: string, address: string, setting: StartupSetting): StartupError {
  return new StartupError(`cannot ${what} on ${address}: ${reasonOf(err)}`, setting);
}
