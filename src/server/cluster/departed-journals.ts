/**
 * The leader's reading back of what departed servers journaled through services.
 *
 * A durable send through a Service is journaled against the Service, in a key naming the member
 * that accepted it (send-journal.ts); that member delivers it, and no other server reads it back
 * while the member lives (two servers would deliver it). Once the member is gone (killed: its
 * lease expired; stopped: it left), its unsettled entries are read back by exactly one live
 * server, the leader: when it becomes the leader (members may have gone while there was none,
 * or the old leader itself), and whenever a member it saw is gone. The leader reads the member
 * records every READ_EVERY_MS (a plain read, as the member's watchdog reads the leader's name; a
 * killed member's record stays a lease TTL, at least 2 s, after its last renewal, so no poll
 * misses it, even while a pass runs), and after a failed read it reads every journal again
 * once it can. Each entry is claimed in a transaction comparing its writer's record absent
 * (send-journal.ts): a member that joined after the records were read keeps its entries, and a
 * server that took over a departed member's address and reads them at start takes each entry
 * only if the leader did not (and the other way round).
 *
 * A server that took over a departed member's address reads that member's entries itself at
 * start (they are its own earlier run's): the leader sees no member go then.
 */
import type { Controller } from "../controllers/controller.js";
import type { Store } from "../store/store.js";
import { SERVER_RECORDS_PREFIX } from "./session-record.js";

/** How often the leader reads the member records (ms). */
const READ_EVERY_MS = 1000;

/** DepartedJournalsOptions are where the member records are and what reads journals back. */
export interface DepartedJournalsOptions {
  /** The cluster's store (etcd): the member records live under SERVER_RECORDS_PREFIX. */
  store: Pick<Store, "range">;
  /**
   * Reads back the service journals' entries of every writer not in `live`, each claimed only
   * while the writer's record (`recordOf`) is absent (MessagingPlane.readDeparted).
   */
  readDeparted(live: ReadonlySet<string>, recordOf: (writer: string) => string): Promise<number>;
  onError(message: string, err?: unknown): void;
}

/** The names (advertise addresses) of the cluster's live members. */
async function liveMembers(store: Pick<Store, "range">): Promise<Set<string>> {
  const r = await store.range(SERVER_RECORDS_PREFIX);
  return new Set(r.kvs.map((kv) => kv.key.slice(SERVER_RECORDS_PREFIX.length)));
}

/** Creates the leader's reader of departed servers' service journals (one of the leader's controllers). */
export function createDepartedJournals(options: DepartedJournalsOptions): Controller {
  let timer: NodeJS.Timeout | undefined;
  /**
   * Every member seen since the last pass that read their journals (undefined: read every
   * journal next). Kept up while a pass runs too: a member that joins and dies during a long
   * pass is seen (its record stays a lease TTL), and read back by the next pass.
   */
  let seen: Set<string> | undefined;
  let running: Promise<void> | undefined;
  let failing = false;
  const recordOf = (writer: string) => SERVER_RECORDS_PREFIX + writer;

  const failed = (err: unknown) => {
    // Told once per run of failures (etcd may be away for a while: the read is tried every second).
    if (!failing) options.onError("cluster: reading back the service journals of departed servers failed; trying again", err);
    seen = undefined;
    failing = true;
  };

  async function check(): Promise<void> {
    const live = await liveMembers(options.store);
    if (seen === undefined || [...seen].some((m) => !live.has(m))) {
      seen = new Set(live);
      await options.readDeparted(live, recordOf);
    } else for (const m of live) seen.add(m);
    failing = false;
  }

  /** While a pass runs: only notes the members there are now. */
  async function note(): Promise<void> {
    const live = await liveMembers(options.store);
    for (const m of live) seen?.add(m);
  }

  function tick() {
    if (running) {
      note().catch(failed);
      return;
    }
    running = check()
      .catch(failed)
      .finally(() => (running = undefined));
  }

  return {
    name: "departed-journals",
    async start() {
      seen = undefined;
      tick();
      timer = setInterval(tick, READ_EVERY_MS);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await running;
    },
    // Nothing is reconciled by key.
    enqueue: () => {},
  };
}
