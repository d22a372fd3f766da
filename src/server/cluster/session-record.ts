/**
 * The session records of a cluster: which server holds each worker host's and attached
 * process's session, as every server keeps them in etcd under its lease (cluster-member.ts
 * writes them, session-locator.ts follows them). Only their format lives here, so that what
 * reads them does not load the etcd client.
 */

/** Key prefix of everything the cluster keeps in etcd (outside the objects' "/k4s/"). */
export const CLUSTER_PREFIX = "/k4s-cluster/";
/** Where each server's record lives: CLUSTER_PREFIX + SERVERS + advertise address (under its lease). */
export const SERVERS = "servers/";
/** The store key prefix of every live server's record: a server is a member while its record is there. */
export const SERVER_RECORDS_PREFIX = CLUSTER_PREFIX + SERVERS;
/** Where each server's sessions live: CLUSTER_PREFIX + SESSIONS + advertise + "/" + kind + "/" + name. */
export const SESSIONS = "sessions/";
/** The store key prefix of every server's session records (see parseSessionRecord). */
export const SESSION_RECORDS_PREFIX = CLUSTER_PREFIX + SESSIONS;

/** SessionEntry is a session a server holds: a worker host's or an attached process's. */
export interface SessionEntry {
  kind: "host" | "attached";
  /** The host's name, or the attached container's name. */
  name: string;
  /** The session's id on its server. */
  sessionId: string;
  /** What a host runs, for a scheduler that sees the hosts of every server (hosts only). */
  host?: HostOffer;
  /**
   * Whether the host showed the credential of its name (hosts only): a session that did not
   * cannot take the name over from another server's (see session-locator.ts).
   */
  proven?: boolean;
}

/** HostOffer is what a worker host said it can run when it joined. */
export interface HostOffer {
  /** The worker modules it serves. */
  modules: string[];
  /** Most containers it runs at once (0: no limit). */
  capacity: number;
  /** Whether it may spawn the processes of command containers. */
  canSpawn: boolean;
}

/**
 * The server and session of one session record, read from its store key and JSON value;
 * undefined for a key outside the records or a value that is not one.
 */
export function parseSessionRecord(key: string, value: string): { server: string; entry: SessionEntry } | undefined {
  if (!key.startsWith(SESSION_RECORDS_PREFIX)) return undefined;
  const server = key.slice(SESSION_RECORDS_PREFIX.length).split("/")[0];
  try {
    const entry = JSON.parse(value) as SessionEntry;
    return server && (entry.kind === "host" || entry.kind === "attached") && typeof entry.name === "string" ? { server, entry } : undefined;
  } catch {
    return undefined;
  }
}

