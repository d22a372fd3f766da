/**
 * The line `send` and `request` print on stderr when their message waits for a container or
 * service to be ready, so a silent pause is never a mystery (as `apply --wait` shows progress).
 */
import type { Container, Service } from "../gen/k4s/v1/resources_pb.js";
import { parseTarget } from "../api/target.js";
import type { K4sClient } from "../client/client.js";
import { formatDuration } from "./duration.js";

/** How long a call may take before the command says what it waits for. */
const NOTICE_AFTER_MS = 1000;

/** The wait a call gets unless --timeout says otherwise: the server's default deadline. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

/**
 * Runs a send or request; when it has not settled after a second, looks at its target and says
 * on stderr what it waits for (no ready endpoint, a container not running yet). Resolves or
 * rejects as the call does.
 */
export async function withWaitingNotice<T>(client: K4sClient, target: string, timeoutMs: number, call: Promise<T>): Promise<T> {
  let settled = false;
  const timer = setTimeout(() => {
    void describeWait(client, target).then((what) => {
      if (settled || !what) return;
      process.stderr.write(`waiting for ${what} (gives up after ${formatDuration(timeoutMs)})\n`);
    });
  }, NOTICE_AFTER_MS);
  try {
    return await call;
  } finally {
    settled = true;
    clearTimeout(timer);
  }
}

/** What a call to target waits for, in words; undefined when nothing looks unready. */
async function describeWait(client: K4sClient, text: string): Promise<string | undefined> {
  try {
    const target = parseTarget(text);
    if (target.kind !== "service") {
      const container = await client.get("Container", target.name).catch(() => undefined);
      if (container) return containerWait(container);
      if (target.kind === "container") return undefined;
    }
    const service = await client.get("Service", target.name).catch(() => undefined);
    return service ? serviceWait(service) : undefined;
  } catch {
    return undefined;
  }
}

function containerWait(c: Container): string | undefined {
  if (c.status?.ready) return undefined;
  const phase = c.status?.phase || "Pending";
  const why = c.status?.message ? `, ${c.status.message}` : "";
  return `container/${c.metadata?.name}: ${phase}, not ready yet${why}`;
}

function serviceWait(s: Service): string | undefined {
  if ((s.status?.endpoints.length ?? 0) > 0) return undefined;
  return `service/${s.metadata?.name}: no ready endpoint yet`;
}
