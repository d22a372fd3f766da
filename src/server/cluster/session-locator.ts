/**
 * Where every worker session of the cluster is: which server holds each host's and each attached
 * process's session, read from the session records every server keeps in etcd under its lease
 * (cluster-member.ts) and followed by a watch. It is what a server needs to route a message for a
 * container whose session another server holds, and what a scheduler needs to see the hosts of
 * every server.
 *
 * A host that moved (its server died and it reconnected to another) may briefly have two records:
 * the old one stays until etcd expires the dead server's lease. The newer record (the later
 * create revision) is the one in force. A host that moves shows the credential of its name
 * (`proven`); a session that showed none cannot take a name over: a proven record wins over an
 * unproven one, and among unproven ones the first (the oldest) keeps the name.
 */
import { abortableDelay } from "../../api/abortable-delay.js";
import { createBackoff } from "../../api/backoff.js";
import { listenTo } from "../listen-to.js";
import type { Store, StoreEvent } from "../store/store.js";
import { parseSessionRecord, SESSION_RECORDS_PREFIX, type SessionEntry } from "./session-record.js";

/** LocatedSession is a session record with the server that holds it. */
export interface LocatedSession extends SessionEntry {
  /** The advertise address of the server holding the session. */
  server: string;
  /** The store revision that created the record (the newest one is in force). */
  createRevision: number;
}

/** SessionName names a session by its kind and name (a host's, or an attached container's). */
export type SessionName = Pick<SessionEntry, "kind" | "name">;

/** SessionLocatorOptions say where the records are read from. */
export interface SessionLocatorOptions {
  /** The cluster's store (etcd): the records live under SESSION_RECORDS_PREFIX. */
  store: Store;
  /** Told when the watch failed and is opened again (nothing is lost: it lists anew). */
  onError(message: string, err?: unknown): void;
}

/** SessionLocator knows which server holds every host's and attached process's session. */
export interface SessionLocator {
  /** Lists the records (again after a back-off while that fails), then follows them; resolves once the first listing is in. */
  start(): Promise<void>;
  /** The record one server keeps of a session of one kind and name, in force or not. */
  own(server: string, kind: SessionEntry["kind"], name: string): LocatedSession | undefined;
  /** The session in force of a host, by the host's name. */
  host(name: string): LocatedSession | undefined;
  /** The session in force of an attached process, by its container's name. */
  attached(container: string): LocatedSession | undefined;
  /** Every host session in force, in name order. */
  hosts(): LocatedSession[];
  /**
   * Calls listener after every change of the records (a batch of one revision, or a relisting),
   * with the sessions the batch touched (undefined after a relisting: any may have changed);
   * returns what stops it.
   */
  onChange(listener: (touched?: readonly SessionName[]) => void): () => void;
  /** Stops following the records. */
  stop(): void;
}

/** Creates a locator (nothing is read until start()). */
export function createSessionLocator(options: SessionLocatorOptions): SessionLocator {
  const { store } = options;
  /** Every record by its store key, and the keys of each kind and name ("host/h1"): routing looks one up per message. */
  const records = new Map<string, LocatedSession>();
  const byName = new Map<string, Set<string>>();
  const listeners: Array<(touched?: readonly SessionName[]) => void> = [];
  const abort = new AbortController();
  const retries = createBackoff({ initialMs: 100, maxMs: 2000, jitter: 0.2 });

  const put = (key: string, value: Uint8Array, createRevision: number) => {
    const r = parseSessionRecord(key, Buffer.from(value).toString("utf8"));
    if (!r) return;
    remove(key);
    records.set(key, { ...r.entry, server: r.server, createRevision });
    const id = `${r.entry.kind}/${r.entry.name}`;
    byName.set(id, (byName.get(id) ?? new Set()).add(key));
  };
  const remove = (key: string) => {
    const r = records.get(key);
    if (!r) return;
    records.delete(key);
    const id = `${r.kind}/${r.name}`;
    const keys = byName.get(id);
    keys?.delete(key);
    if (keys?.size === 0) byName.delete(id);
  };
  /** Applies one event; returns the session it touched, if the key is a record's. */
  const apply = (e: StoreEvent): SessionName | undefined => {
    const before = records.get(e.kv.key);
    if (e.type === "delete") remove(e.kv.key);
    else put(e.kv.key, e.kv.value, e.kv.createRevision);
    const r = records.get(e.kv.key) ?? before;
    return r && { kind: r.kind, name: r.name };
  };
  const changed = (touched?: readonly SessionName[]) => listeners.forEach((l) => l(touched));

  async function list(): Promise<number> {
    const r = await store.range(SESSION_RECORDS_PREFIX);
    records.clear();
    byName.clear();
    for (const kv of r.kvs) put(kv.key, kv.value, kv.createRevision);
    changed();
    return r.revision;
  }

  /** Follows the records from a revision; on any failure lists anew, after a back-off. */
  async function follow(from: number): Promise<void> {
    let revision = from;
    while (!abort.signal.aborted) {
      try {
        for await (const batch of store.watch(SESSION_RECORDS_PREFIX, revision, abort.signal)) {
          revision = batch.revision;
          retries.reset();
          if (batch.events.length === 0) continue;
          const touched: SessionName[] = [];
          for (const e of batch.events) {
            const t = apply(e);
            if (t) touched.push(t);
          }
          changed(touched);
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        options.onError("cluster: following the session records failed; listing them again", err);
      }
      await abortableDelay(retries.next(), abort.signal);
      if (abort.signal.aborted) return;
      revision = await list().catch(() => revision);
    }
  }

  /**
   * The record in force among those of one kind and name: the newest proven one; without one,
   * the oldest (an unproven session never takes a name another server's session holds).
   */
  function inForce(kind: SessionEntry["kind"], name: string): LocatedSession | undefined {
    let best: LocatedSession | undefined;
    for (const key of byName.get(`${kind}/${name}`) ?? []) {
      const r = records.get(key)!;
      if (!best || wins(r, best)) best = r;
    }
    return best;
  }

  return {
    own: (server, kind, name) => records.get(`${SESSION_RECORDS_PREFIX}${server}/${kind}/${name}`),
    async start() {
      // etcd may not answer yet (a member failing over as the server starts): list again after a
      // back-off until it does, or until stopped.
      for (;;) {
        try {
          const revision = await list();
          retries.reset();
          void follow(revision);
          return;
        } catch (err) {
          if (abort.signal.aborted) throw err;
          options.onError("cluster: listing the session records failed; trying again", err);
        }
        await abortableDelay(retries.next(), abort.signal);
        if (abort.signal.aborted) throw new Error("session locator stopped before its first listing");
      }
    },
    host: (name) => inForce("host", name),
    attached: (container) => inForce("attached", container),
    hosts() {
      const names = [...byName.keys()].filter((id) => id.startsWith("host/")).map((id) => id.slice("host/".length));
      return names.sort().map((n) => inForce("host", n)!);
    },
    onChange: (listener) => listenTo(listeners, listener),
    stop: () => abort.abort(),
  };
}

/** Whether record a is in force over record b of the same kind and name. */
function wins(a: LocatedSession, b: LocatedSession): boolean {
  // Attached sessions carry no proof: the newer one is in force (attaching is claimed cluster-wide).
  const provenA = a.kind === "attached" || a.proven === true;
  const provenB = b.kind === "attached" || b.proven === true;
  if (provenA !== provenB) return provenA;
  return provenA ? a.createRevision > b.createRevision : a.createRevision < b.createRevision;
}
