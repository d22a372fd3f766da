/**
 * The versions of a store's objects this process decoded or wrote, kept so that a watch event
 * about one of them need not be decoded again: what an event says changed is mostly a version
 * some watcher (an informer) still holds, or one a batched write of this process just stored.
 */
import type { AnyObject } from "../../api/kinds.js";
import { isNewerVersion } from "./newer-version.js";
import type { Store } from "./store.js";

/**
 * Pinned versions kept at most: past it the oldest pin goes (pins normally last only until
 * the next watch batch; this bounds watchers that fall far behind).
 */
const MAX_PINNED = 20_000;

/**
 * HeldVersions keeps, for each key, the newest two versions seen, weakly (an event of a write
 * names the version before it and the one after), and pins the versions a batched write stored
 * until a watch event delivered them: nobody else may hold them (a ReplicaSet's new replicas),
 * and a collection in between would have them decoded back. Every object is read-only and
 * used only for exactly its revision.
 */
export class HeldVersions {
  private readonly held = new Map<string, [WeakRef<AnyObject>, WeakRef<AnyObject> | undefined]>();
  private readonly pinned = new Map<string, AnyObject>();
  /** The stored bytes of versions this process wrote or decoded, for as long as the version lives. */
  private readonly bytes = new WeakMap<AnyObject, Uint8Array>();
  /** Watches of the store running in this process: with none, nothing would end a pin. */
  private watching = 0;

  /** A watch of the store starts; the function it returns ends it (the last one ends every pin). */
  watchStarted(): () => void {
    this.watching++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.watching === 0) this.pinned.clear();
    };
  }

  /** The version of `key` at exactly `revision`, if it is held. */
  get(key: string, revision: number): AnyObject | undefined {
    const entry = this.held.get(key);
    if (!entry) return undefined;
    const rv = String(revision);
    const newest = entry[0].deref();
    if (newest?.metadata?.resourceVersion === rv) return newest;
    const before = entry[1]?.deref();
    return before?.metadata?.resourceVersion === rv ? before : undefined;
  }

  /**
   * Holds a stored version unless a newer one is held already; `pin`: until delivered(), while
   * some watch runs (with none, it is only held weakly).
   */
  hold(key: string, obj: AnyObject, pin = false): void {
    const entry = this.held.get(key);
    const newest = entry?.[0].deref();
    if (!isNewerVersion(obj, newest)) return;
    this.held.set(key, [new WeakRef(obj), newest ? entry![0] : undefined]);
    if (!pin || this.watching === 0) return;
    // Pinned anew goes last: the oldest pin is the first to go past the bound.
    this.pinned.delete(key);
    this.pinned.set(key, obj);
    if (this.pinned.size > MAX_PINNED) this.pinned.delete(this.pinned.keys().next().value!);
  }

  /** A watch event delivered `key` at `revision`: a pin of that version or an older one ends. */
  delivered(key: string, revision: number): void {
    const pin = this.pinned.get(key);
    if (pin && Number(pin.metadata?.resourceVersion) <= revision) this.pinned.delete(key);
  }

  /** Remembers `value` as the stored bytes of the version `obj` (written or decoded from them). */
  storedAs(obj: AnyObject, value: Uint8Array): void {
    if (this.bytes.has(obj)) return;
    // A view into a larger buffer (an etcd watch response holds many events) is copied: kept as
    // it is, it would keep the whole response alive as long as this version lives in a cache.
    this.bytes.set(obj, value.byteLength === value.buffer.byteLength ? value : value.slice());
  }

  /** The stored bytes of a version, when this process wrote or decoded it. */
  bytesOf(obj: AnyObject): Uint8Array | undefined {
    return this.bytes.get(obj);
  }

  /** The key was deleted: nothing of it is kept. */
  forget(key: string): void {
    this.held.delete(key);
    this.pinned.delete(key);
  }

  /** Pinned versions now (for tests). */
  get pinnedCount(): number {
    return this.pinned.size;
  }
}

const byStore = new WeakMap<Store, HeldVersions>();

/** The held versions of a store, shared by every typed layer over it in this process. */
export function heldVersionsOf(store: Store): HeldVersions {
  let h = byStore.get(store);
  if (!h) byStore.set(store, (h = new HeldVersions()));
  return h;
}
