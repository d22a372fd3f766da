/**
 * Builds the web dashboard (src/dashboard) into one script, one stylesheet and index.html with
 * esbuild: `npm run build:dashboard`, also run by `npm run build` and by `npm ci` (prepare), so
 * `k4s server` finds the page with no extra step. Writes dist/dashboard unless told otherwise.
 */
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));

/** Builds the page into outDir; resolves to the sizes of the files written, by name. */
export async function buildDashboard(outDir = join(root, "dist", "dashboard")): Promise<Record<string, number>> {
  const src = join(root, "src", "dashboard");
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: [join(src, "main.tsx")],
    outfile: join(outDir, "app.js"),
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    jsx: "automatic",
    jsxImportSource: "preact",
    legalComments: "none",
    logLevel: "warning",
  });
  copyFileSync(join(src, "index.html"), join(outDir, "index.html"));
  const sizes: Record<string, number> = {};
  for (const name of ["index.html", "app.js", "app.css"]) sizes[name] = statSync(join(outDir, name)).size;
  return sizes;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ? resolve(process.argv[2]) : undefined;
  const sizes = await buildDashboard(out);
  const shown = Object.entries(sizes).map(([n, b]) => `${n} ${(b / 1024).toFixed(0)} KiB`).join(", ");
  console.log(`dashboard built: ${shown}`);
}
