/**
 * Host credentials: what proves a worker host is the one its name was given to. A host's
 * Welcome carries an HMAC of its name under a key kept in the store; the host sends it back in
 * every reconnect's Hello. Without it, a session cannot take over a live host's name (and with
 * it the host's containers), nor resume containers that waited for that host after a server
 * restart. The key lives in the store, so a credential outlives a server restart and holds on
 * every server of a cluster sharing the store.
 *
 * The same key proves a server of a cluster to another: a peer credential is an HMAC of the
 * server's advertise address (under another prefix than a host name's, so neither can stand for
 * the other). Only servers read the key (it is outside every API), so a client holding the
 * cluster's bearer token still cannot show one.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Store } from "../store/store.js";

/** Where the key is kept: outside the resource prefix, so no watch or list ever shows it. */
export const HOST_CREDENTIAL_KEY = "/k4s-secrets/host-credential-key";

/** HostCredentials issues and checks the credentials of host names. */
export interface HostCredentials {
  /** Reads the key from the store, creating it on the first start. */
  load(): Promise<void>;
  /** The credential of a host name. */
  issue(name: string): string;
  /** Whether `credential` is the one issued for `name` (false for "" or before load()). */
  verify(name: string, credential: string): boolean;
  /** The peer credential of a server of the cluster, by its advertise address. */
  issuePeer(advertise: string): string;
  /** Whether `credential` is the peer credential of `advertise` (false for "" or before load()). */
  verifyPeer(advertise: string, credential: string): boolean;
}

/** Creates the host credentials over the server's store. */
export function createHostCredentials(store: Store): HostCredentials {
  let key: Uint8Array | undefined;
  const mac = (k: Uint8Array, what: string) => createHmac("sha256", k).update(what).digest();
  const issue = (what: string) => {
    if (!key) throw new Error("host credentials used before load()");
    return mac(key, what).toString("base64url");
  };
  const verify = (what: string, credential: string) => {
    if (!key || credential === "") return false;
    const given = Buffer.from(credential, "base64url");
    const expected = mac(key, what);
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  return {
    async load() {
      let kv = await store.get(HOST_CREDENTIAL_KEY);
      if (!kv) {
        // Created once; a server that lost the race to another one sharing the store reads theirs.
        await store.txn([{ key: HOST_CREDENTIAL_KEY, modRevision: 0 }], [{ type: "put", key: HOST_CREDENTIAL_KEY, value: randomBytes(32) }]);
        kv = await store.get(HOST_CREDENTIAL_KEY);
      }
      if (!kv || kv.value.length < 16) throw new Error(`the store holds no usable host credential key at ${HOST_CREDENTIAL_KEY}`);
      key = kv.value;
    },
    issue: (name) => issue(`host:${name}`),
    verify: (name, credential) => verify(`host:${name}`, credential),
    issuePeer: (advertise) => issue(`peer:${advertise}`),
    verifyPeer: (advertise, credential) => verify(`peer:${advertise}`, credential),
  };
}
