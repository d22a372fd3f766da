// npm run mutate [-- MODULE[:FROM-TO]...] [-- STRYKER-OPTION...]: mutation testing of the named core
// modules (default: all in stryker.config.mjs), each against its own unit tests. Arguments that
// start with "-" go to `stryker run` as they are (e.g. --concurrency 1).
import { spawnSync } from "node:child_process";

const args = process.argv.slice(2);
const modules = args.filter((a) => !a.startsWith("-") && /\.[cm]?ts(:\d+(-\d+)?)?$/.test(a));
const options = args.filter((a) => !modules.includes(a));
const env = { ...process.env };
if (modules.length > 0) env.K4S_MUTATE = modules.join(",");
const run = spawnSync("npx", ["stryker", "run", ...options], { stdio: "inherit", env });
process.exit(run.status ?? 1);
