/**
 * `k4s edit KIND NAME`, as kubectl's: the object opens in $K4S_EDITOR or $EDITOR (else vi) as
 * YAML (or JSON with -o json); what is saved is written back on condition that nobody changed
 * the object since it was read. A save the server refuses reopens the file with the error on top;
 * saving that unchanged gives up, keeps the file and prints its path, so no edit is lost.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command, Option } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import { kindOf, type AnyObject, type Kind } from "../api/kinds.js";
import { parseManifestDocuments } from "../api/manifest.js";
import { objectToJson } from "../api/object-json.js";
import type { K4sClient } from "../client/client.js";
import { withClient } from "./connection.js";
import { CliError, formatError } from "./errors.js";
import { kindRef, loadYaml, renderJson } from "./format.js";
import { kindAndName } from "./options.js";

/** The environment variables naming the editor, in the order they are read (kubectl's KUBE_EDITOR first). */
const EDITOR_VARIABLES = ["K4S_EDITOR", "EDITOR"] as const;

const HEADER = [
  "# Please edit the object below. Lines beginning with a '#' will be ignored,",
  "# and an empty file will abort the edit. If an error occurs while saving this file will be",
  "# reopened with the relevant failures.",
  "#",
];

/** Creates the edit command. */
export function editCommand(): Command {
  return new Command("edit")
    .description("edit an object in $K4S_EDITOR or $EDITOR and save it back (only if nobody changed it meanwhile)")
    .argument("<kind>", "containers|c, replicasets|rs, services|svc (or KIND/NAME)")
    .argument("[name]", "the object's name")
    .addOption(new Option("-o, --output <format>", "the text to edit").choices(["yaml", "json"]).default("yaml"))
    .action(async (kindArg: string, nameArg: string | undefined, opts: { output: "yaml" | "json" }, cmd: Command) => {
      const { kind, name } = kindAndName(kindArg, nameArg);
      if (!name) throw new CliError(`edit ${kindArg} needs a NAME`);
      await loadYaml();
      await withClient(cmd, (client) => edit(client, kind, name, opts.output));
    });
}

/** The editor command line: $K4S_EDITOR, else $EDITOR, else vi. */
function editorCommand(): string {
  for (const v of EDITOR_VARIABLES) {
    const value = process.env[v]?.trim();
    if (value) return value;
  }
  return "vi";
}

/** Runs the editor on a file through the shell, so EDITOR may carry arguments ("code --wait"). */
function runEditor(path: string): void {
  const editor = editorCommand();
  const r = spawnSync("sh", ["-c", `${editor} "$1"`, "k4s-edit", path], { stdio: "inherit" });
  if (r.error) throw new CliError(`cannot run the editor "${editor}": ${r.error.message}`);
  if (r.status !== 0) throw new CliError(`the editor "${editor}" exited with ${r.status ?? r.signal}; nothing was changed`);
}

/** The text without its comment lines, as it is compared and parsed. */
function withoutComments(text: string): string {
  return text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .trim();
}

async function edit(client: K4sClient, kind: Kind, name: string, format: "yaml" | "json"): Promise<void> {
  const current = await client.get(kind, name);
  const original = renderJson(objectToJson(current), format);
  const dir = mkdtempSync(join(tmpdir(), "k4s-edit-"));
  const path = join(dir, `${kind.toLowerCase()}-${name}.${format}`);
  let shown = `${[...HEADER, original].join("\n")}\n`;
  let lastError: string | undefined;
  for (;;) {
    writeFileSync(path, shown);
    runEditor(path);
    const saved = readFileSync(path, "utf8");
    const body = withoutComments(saved);
    if (body === "") {
      rmSync(dir, { recursive: true, force: true });
      console.log("Edit cancelled, saved file was empty.");
      return;
    }
    if (body === withoutComments(original)) {
      rmSync(dir, { recursive: true, force: true });
      console.log("Edit cancelled, no changes made.");
      return;
    }
    if (lastError !== undefined && saved === shown) {
      // Saved again as it was shown, error and all: the user gives up; keep what they wrote.
      process.stderr.write(`A copy of your changes has been stored to "${path}"\n`);
      throw new CliError(`edit cancelled, no valid changes were saved (last error: ${lastError})`);
    }
    try {
      await client.update(edited(body, current));
      rmSync(dir, { recursive: true, force: true });
      console.log(`${kindRef(kind, name)} edited`);
      return;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unavailable) {
        writeFileSync(path, `${body}\n`);
        process.stderr.write(`A copy of your changes has been stored to "${path}"\n`);
        throw err;
      }
      lastError = formatError(err);
      shown = `${[...HEADER, "# The edit could not be saved:", `# * ${lastError}`, "#", body].join("\n")}\n`;
    }
  }
}

/**
 * The object the edited text describes, checked as a manifest is, with the version read as its
 * precondition: the same kind and name, or an error naming what changed.
 */
function edited(text: string, current: AnyObject): AnyObject {
  const docs = parseManifestDocuments(text);
  if (docs.length !== 1) throw new CliError(`the edited text must hold exactly one object, found ${docs.length}`);
  const obj = docs[0]!.object;
  const kind = kindOf(current);
  const name = current.metadata!.name;
  if (kindOf(obj) !== kind || obj.metadata?.name !== name) {
    throw new CliError(`kind and metadata.name cannot change (was ${kindRef(kind, name)}, now ${kindRef(kindOf(obj), obj.metadata?.name ?? "")})`);
  }
  obj.metadata!.resourceVersion = current.metadata!.resourceVersion;
  return obj;
}
