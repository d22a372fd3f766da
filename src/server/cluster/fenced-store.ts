/**
 * The store as the leader's control plane writes to it: every transaction also compares the
 * leader's election key (its key in etcd's election, under its campaign's lease) with the
 * revision it had when this server was elected. A leader that was frozen (SIGSTOP, a long GC
 * pause, a stalled VM) past its lease wakes up still believing it leads, but its key is gone
 * (or belongs to a later campaign): etcd refuses the write, so the old leader's controllers
 * cannot write over the new leader's. Reads are not fenced: a stale read is corrected by the
 * write that follows it failing. The same fence over a server's own member record (under its
 * lease) keeps a server cut off past its lease from writing the statuses of what it held.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compare, Store } from "../store/store.js";

/** FencedStoreOptions say what fences the writes and who hears of a refused one. */
export interface FencedStoreOptions {
  /** The election key's compare while this server leads; undefined while it does not. */
  fence(): Compare | undefined;
  /** This server's advertise address, for the refusal's message. */
  self(): string;
  /** Told when a write was refused because the election key moved on: leadership is lost. */
  onFenced(): void;
  /** Told of every refused write (a controller that gave up on it may not say so when it is stopping). */
  onError(message: string): void;
  /**
   * What holds the writes: "leadership" (default: the fence is the election key) or
   * "membership" (the fence is the server's own record under its lease, for the writes of what
   * it holds), for the refusal's words.
   */
  fencedBy?: "leadership" | "membership";
}

/** The words of a refusal, by what fences the writes. */
const REFUSALS = {
  leadership: {
    none: "does not lead the cluster",
    gone: (key: string) => `lost its leadership (its election key ${key} is gone)`,
    whose: "the controllers' writes of a server that no longer leads are refused",
  },
  membership: {
    none: "is not a member of the cluster",
    gone: (key: string) => `lost its membership (its record ${key} is gone with its lease)`,
    whose: "the writes of a server that is no longer a member are refused",
  },
};

/** Wraps a store so that its transactions succeed only while this server's leadership (or membership) holds. */
export function createFencedStore(store: Store, options: FencedStoreOptions): Store {
  const words = REFUSALS[options.fencedBy ?? "leadership"];
  const refused = (why: string) => {
    const err = new ConnectError(`server ${options.self()} ${why}: ${words.whose}`, Code.FailedPrecondition);
    options.onError(`cluster: a write was refused: ${err.rawMessage}`);
    return err;
  };
  return {
    revision: () => store.revision(),
    get: (key) => store.get(key),
    range: (prefix, o) => store.range(prefix, o),
    async txn(compares, ops) {
      const fence = options.fence();
      if (!fence) throw refused(words.none);
      const result = await store.txn([...compares, fence], ops);
      if (result.succeeded) return result;
      // A failed compare: the caller's own (a conflict, answered as usual) or the fence's.
      const now = await store.get(fence.key);
      if (now?.modRevision === fence.modRevision) return result;
      options.onFenced();
      throw refused(words.gone(fence.key));
    },
    watch: (prefix, from, signal) => store.watch(prefix, from, signal),
    compactRevision: () => store.compactRevision(),
    close: () => store.close(),
  };
}
