/**
 * The scheduler in memory: which host a container goes to, the reason given when none can take
 * it, and the scheduler reconciler binding waiting containers as hosts come and get room. The
 * container controller is a stand-in holding records; hosts are WorkerLinks with no stream.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ContainerSchema, type ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { ContainerController } from "../src/server/controllers/container-controller.js";
import { ContainerRecord } from "../src/server/controllers/container-record.js";
import { canRun, createScheduler, pickHost, unschedulableReason } from "../src/server/controllers/scheduler.js";
import { WorkerLink, type LinkRole } from "../src/server/messaging/worker-link.js";

function host(name: string, options: { modules?: string[]; capacity?: number; canSpawn?: boolean; role?: LinkRole } = {}): WorkerLink {
  const { modules = ["m"], capacity = 0, canSpawn = false, role = "host" } = options;
  return new WorkerLink({ id: `id-${name}`, name, role, modules: new Set(modules), capacity, canSpawn });
}

function record(name: string, spec: MessageInitShape<typeof ContainerSpecSchema> = { module: "m", function: "f" }): ContainerRecord {
  const obj = create(ContainerSchema, { metadata: { name, uid: `uid-${name}`, generation: 1n }, spec });
  return new ContainerRecord(name, `uid-${name}`, obj);
}

const moduleContainer = record("mod");
const commandContainer = record("cmd", { command: ["sleep", "1"] });
const externalContainer = record("ext", { module: "", function: "" });

test("who can run what: a live host serving the module; a spawning host for commands; nobody for external containers", () => {
  assert.equal(externalContainer.kind, "external");
  assert.equal(commandContainer.kind, "command");
  const plain = host("plain");
  const spawner = host("spawner", { modules: [], canSpawn: true });
  assert.equal(canRun(plain, moduleContainer), true);
  assert.equal(canRun(host("other", { modules: ["x"] }), moduleContainer), false);
  assert.equal(canRun(plain, commandContainer), false);
  assert.equal(canRun(spawner, commandContainer), true);
  assert.equal(canRun(spawner, moduleContainer), false);
  assert.equal(canRun(host("all", { canSpawn: true }), externalContainer), false);
  for (const role of ["client", "attached"] as const) assert.equal(canRun(host(role, { role, canSpawn: true }), moduleContainer), false, role);
  const closed = host("closed", { canSpawn: true });
  closed.close();
  assert.equal(canRun(closed, moduleContainer), false);
  assert.equal(canRun(closed, commandContainer), false);
});

test("pickHost: fewest bound containers, the first connected on a tie, never beyond capacity (0: unlimited)", () => {
  const [a, b, c] = [host("a", { capacity: 3 }), host("b"), host("c", { capacity: 1 })];
  const load = new Map<WorkerLink, number>();
  const loadOf = (h: WorkerLink) => load.get(h) ?? 0;
  assert.equal(pickHost(moduleContainer, [a, b, c], loadOf), a, "all empty: the first");
  assert.equal(pickHost(moduleContainer, [b, a, c], loadOf), b, "all empty: the first");
  load.set(a, 1).set(b, 1);
  assert.equal(pickHost(moduleContainer, [a, b, c], loadOf), c);
  load.set(c, 1);
  assert.equal(pickHost(moduleContainer, [c, a, b], loadOf), a, "c is full at its capacity of 1");
  load.set(a, 2).set(b, 5);
  assert.equal(pickHost(moduleContainer, [b, a, c], loadOf), a, "a has room left (2 of 3)");
  load.set(a, 3);
  assert.equal(pickHost(moduleContainer, [a, b, c], loadOf), b, "b has no capacity limit");
  assert.equal(pickHost(moduleContainer, [a, c], loadOf), undefined);
  assert.equal(pickHost(moduleContainer, [], loadOf), undefined);
});

test("unschedulableReason names what is missing, listing at most five hosts", () => {
  const loadOf = () => 0;
  assert.equal(unschedulableReason(externalContainer, [host("a")], loadOf), 'waiting for a process to attach to external container "ext"');
  const closed = host("closed");
  closed.close();
  assert.equal(unschedulableReason(moduleContainer, [closed, host("cl", { role: "client" })], loadOf), 'no worker host serves module "m": none connected');
  assert.equal(unschedulableReason(commandContainer, [], loadOf), "no worker host can spawn command containers: none connected");
  assert.equal(
    unschedulableReason(moduleContainer, [host("a", { modules: ["x", "y"] }), host("b", { modules: [] })], loadOf),
    'no worker host serves module "m": connected hosts serve other modules (a [x, y]; b [])',
  );
  const seven = Array.from({ length: 7 }, (_, i) => host(`h${i}`, { modules: ["x"] }));
  assert.equal(
    unschedulableReason(moduleContainer, seven, loadOf),
    'no worker host serves module "m": connected hosts serve other modules (h0 [x]; h1 [x]; h2 [x]; h3 [x]; h4 [x], and 2 more)',
  );
  assert.equal(
    unschedulableReason(commandContainer, seven, loadOf),
    "no worker host can spawn command containers: none of the connected hosts may spawn processes (h0, h1, h2, h3, h4, and 2 more)",
  );
  assert.equal(
    unschedulableReason(commandContainer, seven.slice(0, 5), loadOf),
    "no worker host can spawn command containers: none of the connected hosts may spawn processes (h0, h1, h2, h3, h4)",
    "five are all listed",
  );
  assert.equal(
    unschedulableReason(commandContainer, seven.slice(0, 2), loadOf),
    "no worker host can spawn command containers: none of the connected hosts may spawn processes (h0, h1)",
  );
  const full = Array.from({ length: 6 }, (_, i) => host(`f${i}`, { capacity: 2 }));
  assert.equal(
    unschedulableReason(moduleContainer, [host("other", { modules: ["x"] }), ...full], () => 2),
    'every worker host that can run container "mod" is at capacity (f0 2/2, f1 2/2, f2 2/2, f3 2/2, f4 2/2)',
  );
});

/** Waits for a condition the scheduler's own worker makes true (no time bound beyond 10 s). */
async function eventually(fn: () => boolean, timeoutMs = 10_000, what = "the scheduler"): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A container controller holding records, that binds and marks unschedulable as asked. */
function standIn(records: ContainerRecord[]) {
  const byName = new Map(records.map((r) => [r.name, r]));
  const bound = new Map<string, WorkerLink>();
  const binds: string[] = [];
  const reasons = new Map<string, string>();
  let listener: (name: string | undefined) => void = () => {};
  const containers = {
    record: (name: string) => byName.get(name),
    load: (h: WorkerLink) => [...bound.values()].filter((b) => b === h).length,
    bind(name: string, h: WorkerLink) {
      bound.set(name, h);
      binds.push(name);
      byName.get(name)!.state = { is: "Starting", host: h } as ContainerRecord["state"];
    },
    unschedulable: (name: string, why: string) => void reasons.set(name, why),
    onSchedulingNeeded: (l: (name: string | undefined) => void) => {
      listener = l;
      return () => void (listener = () => {});
    },
  } as unknown as ContainerController;
  return { containers, bound, binds, reasons, needed: (name?: string) => listener(name) };
}

test("the scheduler binds waiting containers when a host comes or gets room, least loaded first, and skips those that no longer wait", async () => {
  const [one, two, three] = [record("one"), record("two"), record("three")];
  const gone = record("gone");
  gone.deleting = true;
  const ext = record("ext", { module: "", function: "" });
  const { containers, bound, binds, reasons, needed } = standIn([one, two, three, gone, ext]);
  const hosts: WorkerLink[] = [];
  const errors: unknown[] = [];
  const reports: string[] = [];
  const scheduler = createScheduler({
    containers,
    hosts: () => hosts,
    onError: (_message, err) => void errors.push(err),
    onReconcile: (r) => void reports.push(`${r.controller} ${r.key}`),
  });
  await scheduler.start();
  try {
    for (const name of ["one", "two", "gone", "ext", "missing"]) needed(name);
    await eventually(() => reasons.size === 2);
    assert.equal(reasons.get("one"), 'no worker host serves module "m": none connected');
    assert.deepEqual([...reasons.keys()].sort(), ["one", "two"], "deleted, external and unknown containers are not scheduled");

    const small = host("small", { capacity: 1 });
    const big = host("big", { capacity: 2 });
    hosts.push(small, big);
    needed(undefined);
    await eventually(() => bound.size === 2);
    assert.deepEqual(new Set([bound.get("one"), bound.get("two")]), new Set([small, big]), "one each: least loaded first");

    needed("three");
    await eventually(() => bound.has("three"));
    assert.equal(bound.get("three"), big, "the only host with room");
    const reconciled = () => reports.filter((r) => r === "scheduler one").length;
    const before = reconciled();
    hosts.push(host("roomy"));
    needed("one");
    needed(undefined);
    await eventually(() => reconciled() > before);
    assert.deepEqual(binds, ["one", "two", "three"], "a bound container is not bound again");
    assert.deepEqual(errors, [], "no reconcile failed (an unknown name is no error)");
    assert.ok(reports.includes("scheduler missing"));

    const four = record("four");
    const { containers: c2, bound: b2, reasons: r2, needed: n2 } = standIn([four]);
    const full = host("full", { capacity: 1 });
    const scheduler2 = createScheduler({ containers: c2, hosts: () => [full] });
    await scheduler2.start();
    try {
      b2.set("other", full);
      n2("four");
      await eventually(() => r2.has("four"));
      assert.equal(r2.get("four"), 'every worker host that can run container "four" is at capacity (full 1/1)');
      b2.delete("other");
      n2(undefined);
      await eventually(() => b2.get("four") === full, 10_000, "a waiting container retried when a host gets room");
    } finally {
      await scheduler2.stop();
    }
  } finally {
    await scheduler.stop();
  }
});

test("a stopped scheduler (its server no longer leads) stops listening: to the lifecycle and to its binder's hosts", async () => {
  const { containers } = standIn([record("waiting")]);
  let lifecycleListeners = 0;
  const counted = {
    ...containers,
    onSchedulingNeeded(l: (name: string | undefined) => void) {
      lifecycleListeners++;
      const stop = containers.onSchedulingNeeded(l);
      return () => {
        lifecycleListeners--;
        stop();
      };
    },
  } as ContainerController;
  const hostsListeners: Array<() => void> = [];
  const binder = {
    hosts: () => [host("h")],
    load: () => 0,
    bound: () => false,
    bind: () => {},
    onChange(listener: () => void) {
      hostsListeners.push(listener);
      return () => void hostsListeners.splice(hostsListeners.indexOf(listener), 1);
    },
  };
  const scheduler = createScheduler({ containers: counted, hosts: () => [], binder });
  await scheduler.start();
  assert.deepEqual([lifecycleListeners, hostsListeners.length], [1, 1]);
  await scheduler.stop();
  assert.deepEqual([lifecycleListeners, hostsListeners.length], [0, 0], "neither the lifecycle nor the binder's hosts tell it anything more");
});
