/**
 * A server's membership in a k4s cluster over etcd: its record under a lease of its own, its
 * campaign in the leader election (etcd3's Election: the candidate whose key was created first
 * leads; the others wait for its key to go), and the sessions it holds, kept under the same
 * lease so that they vanish with the server.
 *
 * Leadership is given up before the lease can have expired: when no keep-alive of the member's
 * lease succeeded for LEASE_SAFETY of its TTL, the member steps down (its controllers stop) and
 * campaigns again once etcd answers. A SIGKILLed leader's keys go when etcd expires its lease,
 * at most one TTL after its last keep-alive; then the next candidate is elected.
 */
import { Etcd3, type Campaign, type Election, type Lease, type Namespace } from "etcd3";
import { createBackoff, type Backoff } from "../../api/backoff.js";
import { CLUSTER_PREFIX, parseSessionRecord, SERVER_RECORDS_PREFIX, SERVERS, SESSIONS, type SessionEntry } from "./session-record.js";

export { CLUSTER_PREFIX, parseSessionRecord, SESSION_RECORDS_PREFIX, type HostOffer, type SessionEntry } from "./session-record.js";

/** Where the claim of each attached container lives: CLUSTER_PREFIX + ATTACH_CLAIMS + container name. */
const ATTACH_CLAIMS = "attach/";

/** The election's name. */
const ELECTION = "leader";
/** Longest a stopping server waits for etcd to take its resignation (ms). */
const STOP_WAIT_MS = 2000;
/** Share of the lease's TTL after which a member without a renewed lease stops leading. */
const LEASE_SAFETY = 0.75;
/**
 * How late a renewal may be (ms past etcd3's own, every third of the TTL) before the member
 * renews once more by itself, on a stream of its own (see renewOnce).
 */
const RENEW_LATE_MS = 150;
/** Longest a renewal of the member's own may take (ms). */
const RENEW_ONCE_TIMEOUT_MS = 1000;

/** ClusterMemberOptions say where etcd is and who this server is. */
export interface ClusterMemberOptions {
  /** host:port of every etcd member. */
  endpoints: readonly string[];
  /** The address other servers and clients reach this server at (its name in the cluster). */
  advertise: string;
  /** Lease time to live (s, at least 2; default 3): how long a dead leader keeps its place. */
  leaseTtlSeconds?: number;
  /** Called with true when this server becomes the leader and false when it stops being it. */
  onLeadership(leader: boolean): void;
  /**
   * Called with true when the member's lease went unrenewed for three quarters of its TTL (etcd
   * may expire it, and with it the records of the sessions it holds, at any moment from then on:
   * the server ends them, so that no other server finds them gone while this one still drives
   * them), and with false once it is renewed again (or the member joined again).
   */
  onLapse?(lapsed: boolean): void;
  onError(message: string, err?: unknown): void;
}

/** ServerEntry is one live server of the cluster as etcd knows it. */
export interface ServerEntry {
  advertise: string;
  /** When the server joined (ms since the epoch). */
  startedAtMs: number;
  leader: boolean;
  sessions: SessionEntry[];
}

/** ClusterMember is this server's place in the cluster. */
export interface ClusterMember {
  readonly advertise: string;
  readonly leaseTtlSeconds: number;
  /** Whether this server leads now. */
  readonly isLeader: boolean;
  /**
   * While this server leads: its election key and that key's revision when it was elected, for
   * the leader's writes to compare (they fail once the key is gone: see fenced-store.ts).
   */
  readonly fence: { key: string; modRevision: number } | undefined;
  /**
   * While this server is a member: its record's key and the revision that wrote it under the
   * current lease, for the writes of what it holds to compare (they fail once its lease expired).
   */
  readonly memberFence: { key: string; modRevision: number } | undefined;
  /** Stops leading at once and campaigns again (a fenced write found the leadership gone). */
  fenced(): void;
  /** Joins: writes the record, then campaigns. Resolves once the record is written. */
  start(): Promise<void>;
  /** The leader's advertise address, if there is a leader. */
  leader(): Promise<string | undefined>;
  /** The leader's advertise address as last seen (kept current by watching the election). */
  readonly knownLeader: string | undefined;
  /** Every live server, with the sessions each holds. */
  servers(): Promise<ServerEntry[]>;
  /** Whether a server of this advertise address is a live member now (its record is in etcd). */
  isMember(advertise: string): Promise<boolean>;
  /** Records that this server holds a session (kept until sessionEnded or the server goes). */
  sessionStarted(entry: SessionEntry): void;
  /** Forgets a session recorded with sessionStarted. */
  sessionEnded(entry: SessionEntry): void;
  /**
   * Claims a container for a process attaching here, cluster-wide: an etcd transaction that
   * writes the claim under this member's lease only if no server holds one (none, or one gone
   * with its server's lease). Resolves to "" when claimed, else to the server holding it.
   */
  claimAttach(container: string, sessionId: string): Promise<string>;
  /** Gives up a claim made by claimAttach for that session (a claim of a later session stays). */
  releaseAttach(container: string, sessionId: string): Promise<void>;
  /** Whether the lease went unrenewed for three quarters of its TTL (see onLapse). */
  readonly lapsed: boolean;
  /** Resigns leadership, removes the record and its sessions, and closes the client. */
  stop(): Promise<void>;
}

/** Creates this server's cluster membership (nothing happens until start()). */
export function createClusterMember(options: ClusterMemberOptions): ClusterMember {
  const ttl = Math.max(2, Math.round(options.leaseTtlSeconds ?? 3));
  const { advertise, onError } = options;
  const client = new Etcd3({ hosts: [...options.endpoints], dialTimeout: 5000 });
  const ns = client.namespace(CLUSTER_PREFIX);
  const election: Election = ns.election(ELECTION, ttl);
  const sessions = createSessionRecords({ ns, advertise, lease: () => lease, onError });
  const startedAtMs = Date.now();
  let lease: Lease | undefined;
  const renewals = createRenewals();
  let memberFence: { key: string; modRevision: number } | undefined;
  const lapsed = flag((value) => options.onLapse?.(value));
  let stopped = false, watchdog: NodeJS.Timeout | undefined, knownLeader: string | undefined;
  const retries = createBackoff({ initialMs: 200, maxMs: 2000 });
  const campaigner = createCampaigner({ client, election, advertise, retries, stopped: () => stopped, onLeadership: options.onLeadership, onError });
  const { campaignOnce, stepDown } = campaigner;

  /** Grants a new lease and writes the record and every held session under it. */
  async function join(): Promise<void> {
    // The grant is sent as the lease is created: the lease counts from then, as renewals do.
    const sentAt = Date.now();
    const next = ns.lease(ttl, { autoKeepAlive: true });
    renewals.track(next);
    next.on("lost", (err) => {
      if (lease !== next || stopped) return;
      onError(`cluster: the lease of server ${advertise} was lost; joining again`, err);
      rejoin();
    });
    await next.grant();
    renewals.granted(sentAt);
    lease = next;
    memberFence = await writeRecord(next, advertise, startedAtMs);
    await sessions.writeAll(next);
  }

  function rejoin(): void {
    stepDown();
    const old = lease;
    lease = memberFence = undefined;
    old?.release();
    const attempt = () => {
      if (stopped) return;
      join().then(
        () => {
          retries.reset();
          campaignOnce();
        },
        (err: unknown) => {
          onError(`cluster: server ${advertise} cannot join through etcd; retrying`, err);
          setTimeout(attempt, retries.next()).unref();
        },
      );
    };
    attempt();
  }

  /** Steps down once the lease may be about to expire unrenewed, and campaigns again once renewed. */
  function checkLease(): void {
    if (stopped || !lease) return;
    const silentMs = Date.now() - renewals.renewedAt;
    if (silentMs > (ttl * 1000) / 3 + RENEW_LATE_MS) renewals.renewOnce(lease, (l) => lease === l);
    if (silentMs > LEASE_SAFETY * ttl * 1000) {
      if (!lapsed.value) onError(`cluster: server ${advertise} could not renew its lease for ${silentMs} ms; it ends the sessions it holds`);
      lapsed.set(true);
      if (campaigner.campaigning) {
        onError(`cluster: server ${advertise} could not renew its lease for ${silentMs} ms; it stops leading`);
        stepDown();
      }
    } else {
      lapsed.set(false);
      if (!campaigner.campaigning) campaignOnce();
    }
  }

  return {
    advertise,
    leaseTtlSeconds: ttl,
    get isLeader() {
      return campaigner.isLeader;
    },
    async start() {
      await join();
      // A stop that came while joining has already cleared the watchdog: start none after it.
      if (stopped) return;
      campaignOnce();
      watchdog = startWatchdog(checkLease, election, (l) => (knownLeader = l));
      knownLeader = await election.leader();
    },
    get knownLeader() {
      return knownLeader;
    },
    get fence() {
      return campaigner.fence;
    },
    get memberFence() {
      return memberFence;
    },
    // The watchdog campaigns again once the lease is renewed.
    fenced: () => void (campaigner.campaigning && !stopped && stepDown()),
    leader: () => election.leader(),
    servers: () => listServers(ns, election),
    isMember: async (address) => (await ns.get(`${SERVERS}${address}`).string()) !== null,
    sessionStarted: sessions.started,
    sessionEnded: sessions.ended,
    get lapsed() {
      return lapsed.value;
    },
    claimAttach: (container, sessionId) => claimAttach(ns, lease, advertise, container, sessionId),
    releaseAttach: (container, sessionId) => releaseAttach(ns, advertise, container, sessionId),
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(watchdog);
      await leave(stepDown(), lease, client, election);
    },
  };
}

/** The member's campaign in the leader election, and the leadership it won. */
interface Campaigner {
  /** Whether a campaign is under way (or won). */
  readonly campaigning: boolean;
  readonly isLeader: boolean;
  readonly fence: { key: string; modRevision: number } | undefined;
  campaignOnce(): void;
  stepDown(): Promise<void>;
}

function createCampaigner(o: {
  client: Etcd3;
  election: Election;
  advertise: string;
  retries: Backoff;
  stopped(): boolean;
  onLeadership(leader: boolean): void;
  onError(message: string, err?: unknown): void;
}): Campaigner {
  const { client, election, advertise, retries, onError } = o;
  let campaign: Campaign | undefined;
  let fence: { key: string; modRevision: number } | undefined;
  const leading = flag(o.onLeadership);

  function campaignOnce(): void {
    if (o.stopped() || campaign) return;
    const c = election.campaign(advertise);
    campaign = c;
    // The fence is read before the controllers start: none of their writes goes unfenced.
    c.on("elected", () => {
      fenceOf(client, c).then(
        (f) => {
          if (campaign !== c || o.stopped()) return;
          fence = f;
          leading.set(true);
        },
        (err: unknown) => {
          // The watchdog campaigns again.
          if (campaign === c && !o.stopped()) void stepDown().then(() => onError(`cluster: server ${advertise} was elected but cannot read its election key`, err));
        },
      );
    });
    c.on("error", (err) => {
      if (campaign !== c || o.stopped()) return;
      onError(`cluster: the campaign of server ${advertise} failed; campaigning again`, err);
      stepDown();
      setTimeout(campaignOnce, retries.next()).unref();
    });
  }

  /**
   * Stops leading now and gives the place up (its key goes with the campaign's lease); resolves
   * once etcd took the resignation, or failed to.
   */
  function stepDown(): Promise<void> {
    const c = campaign;
    campaign = undefined;
    fence = undefined;
    leading.set(false);
    return c ? c.resign().catch(() => {}) : Promise.resolve();
  }

  return {
    get campaigning() {
      return campaign !== undefined;
    },
    get isLeader() {
      return leading.value;
    },
    get fence() {
      return fence;
    },
    campaignOnce,
    stepDown,
  };
}

/**
 * When the member's lease was last renewed, by etcd3's keep-alives or by renewals of the member's
 * own (see renewOnce).
 */
function createRenewals(): {
  readonly renewedAt: number;
  /** The lease was granted, by a grant sent at sentAt (etcd started its TTL between then and the answer). */
  granted(sentAt: number): void;
  /** Counts etcd3's own renewals of a lease. */
  track(lease: Lease): void;
  renewOnce(current: Lease, isCurrent: (lease: Lease) => boolean): void;
} {
  let renewedAt = 0, renewing = false;
  return {
    get renewedAt() {
      return renewedAt;
    },
    granted: (sentAt) => void (renewedAt = Math.max(renewedAt, sentAt)),
    track(lease) {
      // A renewal counts from when it was sent (the oldest one unanswered): etcd took it at some
      // moment between then and its answer.
      let firedAt: number | undefined;
      lease.on("keepaliveFired", () => (firedAt ??= Date.now()));
      lease.on("keepaliveSucceeded", () => {
        renewedAt = Math.max(renewedAt, firedAt ?? Date.now());
        firedAt = undefined;
      });
    },
    /**
     * Renews the lease once on a new keep-alive stream. etcd3 keeps the lease alive on one stream
     * and notices a stream that stopped answering (its etcd member killed, or waiting for a new
     * etcd leader) only after a whole TTL; a renewal of its own, through whichever member answers,
     * keeps the member from a lapse that etcd would never have enforced. A renewal answered proves
     * the lease alive when etcd took it, as etcd3's own do.
     */
    renewOnce(current, isCurrent) {
      if (renewing) return;
      renewing = true;
      // Counted from when it was sent: etcd took it at some moment between then and the answer.
      const sentAt = Date.now();
      current
        .keepaliveOnce({ deadline: new Date(sentAt + RENEW_ONCE_TIMEOUT_MS) })
        .then(
          () => {
            if (isCurrent(current)) renewedAt = Math.max(renewedAt, sentAt);
          },
          () => {},
        )
        .finally(() => (renewing = false));
    },
  };
}

/** A boolean that tells onChange of every change. */
function flag(onChange: (value: boolean) => void): { readonly value: boolean; set(value: boolean): void } {
  let value = false;
  return {
    get value() {
      return value;
    },
    set(next) {
      if (value === next) return;
      value = next;
      onChange(next);
    },
  };
}

/**
 * Leaves the cluster: resigning and revoking at once lets the next leader take over without
 * waiting a TTL; an etcd that does not answer must not hold the server's stop (the lease then
 * expires). Closes the client.
 */
async function leave(resigned: Promise<void>, lease: Lease | undefined, client: Etcd3, election: Election): Promise<void> {
  await Promise.race([Promise.allSettled([resigned, lease?.revoke()]), new Promise((r) => setTimeout(r, STOP_WAIT_MS))]);
  await cancelLeftWatches(election);
  client.close();
}

/**
 * etcd3's campaign watches the key of the candidate before it until that key goes; a campaign
 * resigned while it still waited leaves that watch open, and once the client is closed its watch
 * manager reconnects it for ever on a timer that keeps the process alive (a server stopped in
 * a process that goes on would never let it exit). The watches left on the election's namespace
 * are cancelled before the client closes.
 */
async function cancelLeftWatches(election: Election): Promise<void> {
  const manager = (election as unknown as { namespace?: { watchManager?: { watchers?: Array<{ cancel(): Promise<void> }> } } }).namespace?.watchManager;
  const left = [...(manager?.watchers ?? [])];
  if (left.length === 0) return;
  await Promise.race([Promise.allSettled(left.map((w) => w.cancel())), new Promise((r) => setTimeout(r, STOP_WAIT_MS))]);
}

/** The value of an attach claim. */
const claimOf = (advertise: string, sessionId: string) => JSON.stringify({ server: advertise, sessionId });

/** See ClusterMember.claimAttach: "" when claimed, else the server whose claim stands. */
async function claimAttach(ns: Namespace, lease: Lease | undefined, advertise: string, container: string, sessionId: string): Promise<string> {
  if (!lease) return "(none: this server is joining the cluster again)";
  const key = `${ATTACH_CLAIMS}${container}`;
  const value = claimOf(advertise, sessionId);
  const r = await ns.if(key, "Create", "==", 0).then(ns.put(key).value(value).lease(await lease.grant())).else(ns.get(key)).commit();
  if (r.succeeded) return "";
  const held = r.responses[0]?.response_range?.kvs[0]?.value.toString();
  const server = held ? String((JSON.parse(held) as { server?: unknown }).server ?? "") : "";
  // This server's own earlier claim (its session ended, the release on its way): taken over,
  // only while it is still that claim (its release and another server's claim may come between).
  if (server === advertise && held) {
    const taken = await ns.if(key, "Value", "==", held).then(ns.put(key).value(value).lease(await lease.grant())).commit();
    return taken.succeeded ? "" : claimAttach(ns, lease, advertise, container, sessionId);
  }
  return server || "(unknown)";
}

/** See ClusterMember.releaseAttach. */
async function releaseAttach(ns: Namespace, advertise: string, container: string, sessionId: string): Promise<void> {
  const key = `${ATTACH_CLAIMS}${container}`;
  await ns.if(key, "Value", "==", claimOf(advertise, sessionId)).then(ns.delete().key(key)).commit();
}

/** Writes a server's record under its lease; returns the member fence: the record's key and the revision that wrote it. */
async function writeRecord(lease: Lease, advertise: string, startedAtMs: number): Promise<{ key: string; modRevision: number }> {
  const put = await lease.put(`${SERVERS}${advertise}`).value(JSON.stringify({ advertise, startedAtMs })).exec();
  return { key: SERVER_RECORDS_PREFIX + advertise, modRevision: Number(put.header.revision) };
}

/** The key a campaign holds in the election and its revision now (it is written once, on campaigning). */
async function fenceOf(client: Etcd3, c: Campaign): Promise<{ key: string; modRevision: number }> {
  const key = await c.getCampaignKey();
  const r = await client.get(key).exec();
  const kv = r.kvs[0];
  if (!kv) throw new Error(`the election key ${key} is gone`);
  return { key, modRevision: Number(kv.mod_revision) };
}

/**
 * Starts a member's watchdog: every 250 ms it checks the lease, and once a second it reads the
 * leader's name for a standby's answers (a plain read: a watch from a revision the compactor
 * may already have removed would need care of its own).
 */
function startWatchdog(checkLease: () => void, election: Election, seen: (leader: string | undefined) => void): NodeJS.Timeout {
  let lookups = 0;
  const timer = setInterval(() => {
    checkLease();
    if (++lookups % 4 === 0) election.leader().then(seen, () => {});
  }, 250);
  timer.unref();
  return timer;
}

/** Every live server of the cluster as etcd holds it, with its sessions, by advertise address. */
async function listServers(ns: Namespace, election: Election): Promise<ServerEntry[]> {
  const [records, held, leader] = await Promise.all([
    ns.getAll().prefix(SERVERS).strings(),
    ns.getAll().prefix(SESSIONS).strings(),
    election.leader(),
  ]);
  const byServer = new Map<string, ServerEntry>();
  for (const value of Object.values(records)) {
    const r = JSON.parse(value) as { advertise: string; startedAtMs: number };
    byServer.set(r.advertise, { advertise: r.advertise, startedAtMs: r.startedAtMs, leader: r.advertise === leader, sessions: [] });
  }
  for (const [key, value] of Object.entries(held)) {
    const r = parseSessionRecord(CLUSTER_PREFIX + key, value);
    if (r) byServer.get(r.server)?.sessions.push(r.entry);
  }
  return [...byServer.values()].sort((a, b) => a.advertise.localeCompare(b.advertise));
}

/** SessionRecordsOptions say where a member's session records go. */
interface SessionRecordsOptions {
  /** The cluster's namespace in etcd. */
  ns: Namespace;
  advertise: string;
  /** The member's current lease, if it holds one: records live and die with it. */
  lease(): Lease | undefined;
  onError(message: string, err?: unknown): void;
}

/** SessionRecords are the sessions a member holds, mirrored under its lease in etcd. */
interface SessionRecords {
  started(entry: SessionEntry): void;
  ended(entry: SessionEntry): void;
  /** Writes every held session under a new lease (the member joined again). */
  writeAll(lease: Lease): Promise<void>;
}

/** Creates the session records of a member. */
function createSessionRecords(options: SessionRecordsOptions): SessionRecords {
  const { ns, advertise, onError } = options;
  const sessions = new Map<string, SessionEntry>();
  const sessionKey = (e: SessionEntry) => `${SESSIONS}${advertise}/${e.kind}/${e.name}`;
  // Session records are written in the order sessions come and go.
  let writes: Promise<unknown> = Promise.resolve();
  const inOrder = (what: string, write: () => Promise<unknown> | undefined) =>
    (writes = writes.then(write).catch((err: unknown) => onError(`cluster: ${what} failed`, err)));
  return {
    started(entry) {
      sessions.set(sessionKey(entry), entry);
      inOrder(`recording ${sessionKey(entry)}`, () => options.lease()?.put(sessionKey(entry)).value(JSON.stringify(entry)).exec());
    },
    ended(entry) {
      const key = sessionKey(entry);
      if (sessions.get(key)?.sessionId !== entry.sessionId) return;
      sessions.delete(key);
      inOrder(`forgetting ${key}`, () => ns.delete().key(key).exec());
    },
    async writeAll(lease) {
      for (const e of sessions.values()) await lease.put(sessionKey(e)).value(JSON.stringify(e)).exec();
    },
  };
}
