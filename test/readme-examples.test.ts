/**
 * The TypeScript examples of the README and the worker SDK's README are complete programs: each
 * `ts` block type-checks on its own against the package as a user installs it (`k4s/client`,
 * `k4s/workers`, resolved through package.json's exports to the built dist/), imports and all.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, objectToJson } from "../src/client/index.js";
import { WORKERS_SDK_JS, spawnK4s, startTestServer } from "./helpers.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DOCS = ["README.md", "src/workers/README.md"];

/** The ```ts blocks of a Markdown file, with the line each starts on. */
function tsBlocks(file: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const lines = readFileSync(join(ROOT, file), "utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== "```ts") continue;
    const end = lines.indexOf("```", i + 1);
    blocks.push({ line: i + 1, code: lines.slice(i + 1, end).join("\n") });
    i = end;
  }
  return blocks;
}

test("every TypeScript example of the READMEs type-checks on its own against the package", async () => {
  // Inside the package folder, so that `k4s/...` resolves to this package by its own name.
  const dir = mkdtempSync(join(ROOT, ".readme-examples-"));
  try {
    const files: string[] = [];
    const origin = new Map<string, string>();
    for (const doc of DOCS) {
      for (const b of tsBlocks(doc)) {
        const file = join(dir, `${doc.replace(/\W+/g, "-")}-${b.line}.ts`);
        // A module of its own (top-level await, no clash between examples' names).
        writeFileSync(file, `${b.code}\nexport {};\n`);
        files.push(file);
        origin.set(file, `${doc}:${b.line}`);
      }
    }
    assert.ok(files.length >= 4, `found ${files.length} examples`);
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const args = ["--noEmit", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--types", "node", "--skipLibCheck", ...files];
    const result = await promisify(execFile)(process.execPath, [tsc, ...args], { cwd: ROOT }).then(
      () => "",
      (err: { stdout: string }) => err.stdout,
    );
    // Name the README line of each error rather than the temporary file.
    const report = [...origin].reduce((text, [file, where]) => text.split(file.slice(ROOT.length)).join(where), result);
    assert.equal(report, "");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the README's worker runs as shown (ConnectError and Code from k4s/workers), and objectToJson makes applied objects plain JSON", async () => {
  const server = await startTestServer();
  const dir = mkdtempSync(join(tmpdir(), "k4s-readme-"));
  // The README's greeter, as the JavaScript a user hands to k4s worker --module.
  const module = join(dir, "greetings.mjs");
  writeFileSync(
    module,
    `import { Code, ConnectError, defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const greeter = defineWorker(async (ctx) => {
  for await (const msg of ctx.messages) {
    if (typeof msg.value !== "string") {
      msg.fail(new ConnectError("send a name as a JSON string", Code.InvalidArgument));
      continue;
    }
    if (msg.expectsReply) msg.reply(\`\${ctx.params.greeting ?? "hello"}, \${msg.value}\`);
  }
});
`,
  );
  const host = spawnK4s(["worker", "--server", server.address, "--module", `greetings=${module}`]);
  const client = createClient({ address: server.address });
  try {
    const [applied] = await client.apply("kind: Container\nmetadata: {name: greet}\nspec: {module: greetings, function: greeter}\n");
    assert.throws(() => JSON.stringify(applied!.object), TypeError, "a protobuf-es message holds bigints");
    const plain = JSON.parse(JSON.stringify(objectToJson(applied!.object)));
    assert.equal(plain.apiVersion, "k4s/v1");
    assert.equal(plain.kind, "Container");
    assert.equal(plain.metadata.name, "greet");
    assert.equal(plain.metadata.generation, 1);
    assert.equal(plain.spec.function, "greeter");
    assert.equal(await client.request("greet", "Ann", { timeoutMs: 30_000 }), "hello, Ann");
    const err = await client.request("greet", 42).catch((e: unknown) => e);
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.rawMessage, "send a name as a JSON string");
  } finally {
    await client.close();
    await host.kill();
    await server.stop();
  }
});
