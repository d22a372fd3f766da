/**
 * `k4s rollout restart rs NAME` and `k4s rollout status rs NAME`, as kubectl's: a restart writes
 * the time into the template's `k4s.io/restartedAt` annotation, and the ReplicaSet controller
 * replaces the replicas one at a time, each new one ready before an old one goes, so a Service
 * over them always has a ready endpoint. `status` (and `restart --wait`) waits for the end.
 */
import { Command } from "commander";
import { clone, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { isUpToDate, RESTARTED_AT_ANNOTATION, templateAnnotations } from "../api/rollout.js";
import type { K4sClient } from "../client/client.js";
import { ObjectMetaSchema, ReplicaSetSchema, type Container, type ReplicaSet } from "../gen/k4s/v1/resources_pb.js";
import { withClient } from "./connection.js";
import { formatDuration } from "./duration.js";
import { CliError } from "./errors.js";
import { durationFlag, kindAndName } from "./options.js";
import { createProgress } from "./progress.js";

/** How often the annotation write is retried after another writer changed the ReplicaSet first. */
const CONFLICT_RETRIES = 5;

/** Creates the rollout command with its restart and status subcommands. */
export function rolloutCommand(): Command {
  const rollout = new Command("rollout").description("restart a ReplicaSet's replicas one by one, or wait for a restart to finish");
  rollout
    .command("restart")
    .description("replace every replica, one at a time, each new one ready before an old one goes")
    .argument("<kind>", "replicasets|rs, or rs/NAME")
    .argument("[name]", "the ReplicaSet's name")
    .option("--wait", "wait until every replica was replaced and is ready, showing progress")
    .addOption(durationFlag("--timeout <duration>", "how long --wait waits", 5 * 60_000))
    .action(async (kindArg: string, nameArg: string | undefined, opts: { wait?: boolean; timeout: number }, cmd: Command) => {
      const name = replicaSetName("restart", kindArg, nameArg);
      await withClient(cmd, async (client) => {
        await restart(client, name);
        console.log(`replicaset/${name} restarted`);
        if (opts.wait) await waitRolledOut(client, name, opts.timeout);
      });
    });
  rollout
    .command("status")
    .description("wait until a ReplicaSet's replicas are all up to date and ready, showing progress")
    .argument("<kind>", "replicasets|rs, or rs/NAME")
    .argument("[name]", "the ReplicaSet's name")
    .addOption(durationFlag("--timeout <duration>", "how long to wait", 5 * 60_000))
    .action(async (kindArg: string, nameArg: string | undefined, opts: { timeout: number }, cmd: Command) => {
      const name = replicaSetName("status", kindArg, nameArg);
      await withClient(cmd, (client) => waitRolledOut(client, name, opts.timeout));
    });
  return rollout;
}

function replicaSetName(verb: string, kindArg: string, nameArg: string | undefined): string {
  const { kind, name } = kindAndName(kindArg, nameArg);
  if (kind !== "ReplicaSet") throw new CliError(`cannot rollout ${verb} a ${kind}: only ReplicaSets (rs) have replicas to restart`);
  if (!name) throw new CliError(`rollout ${verb} ${kindArg} needs a NAME`);
  return name;
}

/** Writes the restart time into the template's annotations, conditional on the version read. */
async function restart(client: K4sClient, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const rs = await client.get("ReplicaSet", name);
    if (!rs.spec?.template?.spec) {
      throw new CliError(`replicaset/${name} copies the Container "${rs.spec?.container}" (spec.container): rollout restart needs an inline spec.template`);
    }
    const next = clone(ReplicaSetSchema, rs);
    const template = next.spec!.template!;
    template.metadata ??= create(ObjectMetaSchema);
    template.metadata.annotations[RESTARTED_AT_ANNOTATION] = new Date().toISOString();
    try {
      await client.update(next);
      return;
    } catch (err) {
      if (!(err instanceof ConnectError && err.code === Code.Aborted) || attempt >= CONFLICT_RETRIES) throw err;
    }
  }
}

/** How far a rollout got: replicas up to date and ready, of those wanted. */
function rolloutState(rs: ReplicaSet, replicas: Iterable<Container>): { updated: number; desired: number; total: number } {
  const wanted = templateAnnotations(rs);
  let updated = 0;
  let total = 0;
  for (const c of replicas) {
    if (c.metadata?.deletionTimestamp) continue;
    total++;
    if (c.status?.ready && isUpToDate(c, wanted)) updated++;
  }
  return { updated, desired: rs.spec?.replicas ?? 1, total };
}

/**
 * Follows a ReplicaSet and its replicas until every replica is up to date and ready and no old
 * one is left, drawing progress; a CliError after timeoutMs naming how far it got.
 */
async function waitRolledOut(client: K4sClient, name: string, timeoutMs: number): Promise<void> {
  const progress = createProgress((line) => console.log(line));
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let rs = await client.get("ReplicaSet", name);
  const replicas = new Map<string, Container>();
  let state = { updated: 0, desired: rs.spec?.replicas ?? 1, total: 0 };
  const owned = (c: Container) => c.metadata?.ownerReference?.kind === "ReplicaSet" && c.metadata.ownerReference.uid === rs.metadata?.uid;
  const done = () => {
    state = rolloutState(rs, replicas.values());
    if (state.updated >= state.desired && state.total === state.desired) return true;
    progress.update(state.updated, state.desired, `waiting for replicaset/${name}: ${state.updated} of ${state.desired} updated replicas ready${state.total > state.desired ? `, ${state.total - state.desired} old one(s) to go` : ""}`);
    return false;
  };
  try {
    const listed = await client.list("Container", { nameGlob: `${name}-*` });
    for (const c of listed.items) if (owned(c)) replicas.set(c.metadata!.name, c);
    if (done()) return finish();
    for await (const ev of client.watch({ nameGlob: `${name}*`, resourceVersion: listed.resourceVersion, signal: controller.signal })) {
      const obj = ev.object;
      if (obj.$typeName === "k4s.v1.ReplicaSet") {
        if (obj.metadata?.name !== name) continue;
        if (ev.type === "DELETED") throw new CliError(`replicaset/${name} was deleted during the rollout`);
        rs = obj;
      } else if (obj.$typeName === "k4s.v1.Container" && owned(obj)) {
        if (ev.type === "DELETED") replicas.delete(obj.metadata!.name);
        else replicas.set(obj.metadata!.name, obj);
      } else continue;
      if (done()) return finish();
    }
  } catch (err) {
    if (!(controller.signal.aborted && err instanceof ConnectError && err.code === Code.Canceled)) throw err;
  } finally {
    clearTimeout(timer);
    controller.abort();
    progress.end();
  }
  throw new CliError(`timed out after ${formatDuration(timeoutMs)} waiting for replicaset/${name}: ${state.updated} of ${state.desired} updated replicas ready`);

  function finish(): void {
    progress.end();
    console.log(`replicaset/${name} successfully rolled out (${state.desired} of ${state.desired} updated replicas ready)`);
  }
}
