/**
 * The layout's boundaries, read from the imports of every file under src/ (type-only imports,
 * re-exports, `import("x")` types and dynamic imports included): what each folder may import,
 * and no import cycle between files. A new import that crosses a boundary fails here with the
 * file and the import named. Also the size rule of the code: no function of src/ (generated
 * code aside) over MAX_FUNCTION_LINES lines.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");

/** One import of a file: what it names and, for a file of src/, which file that is. */
interface Import {
  specifier: string;
  /** The imported file relative to the repository ("src/api/x.ts"), or undefined for a package. */
  file: string | undefined;
  line: number;
  /** Loaded with the importing file: a static import of values (not type-only, not `import()`). */
  eager: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return /\.tsx?$/.test(e.name) && !e.name.endsWith(".d.ts") ? [relative(ROOT, path)] : [];
  });
}

/** Every import of a file, found in its syntax tree (not by pattern, so none hides in a comment). */
function importsOf(file: string, known: Set<string>): Import[] {
  const text = readFileSync(join(ROOT, file), "utf8");
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, file.endsWith(".tsx") ? ts.ScriptKind.TSX : ts.ScriptKind.TS);
  const out: Import[] = [];
  const add = (lit: ts.Node | undefined, eager = false) => {
    if (!lit || !ts.isStringLiteralLike(lit)) return;
    const specifier = lit.text;
    let target: string | undefined;
    if (specifier.startsWith(".")) {
      const base = relative(ROOT, resolve(ROOT, dirname(file), specifier));
      target = [base.replace(/\.js$/, ".ts"), base.replace(/\.js$/, ".tsx"), base].find((f) => known.has(f)) ?? base;
    }
    out.push({ specifier, file: target, line: sf.getLineAndCharacterOfPosition(lit.getStart()).line + 1, eager });
  };
  const visit = (n: ts.Node) => {
    if (ts.isImportDeclaration(n)) add(n.moduleSpecifier, !n.importClause?.isTypeOnly);
    else if (ts.isExportDeclaration(n)) add(n.moduleSpecifier, !n.isTypeOnly);
    else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) add(n.argument.literal);
    else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) add(n.arguments[0]);
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

const files = sourceFiles(SRC);
const known = new Set(files);
const graph = new Map(files.map((f) => [f, importsOf(f, known)]));

const isBuiltin = (specifier: string) => specifier.startsWith("node:") || builtinModules.includes(specifier.split("/")[0]!);
const under = (file: string | undefined, folder: string) => file !== undefined && file.startsWith(`src/${folder}/`);

/** The imports of files under `folder` for which `bad` holds, as "file:line imports x" lines. */
function offending(folder: string, bad: (imp: Import) => boolean): string[] {
  const found: string[] = [];
  for (const [file, imports] of graph) {
    if (!under(file, folder)) continue;
    for (const imp of imports) if (bad(imp)) found.push(`${file}:${imp.line} imports "${imp.specifier}"`);
  }
  return found;
}

test("the source tree was read: every folder of the layout has files with imports", () => {
  for (const folder of ["api", "transport", "client", "workers", "server", "cli", "gen"]) {
    assert.ok(files.some((f) => under(f, folder)), `no file found under src/${folder}`);
  }
  assert.ok(graph.get("src/client/client.ts")!.some((i) => under(i.file, "transport")), "client.ts's imports of src/transport were not found");
  // Every relative import names a file of the tree (else the rules below could miss it).
  const dangling = [...graph].flatMap(([file, imports]) =>
    imports.filter((i) => i.file !== undefined && !known.has(i.file) && !/\.(css|json)$/.test(i.file)).map((i) => `${file}:${i.line} "${i.specifier}"`),
  );
  assert.deepEqual(dangling, [], "relative imports that name no file under src/");
});

test("src/client imports nothing of src/workers, src/server or src/cli (the SDK carries no server and no worker runtime)", () => {
  assert.deepEqual(offending("client", (i) => under(i.file, "workers") || under(i.file, "server") || under(i.file, "cli")), []);
});

test("src/api is pure: no Node built-in, and only src/api and src/gen of the tree", () => {
  assert.deepEqual(offending("api", (i) => isBuiltin(i.specifier)), []);
  assert.deepEqual(offending("api", (i) => i.file !== undefined && !under(i.file, "api") && !under(i.file, "gen")), []);
});

test("src/transport is below client, workers and server: it imports none of them", () => {
  assert.deepEqual(offending("transport", (i) => ["client", "workers", "server", "cli", "dashboard"].some((f) => under(i.file, f))), []);
});

test("src/workers imports nothing of src/server, src/client or src/cli; src/server nothing of src/cli or src/client", () => {
  assert.deepEqual(offending("workers", (i) => under(i.file, "server") || under(i.file, "client") || under(i.file, "cli")), []);
  assert.deepEqual(offending("server", (i) => under(i.file, "cli") || under(i.file, "client")), []);
});

test("src/dashboard is browser code: of the tree it imports only src/api and src/gen", () => {
  assert.deepEqual(offending("dashboard", (i) => i.file !== undefined && !/\.css$/.test(i.file) && !["dashboard", "api", "gen"].some((f) => under(i.file, f))), []);
});

test("src/gen is generated code: it imports only src/gen and packages", () => {
  assert.deepEqual(offending("gen", (i) => i.file !== undefined && !under(i.file, "gen")), []);
});

test("no import cycle between files, type-only and dynamic imports included", () => {
  // Tarjan's strongly connected components: any component of more than one file is a cycle.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const connect = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const imp of graph.get(v)!) {
      const w = imp.file;
      if (w === undefined || !graph.has(w)) continue;
      if (w === v) cycles.push([v]);
      else if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) cycles.push(component.sort());
    }
  };
  for (const f of files) if (!index.has(f)) connect(f);
  assert.deepEqual(cycles, [], "files that import each other in a loop");
});

test("the etcd client is loaded only for an etcd:// store: no static import chain from the server or the CLI reaches it", () => {
  // Importing etcd3 (and its own gRPC stack) costs ~0.3-1.3 s and ~9 MiB; a SQLite server must not pay it.
  const chainTo = (from: string, pkg: string): string[] | undefined => {
    const seen = new Set<string>();
    const walk = (file: string, path: string[]): string[] | undefined => {
      if (seen.has(file)) return undefined;
      seen.add(file);
      for (const imp of graph.get(file) ?? []) {
        if (!imp.eager) continue;
        if (imp.specifier === pkg) return [...path, `${file}:${imp.line}`];
        if (imp.file !== undefined && graph.has(imp.file)) {
          const found = walk(imp.file, [...path, `${file}:${imp.line}`]);
          if (found) return found;
        }
      }
      return undefined;
    };
    return walk(from, []);
  };
  assert.ok(graph.get("src/server/store/etcd-store.ts")!.some((i) => i.eager && i.specifier === "etcd3"), "etcd-store.ts's import of etcd3 was not found");
  for (const entry of ["src/server/server.ts", "src/cli/main.ts"]) assert.equal(chainTo(entry, "etcd3"), undefined, `${entry} loads etcd3 eagerly`);
});

/**
 * The longest a function of src/ may be, in lines from its first to its last (JSDoc aside). Past
 * it a factory holds several concepts at once: split it into module-level functions or smaller
 * factories before adding to it.
 */
const MAX_FUNCTION_LINES = 150;

/** The functions (declarations, expressions, arrows, methods, accessors) of a source text longer than `limit` lines. */
function longFunctions(file: string, text: string, limit: number): string[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, file.endsWith(".tsx") ? ts.ScriptKind.TSX : ts.ScriptKind.TS);
  const found: string[] = [];
  const nameOf = (n: ts.FunctionLikeDeclaration): string => {
    if (n.name) return n.name.getText(sf);
    const p = n.parent;
    if (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p) || ts.isPropertyDeclaration(p)) return p.name.getText(sf);
    return "(anonymous)";
  };
  const visit = (n: ts.Node) => {
    if (ts.isFunctionLike(n) && "body" in n && n.body) {
      const first = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line;
      const last = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
      if (last - first + 1 > limit) found.push(`${file}:${first + 1} ${nameOf(n as ts.FunctionLikeDeclaration)} (${last - first + 1} lines)`);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return found;
}

test(`no function of src/ outside src/gen is over ${MAX_FUNCTION_LINES} lines`, () => {
  // The measure itself finds a long function, a long arrow and a long method.
  const body = (n: number) => Array.from({ length: n }, (_, i) => `  x += ${i};`).join("\n");
  const sample = `function f() {\n${body(MAX_FUNCTION_LINES)}\n}\nconst g = () => {\n${body(MAX_FUNCTION_LINES)}\n};\nconst o = { m() {\n${body(MAX_FUNCTION_LINES)}\n} };\nfunction short() {\n${body(MAX_FUNCTION_LINES - 2)}\n}\n`;
  assert.deepEqual(
    longFunctions("sample.ts", sample, MAX_FUNCTION_LINES).map((l) => l.replace(/:\d+ /, " ")),
    [`sample.ts f (${MAX_FUNCTION_LINES + 2} lines)`, `sample.ts g (${MAX_FUNCTION_LINES + 2} lines)`, `sample.ts m (${MAX_FUNCTION_LINES + 2} lines)`],
  );
  const tooLong = files.filter((f) => !under(f, "gen")).flatMap((f) => longFunctions(f, readFileSync(join(ROOT, f), "utf8"), MAX_FUNCTION_LINES));
  assert.deepEqual(tooLong, [], `functions over ${MAX_FUNCTION_LINES} lines: split them into module-level functions or smaller factories`);
});
