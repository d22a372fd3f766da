/**
 * The worker sessions one server holds (worker hosts' and attached processes'), kept in memory
 * for `k4s get servers` and, when the server is a member of a cluster, recorded in etcd too so
 * that every server can list them.
 */
import type { WorkerLink } from "../messaging/worker-link.js";
import type { ClusterMember, SessionEntry } from "./cluster-member.js";

/** SessionTableOptions say where else the sessions are recorded. */
export interface SessionTableOptions {
  /**
   * The server's cluster membership, if it has one yet: read at each change, since the member
   * is created only once the server has bound its port (and never over SQLite).
   */
  cluster(): ClusterMember | undefined;
}

/** SessionTable is the set of worker sessions a server holds, fed by the control plane. */
export interface SessionTable {
  /** Records a host or attached session that opened. */
  opened(link: WorkerLink): void;
  /** Forgets a session that ended (one never recorded is ignored). */
  ended(link: WorkerLink): void;
  /** Records a session by its entry. */
  record(entry: SessionEntry): void;
  /** Forgets a session recorded by its entry. */
  forget(entry: SessionEntry): void;
  /** The sessions held now. */
  list(): SessionEntry[];
}

/** The entry of a worker link: a host by its name (with what it runs), an attached process by its container's. */
function entryOf(link: WorkerLink): SessionEntry {
  if (link.role === "attached") return { kind: "attached", name: link.container, sessionId: link.id };
  const host = { modules: [...link.modules].sort(), capacity: link.capacity, canSpawn: link.canSpawn };
  return { kind: "host", name: link.name, sessionId: link.id, host, proven: link.proven };
}

/** Creates the session table of one server. */
export function createSessionTable(options: SessionTableOptions): SessionTable {
  const sessions = new Map<string, SessionEntry>();
  const record = (e: SessionEntry) => {
    sessions.set(e.sessionId, e);
    options.cluster()?.sessionStarted(e);
  };
  const forget = (e: SessionEntry) => {
    if (sessions.delete(e.sessionId)) options.cluster()?.sessionEnded(e);
  };
  return {
    opened: (link) => record(entryOf(link)),
    ended: (link) => forget(entryOf(link)),
    record,
    forget,
    list: () => [...sessions.values()],
  };
}
