/**
 * The container lifecycle's transitions and the scheduler's choices, in memory: a record, a
 * clock the test moves, and effects that write down what the lifecycle asked for. Each test
 * also checks that advancing again with nothing new asks for nothing (level, not edge).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { ContainerSchema, ContainerStatusSchema, type ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import {
  adopt,
  advance,
  awaitProcess,
  bind,
  resumable,
  resume,
  stopAwaiting,
  unschedulable,
  type LifecycleEffects,
} from "../src/server/controllers/container-lifecycle.js";
import { ContainerRecord } from "../src/server/controllers/container-record.js";
import { pickHost, unschedulableReason } from "../src/server/controllers/scheduler.js";
import { WorkerLink } from "../src/server/messaging/worker-link.js";

/** Effects that record what the lifecycle asks for, with a clock the test moves. */
class Recorder implements LifecycleEffects {
  clock = 1_000_000;
  log: string[] = [];
  inflight = 0;
  now = () => this.clock;
  assign = (rec: ContainerRecord, host: WorkerLink) => void this.log.push(`assign ${rec.name} to ${host.name} (restarts ${rec.restarts})`);
  stop = (rec: ContainerRecord, host: WorkerLink, graceMs: number) => void this.log.push(`stop ${rec.name} on ${host.name} within ${graceMs}`);
  release = (rec: ContainerRecord, why: string) => void this.log.push(`release ${rec.name}: ${why}`);
  detach = (_rec: ContainerRecord, link: WorkerLink, why: string, code: Code) => void this.log.push(`detach ${link.name} (${Code[code]}): ${why}`);
  finalize = (rec: ContainerRecord) => {
    rec.finalizing = true;
    this.log.push(`finalize ${rec.name}`);
  };
  inFlight = () => this.inflight;
  /** Reasons of the events recorded as warnings. */
  warnings: string[] = [];
  /** Times a wake-up was asked for. */
  wakes: number[] = [];
  /** State changes told, as "from -> to". */
  changes: string[] = [];
  record = (_rec: ContainerRecord, reason: string, message: string, type?: "Normal" | "Warning") => {
    this.log.push(`event ${reason}: ${message}`);
    if (type === "Warning") this.warnings.push(reason);
  };
  wakeAt = (_rec: ContainerRecord, at: number) => void this.wakes.push(at);
  token = () => "tok";
  changed = (rec: ContainerRecord, from: ContainerRecord["state"]) => void this.changes.push(`${from.is} -> ${rec.state.is}`);
  /** What was asked for since the last call. */
  take(): string[] {
    const out = this.log;
    this.log = [];
    return out;
  }
}

function host(name: string, modules: string[] = ["m"], capacity = 0, canSpawn = false): WorkerLink {
  return new WorkerLink({ id: `id-${name}`, name, role: "host", modules: new Set(modules), capacity, canSpawn });
}

function record(name: string, spec: MessageInitShape<typeof ContainerSpecSchema> = {}): ContainerRecord {
  const obj = create(ContainerSchema, { metadata: { name, uid: `uid-${name}`, generation: 1n }, spec: { module: "m", function: "f", ...spec } });
  return new ContainerRecord(name, `uid-${name}`, obj);
}

/** The state a record is in (a plain string, so that checks do not narrow its type). */
function stateOf(rec: ContainerRecord): string {
  return rec.state.is;
}

/** Advances, and checks that doing it again with nothing new changes nothing. */
function settle(rec: ContainerRecord, fx: Recorder): string[] {
  advance(rec, fx);
  const asked = fx.take();
  const state = JSON.stringify(rec.state, (k, v) => (k === "host" ? v.name : v));
  advance(rec, fx);
  assert.deepEqual(fx.take(), [], "advancing again without news asks for nothing");
  assert.equal(JSON.stringify(rec.state, (k, v) => (k === "host" ? v.name : v)), state);
  return asked;
}

function report(rec: ContainerRecord, phase: "Running" | "Stopped" | "Succeeded" | "Failed", message = "", exitCode = 0) {
  rec.reports.push({ host: rec.host!, phase, message, exitCode });
}

test("scheduled, started, failed: back-off doubles from 200 ms and a healthy run resets it", () => {
  const fx = new Recorder();
  const h = host("h1");
  const rec = record("c1");
  bind(rec, h, fx);
  assert.deepEqual(fx.take(), ['event Scheduled: assigned to host "h1"', "assign c1 to h1 (restarts 0)"]);
  assert.equal(stateOf(rec), "Starting");
  report(rec, "Running");
  assert.deepEqual(settle(rec, fx), ['event Started: started on host "h1"']);
  assert.equal(stateOf(rec), "Running");
  assert.equal(rec.ready(), true);

  report(rec, "Failed", "boom", 1);
  assert.deepEqual(settle(rec, fx), ["release c1: failed", 'event Failed: failed on host "h1": boom', "event BackOff: back-off 200 ms before restart 1"]);
  assert.equal(stateOf(rec), "BackOff");
  assert.equal(rec.phase(), "Pending");
  fx.clock += 199;
  assert.deepEqual(settle(rec, fx), [], "not before its time");
  fx.clock += 1;
  settle(rec, fx);
  assert.equal(stateOf(rec), "Unscheduled");
  assert.equal(rec.restarts, 1);

  bind(rec, h, fx);
  report(rec, "Running");
  report(rec, "Failed", "boom again", 1);
  fx.take();
  advance(rec, fx);
  assert.ok(fx.take().includes("event BackOff: back-off 400 ms before restart 2"));
  fx.clock += 400;
  advance(rec, fx);
  bind(rec, h, fx);
  report(rec, "Running");
  advance(rec, fx);
  fx.clock += 30_000; // a healthy run
  report(rec, "Failed", "late", 1);
  fx.take();
  advance(rec, fx);
  assert.ok(fx.take().includes("event BackOff: back-off 200 ms before restart 3"));
});

test("restart policies: Never ends Failed, OnFailure ends on success; an ended container restarts on a new spec", () => {
  const fx = new Recorder();
  const h = host("h1");
  const never = record("never", { restartPolicy: "Never" });
  bind(never, h, fx);
  report(never, "Failed", "", 3);
  settle(never, fx);
  assert.deepEqual(never.state, { is: "Ended", phase: "Failed" });
  assert.equal(never.message, "exit code 3");
  assert.equal(never.phase(), "Failed");

  const onFailure = record("once", { restartPolicy: "OnFailure" });
  bind(onFailure, h, fx);
  report(onFailure, "Running");
  report(onFailure, "Succeeded");
  settle(onFailure, fx);
  assert.deepEqual(onFailure.state, { is: "Ended", phase: "Succeeded" });
  assert.equal(onFailure.message, "completed");
  const retried = record("retried", { restartPolicy: "OnFailure" });
  bind(retried, h, fx);
  report(retried, "Failed", "oops", 1);
  settle(retried, fx);
  assert.equal(stateOf(retried), "BackOff", "OnFailure restarts a failure");

  onFailure.generation = 2n;
  settle(onFailure, fx);
  assert.equal(stateOf(onFailure), "Unscheduled", "a new spec runs again");
});

test("a spec change stops the running container with its grace, then it is scheduled anew; a silent host is given up on", () => {
  const fx = new Recorder();
  const h = host("h1");
  const rec = record("c", { terminationGraceSeconds: 2 });
  bind(rec, h, fx);
  report(rec, "Running");
  advance(rec, fx);
  fx.take();
  rec.generation = 2n;
  assert.deepEqual(settle(rec, fx), ['event Killing: stopping on host "h1" (spec changed), grace 2000 ms', "stop c on h1 within 2000"]);
  assert.equal(rec.ready(), false, "a stopping container takes no new deliveries");
  report(rec, "Stopped");
  assert.deepEqual(settle(rec, fx), ["release c: was stopped"]);
  assert.equal(stateOf(rec), "Unscheduled");
  assert.equal(rec.restarts, 0, "a stop asked for is no restart");

  bind(rec, h, fx);
  report(rec, "Running");
  advance(rec, fx);
  rec.generation = 3n;
  advance(rec, fx);
  fx.take();
  fx.clock += 2000 + 1000; // grace + slack, and the host never answered
  assert.deepEqual(settle(rec, fx), ['event Killing: host "h1" did not report the container stopped within 3000 ms', "release c: was stopped"]);
  assert.equal(fx.warnings.at(-1), "Killing", "giving up on a silent host is a warning");
  assert.equal(stateOf(rec), "Unscheduled");
});

test("a lost host: its containers are rescheduled and counted as restarted; deleted ones are finalized", () => {
  const fx = new Recorder();
  const h = host("h1");
  const rec = record("c");
  bind(rec, h, fx);
  report(rec, "Running");
  advance(rec, fx);
  fx.take();
  h.close();
  assert.deepEqual(settle(rec, fx), ['release c: lost its host "h1"', 'event HostLost: host "h1" was lost; rescheduling']);
  assert.equal(stateOf(rec), "Unscheduled");
  assert.equal(rec.restarts, 1);
  assert.equal(rec.hostName, "");

  const h2 = host("h2");
  bind(rec, h2, fx);
  report(rec, "Running");
  advance(rec, fx);
  fx.take();
  rec.deleting = true;
  assert.deepEqual(settle(rec, fx), ['event Killing: stopping on host "h2" (deleted), grace 5000 ms', "stop c on h2 within 5000"]);
  assert.equal(rec.phase(), "Terminating");
  report(rec, "Stopped");
  assert.deepEqual(settle(rec, fx), ["release c: was stopped", "finalize c"]);
  assert.equal(stateOf(rec), "Finalizing");
});

test("external containers: attach, detach, and a delete that lets in-flight messages finish", () => {
  const fx = new Recorder();
  const rec = record("ext", { module: "", function: "" });
  adopt(rec, undefined, 0, fx.now());
  assert.equal(stateOf(rec), "Unattached");
  assert.match(rec.message, /waiting for a process to attach/);
  const p = new WorkerLink({ id: "p1", name: "proc", role: "attached", container: "ext" });
  rec.attached = p;
  assert.deepEqual(settle(rec, fx), ['event Started: process "proc" attached']);
  assert.equal(stateOf(rec), "Attached");
  assert.equal(rec.ready(), true);
  p.close();
  assert.deepEqual(settle(rec, fx), ['release ext: lost its attached process "proc"', 'event Detached: process "proc" detached']);
  assert.equal(stateOf(rec), "Unattached");
  assert.deepEqual([rec.hostName, fx.warnings], ["", ["Detached"]]);

  const p2 = new WorkerLink({ id: "p2", name: "proc2", role: "attached", container: "ext" });
  rec.attached = p2;
  advance(rec, fx);
  fx.take();
  fx.inflight = 2;
  rec.deleting = true;
  assert.deepEqual(settle(rec, fx), ['event Killing: waiting up to 5000 ms for in-flight messages before detaching "proc2"']);
  assert.equal(stateOf(rec), "Draining");
  fx.inflight = 0; // the router said it is idle
  assert.deepEqual(settle(rec, fx), ['detach proc2 (NotFound): container "ext" was deleted', "finalize ext"]);
});

test("after a server restart: a container that ran waits for its host, which resumes it; one that ended stays ended", () => {
  const fx = new Recorder();
  const rec = record("r");
  adopt(rec, create(ContainerStatusSchema, { phase: "Running", host: "h1" }), 10_000, fx.now());
  assert.deepEqual(rec.state, { is: "AwaitingHost", host: "h1", until: fx.clock + 10_000, ran: true });
  assert.deepEqual(settle(rec, fx), []);
  assert.equal(stateOf(rec), "AwaitingHost", "it waits for its host until the grace ends");
  assert.equal(fx.wakes.at(-1), fx.clock + 10_000);
  const h = host("h1");
  resume(rec, h, fx);
  assert.deepEqual(fx.take(), ['event Resumed: host "h1" still runs it']);
  assert.equal(rec.message, "", "the wait is over");
  assert.equal(stateOf(rec), "Running");

  const late = record("late");
  adopt(late, create(ContainerStatusSchema, { phase: "Running", host: "gone" }), 10_000, fx.now());
  fx.clock += 10_000;
  settle(late, fx);
  assert.equal(stateOf(late), "Unscheduled", "its host did not come back in time");
  assert.equal(late.restarts, 1, "run again elsewhere: a restart, as when a live server loses its host");
  const without = record("without");
  without.restarts = 2;
  adopt(without, create(ContainerStatusSchema, { phase: "Running", host: "h1" }), 10_000, fx.now());
  stopAwaiting(without, fx);
  assert.deepEqual([stateOf(without), without.restarts], ["Unscheduled", 3], "its host came back without it: a restart too");

  const done = record("done", { restartPolicy: "Never" });
  adopt(done, create(ContainerStatusSchema, { phase: "Succeeded", host: "h1", message: "completed" }), 10_000, fx.now());
  assert.deepEqual(done.state, { is: "Ended", phase: "Succeeded" });
});

test("in a cluster, an external container shown Running whose process's server died waits the grace for the process, then shows Pending as a detached one does; a process attaching meanwhile serves it", () => {
  const fx = new Recorder();
  const gone = record("gone", { module: "", function: "" });
  const shown = create(ContainerStatusSchema, { phase: "Running", host: "proc" });
  gone.storedPhase = "Running";
  adopt(gone, shown, 10_000, fx.now());
  awaitProcess(gone, shown, 10_000, fx.now());
  assert.deepEqual(gone.state, { is: "AwaitingHost", host: "proc", until: fx.clock + 10_000, ran: false });
  assert.deepEqual(settle(gone, fx), [], "nothing before the grace ends");
  fx.clock += 10_000;
  assert.deepEqual(settle(gone, fx), ['event Detached: process "proc" did not attach again after its server was lost']);
  // What a single server shows once an external container's process went away.
  const single = record("single", { module: "", function: "" });
  adopt(single, undefined, 0, fx.now());
  single.attached = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "single" });
  settle(single, fx);
  single.attached.close();
  settle(single, fx);
  assert.deepEqual([gone.phase(), gone.message.replace("gone", "X"), gone.hostName, gone.restarts], [single.phase(), single.message.replace("single", "X"), single.hostName, 0]);
  assert.deepEqual([gone.phase(), gone.message], ["Pending", 'waiting for a process to attach to external container "gone"']);

  const back = record("back", { module: "", function: "" });
  adopt(back, shown, 10_000, fx.now());
  awaitProcess(back, shown, 10_000, fx.now());
  back.attached = new WorkerLink({ id: "p2", name: "proc", role: "attached", container: "back" });
  settle(back, fx);
  assert.deepEqual([stateOf(back), back.phase(), back.ready()], ["Attached", "Running", true]);
  // Its process detached normally from a live server, whose attach claim's delete reached the
  // store before its status write: that server recorded the detach and shows it Pending; the
  // wait ends without a second, wrong, warning.
  const left = record("left", { module: "", function: "" });
  left.storedPhase = "Running";
  adopt(left, shown, 10_000, fx.now());
  awaitProcess(left, shown, 10_000, fx.now());
  left.storedPhase = "Pending";
  assert.deepEqual(settle(left, fx), []);
  fx.clock += 10_000;
  assert.deepEqual(settle(left, fx), [], "no event: its server recorded the detach");
  assert.deepEqual([stateOf(left), left.phase(), left.hostName, left.message], ["Unattached", "Pending", "", 'waiting for a process to attach to external container "left"']);
  // Outside a cluster's wait (no grace, or not shown Running) nothing changes.
  const pending = record("pending", { module: "", function: "" });
  adopt(pending, create(ContainerStatusSchema, { phase: "Pending" }), 10_000, fx.now());
  awaitProcess(pending, create(ContainerStatusSchema, { phase: "Pending" }), 10_000, fx.now());
  assert.equal(stateOf(pending), "Unattached");
});

test("scheduling: the least loaded host that serves the module and has room; otherwise a reason to act on", () => {
  const a = host("a", ["m"], 2);
  const b = host("b", ["m"], 0);
  const c = host("c", ["other"]);
  const spawner = host("s", [], 0, true);
  const load = new Map<WorkerLink, number>([
    [a, 1],
    [b, 3],
  ]);
  const loadOf = (h: WorkerLink) => load.get(h) ?? 0;
  const mod = record("x");
  assert.equal(pickHost(mod, [a, b, c], loadOf), a, "fewest bound");
  load.set(a, 2);
  assert.equal(pickHost(mod, [a, b, c], loadOf), b, "a is at capacity");
  const cmd = record("cmd", { module: "", function: "", command: ["sleep", "1"] });
  assert.equal(pickHost(cmd, [a, b, c, spawner], loadOf), spawner, "only a host that spawns runs commands");
  assert.equal(pickHost(record("y", { module: "nope" }), [a, b, c], loadOf), undefined);
  assert.match(unschedulableReason(record("y", { module: "nope" }), [a, c], loadOf), /no worker host serves module "nope": connected hosts serve other modules \(a \[m\]; c \[other\]\)/);
  assert.match(unschedulableReason(mod, [], loadOf), /none connected/);
  assert.match(unschedulableReason(mod, [a], loadOf), /every worker host that can run container "x" is at capacity \(a 2\/2\)/);
  b.close();
  assert.equal(pickHost(mod, [a, b], loadOf), undefined, "a closed host takes nothing");
});

test("adopting a stored status after a restart: ended for good stays ended, anything else that may run again needs a host", () => {
  const now = 5_000_000;
  const status = (phase: string, host = "h1", message = "") => create(ContainerStatusSchema, { phase, host, message });
  const always = record("always");
  adopt(always, status("Succeeded"), 10_000, now);
  assert.equal(stateOf(always), "Unscheduled", "Always restarts even a success");
  const onFailure = record("onf", { restartPolicy: "OnFailure" });
  adopt(onFailure, status("Failed"), 10_000, now);
  assert.equal(stateOf(onFailure), "Unscheduled", "OnFailure restarts a failure");
  adopt(onFailure, status("Succeeded", "h2", "done"), 10_000, now);
  assert.deepEqual([onFailure.state, onFailure.message, onFailure.hostName], [{ is: "Ended", phase: "Succeeded" }, "done", "h2"]);
  const never = record("never", { restartPolicy: "Never" });
  adopt(never, status("Failed", "h3", "exit code 2"), 10_000, now);
  assert.deepEqual([never.state, never.message, never.hostName], [{ is: "Ended", phase: "Failed" }, "exit code 2", "h3"]);
  for (const st of [status("Running", "h3"), status("Pending"), undefined]) {
    const neverRan = record("never-ran", { restartPolicy: "Never" });
    adopt(neverRan, st, 0, now);
    assert.equal(stateOf(neverRan), "Unscheduled", `a Never container that did not end (${st?.phase}) still needs a host`);
  }

  const onFailureRan = record("onf-ran", { restartPolicy: "OnFailure" });
  adopt(onFailureRan, status("Running"), 10_000, now);
  assert.equal(stateOf(onFailureRan), "AwaitingHost", "a running one waits for its host whatever its policy");
  const waits = record("waits");
  adopt(waits, status("Running", "h1"), 10_000, now);
  assert.deepEqual(waits.state, { is: "AwaitingHost", host: "h1", until: now + 10_000, ran: true });
  assert.equal(waits.message, 'waiting up to 10000 ms for host "h1" to reconnect and resume it');
  for (const [st, grace] of [[status("Running", ""), 10_000], [status("Running"), 0], [status("Pending"), 10_000], [undefined, 10_000]] as const) {
    const r = record("r");
    adopt(r, st, grace, now);
    assert.equal(stateOf(r), "Unscheduled", `${st?.phase}/${st?.host}/${grace}`);
  }
  const ext = record("ext", { module: "", function: "" });
  ext.generation = 4n;
  adopt(ext, status("Running", "proc"), 10_000, now);
  assert.deepEqual([stateOf(ext), ext.observedGeneration], ["Unattached", 4n]);

  // Who may be resumed by a reconnecting host, and the end of the wait.
  assert.equal(resumable(waits), true);
  assert.equal(resumable(always), true);
  assert.equal(resumable(never), false);
  assert.equal(resumable(ext), false);
  const fx = new Recorder();
  stopAwaiting(never, fx);
  assert.equal(stateOf(never), "Ended");
  stopAwaiting(waits, fx);
  assert.equal(stateOf(waits), "Unscheduled");
  assert.deepEqual(fx.changes, ["AwaitingHost -> Unscheduled"]);
  const deleted = record("deleted");
  adopt(deleted, status("Running"), 10_000, now);
  deleted.deleting = true;
  assert.equal(resumable(deleted), false);
  resume(deleted, host("h1"), fx);
  assert.equal(stateOf(deleted), "AwaitingHost", "a deleted container is not resumed");
});

test("a container no host can take says why once per reason; bound ones are not touched", () => {
  const fx = new Recorder();
  const rec = record("u");
  rec.hostName = "old";
  unschedulable(rec, "no worker host serves module \"m\": none connected", fx);
  unschedulable(rec, "no worker host serves module \"m\": none connected", fx);
  assert.deepEqual(fx.take(), ['event FailedScheduling: no worker host serves module "m": none connected']);
  assert.deepEqual(fx.warnings, ["FailedScheduling"]);
  assert.equal(rec.message, 'no worker host serves module "m": none connected');
  assert.equal(rec.hostName, "");
  unschedulable(rec, "every worker host is at capacity", fx);
  assert.equal(fx.take().length, 1, "a new reason is said again");
  bind(rec, host("h1"), fx);
  fx.take();
  unschedulable(rec, "late news", fx);
  assert.deepEqual(fx.take(), []);
  assert.equal(rec.message, 'starting on host "h1"');
  assert.equal(rec.hostName, "h1");
  const gone = record("gone");
  gone.deleting = true;
  bind(gone, host("h1"), fx);
  assert.deepEqual([stateOf(gone), fx.take()], ["Unscheduled", []], "a deleted container is not bound");
});

test("exits: what the host said is kept; a host that stops a container itself has it rescheduled; stale and repeated reports change nothing", () => {
  const fx = new Recorder();
  const h = host("h1");
  const rec = record("e");
  rec.generation = 3n;
  rec.actedGeneration = 3n;
  bind(rec, h, fx);
  report(rec, "Running");
  settle(rec, fx);
  assert.equal(rec.observedGeneration, 3n);
  assert.equal(rec.message, "", "a module container has no process to wait for");
  assert.equal(rec.token, "", "only command containers get an attach token");
  bind(rec, host("h2"), fx);
  assert.deepEqual([fx.take(), rec.host], [[], h], "a running container is not bound again");
  assert.equal(timestampMs(rec.startedAt!), fx.clock);
  // A second Running and a report from a host it left change nothing.
  report(rec, "Running");
  rec.reports.push({ host: host("h9"), phase: "Failed", message: "not yours", exitCode: 9 });
  assert.deepEqual(settle(rec, fx), []);
  assert.equal(stateOf(rec), "Running");

  report(rec, "Stopped", "host shutting down");
  assert.deepEqual(settle(rec, fx), ["release e: ended"]);
  assert.equal(rec.message, 'stopped by host "h1": host shutting down; rescheduling');
  assert.deepEqual([stateOf(rec), rec.restarts], ["Unscheduled", 1]);
  bind(rec, h, fx);
  report(rec, "Stopped");
  settle(rec, fx);
  assert.equal(rec.message, 'stopped by host "h1"; rescheduling', "before it ran, too");
  assert.equal(rec.restarts, 2);

  bind(rec, h, fx);
  report(rec, "Running");
  report(rec, "Succeeded");
  fx.take();
  assert.deepEqual(settle(rec, fx), ['event Started: started on host "h1"', "release e: ended", 'event Completed: completed on host "h1"', "event BackOff: back-off 200 ms before restart 3"]);
  assert.equal(rec.message, "back-off 200 ms before restarting: completed");
  assert.deepEqual(fx.warnings, ["BackOff"]);
  assert.deepEqual(fx.wakes.at(-1), fx.clock + 200, "it asks to be woken when the back-off ends");

  fx.clock += 200;
  settle(rec, fx);
  bind(rec, h, fx);
  report(rec, "Failed", "", 7);
  fx.take();
  assert.deepEqual(settle(rec, fx), ["release e: failed", 'event Failed: failed on host "h1": exit code 7', "event BackOff: back-off 400 ms before restart 4"]);
  assert.equal(rec.message, "back-off 400 ms before restarting: failed: exit code 7");
  assert.deepEqual(fx.warnings, ["BackOff", "Failed", "BackOff"], "a failure is a warning, a completion is not");
  assert.equal(rec.exitCode, 7);
});

test("a spec change in back-off restarts at once with a fresh back-off; one while stopping waits for the stop", () => {
  const fx = new Recorder();
  const h = host("h1");
  const rec = record("s");
  bind(rec, h, fx);
  report(rec, "Failed", "x", 1);
  settle(rec, fx);
  fx.clock += 200;
  settle(rec, fx);
  bind(rec, h, fx);
  report(rec, "Failed", "x", 1);
  settle(rec, fx);
  assert.match(rec.message, /back-off 400 ms/);
  rec.generation = 2n;
  settle(rec, fx);
  assert.equal(stateOf(rec), "Unscheduled", "a new spec does not wait out the back-off");
  bind(rec, h, fx);
  report(rec, "Failed", "x", 1);
  fx.take();
  settle(rec, fx);
  assert.match(rec.message, /back-off 200 ms/, "the back-off starts over with a new spec");

  const stopping = record("st");
  bind(stopping, h, fx);
  report(stopping, "Running");
  settle(stopping, fx);
  stopping.generation = 2n;
  settle(stopping, fx);
  fx.take();
  stopping.generation = 3n;
  assert.deepEqual(settle(stopping, fx), [], "no second stop while the first one runs");
  assert.equal(stateOf(stopping), "Stopping");
  assert.equal(fx.wakes.at(-1), fx.clock + 5000 + 1000, "woken at the stop's deadline");
  h.close();
  assert.deepEqual(settle(stopping, fx), ['release st: lost its host "h1"', 'event HostLost: host "h1" was lost; rescheduling']);
  assert.equal(stopping.restarts, 0, "a container being stopped anyway is not counted as restarted");
  assert.equal(stopping.message, 'host "h1" was lost; rescheduling');
  assert.equal(fx.warnings.at(-1), "HostLost");
});

test("command containers: a token per assign, their process attaches and detaches, and goes with the run", () => {
  const fx = new Recorder();
  const h = host("spawner", [], 0, true);
  const rec = record("cmd", { module: "", function: "", command: ["sleep", "9"] });
  bind(rec, h, fx);
  assert.equal(rec.token, "tok");
  report(rec, "Running");
  settle(rec, fx);
  assert.equal(rec.message, "process started; waiting for it to attach");
  assert.equal(rec.ready(), false, "not ready before its process attaches");
  const p = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "cmd" });
  rec.attached = p;
  assert.deepEqual(settle(rec, fx), ['event Attached: process "proc" attached']);
  assert.equal(rec.message, "");
  assert.equal(rec.ready(), true);
  p.close();
  assert.deepEqual(settle(rec, fx), ['release cmd: lost its attached process "proc"', 'event Detached: process "proc" detached']);
  assert.equal(rec.message, "process detached; waiting for it to attach again");
  assert.equal(stateOf(rec), "Running", "the process may attach again");
  assert.ok(fx.warnings.includes("Detached"));

  const p2 = new WorkerLink({ id: "p2", name: "proc2", role: "attached", container: "cmd" });
  rec.attached = p2;
  settle(rec, fx);
  report(rec, "Failed", "", 1);
  const asked = settle(rec, fx);
  assert.deepEqual(asked.slice(0, 2), ["release cmd: failed", 'detach proc2 (Unavailable): container "cmd" exited']);
  assert.equal(rec.attached, undefined);

  fx.clock += 200;
  settle(rec, fx);
  bind(rec, h, fx);
  report(rec, "Running");
  settle(rec, fx);
  const p3 = new WorkerLink({ id: "p3", name: "proc3", role: "attached", container: "cmd" });
  rec.attached = p3;
  settle(rec, fx);
  h.close();
  assert.deepEqual(settle(rec, fx).slice(0, 2), ['release cmd: lost its host "spawner"', 'detach proc3 (Unavailable): container "cmd" lost its host "spawner"']);

  // Resumed after a server restart: its process attaches again on its own.
  const back = record("back", { module: "", function: "", command: ["sleep", "9"] });
  adopt(back, create(ContainerStatusSchema, { phase: "Running", host: "spawner" }), 10_000, fx.now());
  resume(back, host("spawner", [], 0, true), fx);
  assert.equal(back.message, "process resumed; waiting for it to attach");
});

test("a command container's process that attaches and goes before its host reported the run started is part of the start: no Detached warning; the host's report of the start decides", () => {
  const fx = new Recorder();
  const h = host("spawner", [], 0, true);
  const rec = record("early", { module: "", function: "", command: ["sleep", "9"] });
  bind(rec, h, fx);
  fx.take();
  // The spawned process attaches before the host's report of the start arrives.
  const p = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "early" });
  rec.attached = p;
  assert.deepEqual(settle(rec, fx), ['event Attached: process "proc" attached']);
  p.close();
  assert.deepEqual(settle(rec, fx), ['release early: lost its attached process "proc"']);
  assert.deepEqual(fx.warnings, []);
  assert.notEqual(rec.message, "process detached; waiting for it to attach again");
  assert.equal(stateOf(rec), "Starting");
  // The host's report decides: started, it waits for its process to attach again.
  report(rec, "Running");
  assert.deepEqual(settle(rec, fx), ['event Started: started on host "spawner"']);
  assert.equal(rec.message, "process started; waiting for it to attach");
  assert.equal(rec.ready(), false);
});

test("deletes: an unscheduled or backing-off container is finalized once; an attached process drains until its grace ends", () => {
  const fx = new Recorder();
  const idle = record("idle");
  idle.deleting = true;
  assert.deepEqual(settle(idle, fx), ["finalize idle"]);
  assert.deepEqual(fx.changes, ["Unscheduled -> Finalizing"]);
  assert.equal(idle.phase(), "Terminating");

  const h = host("h1");
  const backoff = record("bo");
  bind(backoff, h, fx);
  report(backoff, "Failed", "x", 1);
  settle(backoff, fx);
  backoff.deleting = true;
  fx.take();
  assert.deepEqual(settle(backoff, fx), ["finalize bo"]);

  const ext = record("ext", { module: "", function: "", terminationGraceSeconds: 3 });
  adopt(ext, undefined, 0, fx.now());
  const p = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "ext" });
  ext.attached = p;
  settle(ext, fx);
  fx.inflight = 1;
  ext.deleting = true;
  const start = fx.clock;
  assert.deepEqual(settle(ext, fx), ['event Killing: waiting up to 3000 ms for in-flight messages before detaching "proc"']);
  assert.equal(fx.wakes.at(-1), start + 3000);
  fx.clock += 2999;
  assert.deepEqual(settle(ext, fx), [], "still within its grace, work in flight");
  fx.clock += 1;
  assert.deepEqual(settle(ext, fx), ['detach proc (NotFound): container "ext" was deleted', "finalize ext"], "grace over: detached with work still in flight");
  assert.equal(fx.changes.at(-1), "Draining -> Finalizing");

  // Nothing in flight: detached at once; a process that left by itself needs no detach.
  const quick = record("quick", { module: "", function: "" });
  adopt(quick, undefined, 0, fx.now());
  quick.attached = new WorkerLink({ id: "q", name: "qp", role: "attached", container: "quick" });
  settle(quick, fx);
  fx.inflight = 0;
  quick.deleting = true;
  assert.deepEqual(settle(quick, fx), ['detach qp (NotFound): container "quick" was deleted', "finalize quick"]);
  const left = record("left", { module: "", function: "" });
  adopt(left, undefined, 0, fx.now());
  const lp = new WorkerLink({ id: "l", name: "lp", role: "attached", container: "left" });
  left.attached = lp;
  settle(left, fx);
  left.deleting = true;
  lp.close();
  assert.deepEqual(settle(left, fx), ['release left: lost its attached process "lp"', "finalize left"]);
  assert.equal(fx.changes.at(-1), "Attached -> Finalizing");

  // A host lost while its container is deleted: finalized, no restart counted.
  const lost = record("lost");
  const h2 = host("h2");
  bind(lost, h2, fx);
  report(lost, "Running");
  settle(lost, fx);
  lost.deleting = true;
  settle(lost, fx);
  fx.take();
  h2.close();
  assert.deepEqual(settle(lost, fx), ['release lost: lost its host "h2"', "finalize lost"]);
  assert.equal(fx.changes.at(-1), "Stopping -> Finalizing");
  assert.equal(lost.restarts, 0);
});

test("a spec that makes a container external or a module one: the attached process is told why, external ones keep their process", () => {
  const fx = new Recorder();
  const rec = record("x", { module: "", function: "" });
  adopt(rec, undefined, 0, fx.now());
  const p = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "x" });
  rec.attached = p;
  settle(rec, fx);
  const since = fx.clock;
  fx.clock += 10;
  rec.generation = 2n;
  assert.deepEqual(settle(rec, fx), []);
  assert.deepEqual(rec.state, { is: "Attached", since }, "a new spec of an attached external container changes nothing of its run");
  assert.equal(rec.observedGeneration, 2n);

  rec.spec = create(ContainerSchema, { spec: { module: "m", function: "f" } }).spec!;
  rec.kind = "module";
  rec.generation = 3n;
  assert.deepEqual(settle(rec, fx), ['detach proc (FailedPrecondition): container "x" is no longer external']);
  assert.equal(stateOf(rec), "Unscheduled");
  assert.equal(rec.attached, undefined);
});

test("a delete or a spec change while starting stops it on its host; a command's process goes with the stop; a module that becomes external waits for a process", () => {
  const fx = new Recorder();
  const h = host("h1", ["m"], 0, true);
  const starting = record("st");
  bind(starting, h, fx);
  fx.take();
  starting.deleting = true;
  assert.deepEqual(settle(starting, fx), ['event Killing: stopping on host "h1" (deleted), grace 5000 ms', "stop st on h1 within 5000"]);
  report(starting, "Stopped");
  settle(starting, fx);
  assert.deepEqual(fx.changes.slice(-2), ["Starting -> Stopping", "Stopping -> Finalizing"]);

  const respec = record("re");
  bind(respec, h, fx);
  fx.take();
  respec.generation = 2n;
  assert.deepEqual(settle(respec, fx), ['event Killing: stopping on host "h1" (spec changed), grace 5000 ms', "stop re on h1 within 5000"]);

  const cmd = record("cmd", { module: "", function: "", command: ["sleep", "9"] });
  bind(cmd, h, fx);
  report(cmd, "Running");
  cmd.attached = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "cmd" });
  settle(cmd, fx);
  cmd.generation = 2n;
  settle(cmd, fx);
  report(cmd, "Stopped");
  fx.take();
  assert.deepEqual(settle(cmd, fx), ["release cmd: was stopped", 'detach proc (Unavailable): container "cmd" was stopped']);

  const becomes = record("becomes");
  bind(becomes, h, fx);
  report(becomes, "Failed", "x", 1);
  settle(becomes, fx);
  becomes.spec = create(ContainerSchema, { spec: { module: "", function: "" } }).spec!;
  becomes.kind = "external";
  becomes.generation = 2n;
  settle(becomes, fx);
  assert.equal(stateOf(becomes), "Unattached");
  assert.equal(becomes.message, 'waiting for a process to attach to external container "becomes"');
  assert.equal(becomes.hostName, "");
  assert.equal(becomes.observedGeneration, 2n);
});

test("one advance asks for every wake-up and finalize a transition needs (the controller advances once per change)", () => {
  const fx = new Recorder();
  const h = host("h1");
  const running = () => {
    const rec = record(`r${fx.clock}`);
    bind(rec, h, fx);
    report(rec, "Running");
    advance(rec, fx);
    fx.clock++;
    return rec;
  };
  const deleted = running();
  deleted.deleting = true;
  advance(deleted, fx);
  assert.equal(fx.wakes.at(-1), fx.clock + 5000 + 1000, "a delete's stop deadline");
  const respecced = running();
  respecced.generation = 2n;
  advance(respecced, fx);
  assert.equal(fx.wakes.at(-1), fx.clock + 5000 + 1000, "a spec change's stop deadline");
  // The host never reports the deleted one stopped: at the deadline it is finalized at once.
  fx.clock += 6000;
  fx.take();
  advance(deleted, fx);
  assert.deepEqual(fx.take().slice(-2), ["release r1000000: was stopped", "finalize r1000000"]);

  const ext = record("ext", { module: "", function: "" });
  adopt(ext, undefined, 0, fx.now());
  ext.attached = new WorkerLink({ id: "p", name: "proc", role: "attached", container: "ext" });
  advance(ext, fx);
  fx.inflight = 1;
  ext.deleting = true;
  advance(ext, fx);
  assert.equal(fx.wakes.at(-1), fx.clock + 5000, "the drain's end");

  // A command that fails before its process attached has no process to detach.
  const cmd = record("cmd", { module: "", function: "", command: ["false"] });
  bind(cmd, host("sp", [], 0, true), fx);
  report(cmd, "Failed", "", 1);
  fx.take();
  advance(cmd, fx);
  assert.ok(!fx.take().some((l) => l.startsWith("detach")));
});
