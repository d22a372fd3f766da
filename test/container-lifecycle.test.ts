/**
 * The container lifecycle's transitions and the scheduler's choices, in memory: a record, a
 * clock the test moves, and effects that write down what the lifecycle asked for. Each test
 * also checks that advancing again with nothing new asks for nothing (level, not edge).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ContainerSchema, ContainerStatusSchema, type ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import {
  adopt,
  advance,
  bind,
  resume,
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
  detach = (_rec: ContainerRecord, link: WorkerLink, why: string) => void this.log.push(`detach ${link.name}: ${why}`);
  finalize = (rec: ContainerRecord) => {
    rec.finalizing = true;
    this.log.push(`finalize ${rec.name}`);
  };
  inFlight = () => this.inflight;
  record = (_rec: ContainerRecord, reason: string, message: string) => void this.log.push(`event ${reason}: ${message}`);
  wakeAt = () => {};
  token = () => "tok";
  changed = () => {};
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

  const p2 = new WorkerLink({ id: "p2", name: "proc2", role: "attached", container: "ext" });
  rec.attached = p2;
  advance(rec, fx);
  fx.take();
  fx.inflight = 2;
  rec.deleting = true;
  assert.deepEqual(settle(rec, fx), ['event Killing: waiting up to 5000 ms for in-flight messages before detaching "proc2"']);
  assert.equal(stateOf(rec), "Draining");
  fx.inflight = 0; // the router said it is idle
  assert.deepEqual(settle(rec, fx), ['detach proc2: container "ext" was deleted', "finalize ext"]);
});

test("after a server restart: a container that ran waits for its host, which resumes it; one that ended stays ended", () => {
  const fx = new Recorder();
  const rec = record("r");
  adopt(rec, create(ContainerStatusSchema, { phase: "Running", host: "h1" }), 10_000, fx.now());
  assert.deepEqual(rec.state, { is: "AwaitingHost", host: "h1", until: fx.clock + 10_000 });
  assert.deepEqual(settle(rec, fx), []);
  const h = host("h1");
  resume(rec, h, fx);
  assert.deepEqual(fx.take(), ['event Resumed: host "h1" still runs it']);
  assert.equal(stateOf(rec), "Running");

  const late = record("late");
  adopt(late, create(ContainerStatusSchema, { phase: "Running", host: "gone" }), 10_000, fx.now());
  fx.clock += 10_000;
  settle(late, fx);
  assert.equal(stateOf(late), "Unscheduled", "its host did not come back in time");

  const done = record("done", { restartPolicy: "Never" });
  adopt(done, create(ContainerStatusSchema, { phase: "Succeeded", host: "h1", message: "completed" }), 10_000, fx.now());
  assert.deepEqual(done.state, { is: "Ended", phase: "Succeeded" });
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
