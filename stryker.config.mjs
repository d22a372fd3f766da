// Mutation testing of the core with StrykerJS (npm run mutate; not part of npm test): each
// mutant of a module is run against the fast unit tests that cover that module, through the TAP
// runner over node:test (tsx loads the TypeScript). Results: reports/mutation/ and docs/testing.md.

/**
 * MODULE_TESTS maps each mutated module to the unit test files that check it. Only these files
 * run: a module's mutants are killed by tests of what it promises, and the end-to-end suites are
 * far too slow to run once per mutant on a shared 2-core machine.
 */
export const MODULE_TESTS = {
  "src/server/auth.ts": ["test/auth.test.ts"],
  "src/server/messaging/inbox.ts": ["test/inbox.test.ts"],
  "src/server/messaging/deadline-queue.ts": ["test/deadline-queue.test.ts"],
  "src/server/messaging/mailbox.ts": ["test/router.test.ts"],
  "src/server/messaging/router.ts": ["test/router.test.ts"],
  // The router's parts, all reached through the router's interface.
  "src/server/messaging/deliveries.ts": ["test/router.test.ts"],
  "src/server/messaging/service-routing.ts": ["test/router.test.ts"],
  "src/server/messaging/service-route.ts": ["test/directory.test.ts", "test/router.test.ts"],
  "src/server/messaging/directory.ts": ["test/directory.test.ts", "test/router.test.ts"],
  "src/server/messaging/cancellation.ts": ["test/router.test.ts"],
  "src/server/messaging/answers.ts": ["test/answers.test.ts", "test/router.test.ts"],
  "src/server/controllers/container-lifecycle.ts": ["test/container-lifecycle.test.ts"],
  "src/server/controllers/scheduler.ts": ["test/scheduler.test.ts", "test/container-lifecycle.test.ts"],
  "src/api/manifest.ts": ["test/manifest.test.ts"],
  "src/api/validate.ts": ["test/manifest.test.ts"],
  "src/transport/frame-codec.ts": ["test/frame-codec.test.ts"],
  "src/server/store/sqlite-store.ts": ["test/sqlite-store.test.ts"],
  "src/server/store/create-resource-store.ts": ["test/resource-store.test.ts"],
};

// K4S_MUTATE (set by scripts/mutate.mjs from its arguments) picks the modules; default all. A
// module may name a line range (src/transport/frame-codec.ts:150-420), as Stryker's `mutate` does,
// to re-run the survivors' lines of a long module.
const modules = process.env.K4S_MUTATE ? process.env.K4S_MUTATE.split(",") : Object.keys(MODULE_TESTS);
const fileOf = (m) => m.replace(/:\d+(-\d+)?$/, "");
const unknown = modules.filter((m) => !(fileOf(m) in MODULE_TESTS));
if (unknown.length > 0) {
  throw new Error(`no unit tests are mapped for ${unknown.join(", ")}: add them to MODULE_TESTS in stryker.config.mjs`);
}

// One report per module run alone (reports/mutation/router.html, frame-codec-150-420.html ...),
// "all" otherwise.
const report = modules.length === 1 ? modules[0].replace(/^.*\//, "").replace(/\.ts/, "").replace(":", "-") : "all";

/** @type {import("@stryker-mutator/api/core").PartialStrykerOptions} */
export default {
  testRunner: "tap",
  plugins: ["@stryker-mutator/tap-runner"],
  tap: {
    testFiles: [...new Set(modules.flatMap((m) => MODULE_TESTS[fileOf(m)]))],
    nodeArgs: ["--import", "tsx", "--test-reporter=tap", "-r", "{{hookFile}}", "{{testFile}}"],
  },
  mutate: modules,
  coverageAnalysis: "perTest",
  // The machine is shared: two test processes at a time at most.
  concurrency: Number(process.env.K4S_MUTATE_CONCURRENCY ?? 2),
  timeoutMS: 20_000,
  reporters: ["clear-text", "progress-append-only", "html", "json"],
  htmlReporter: { fileName: `reports/mutation/${report}.html` },
  jsonReporter: { fileName: `reports/mutation/${report}.json` },
  tempDirName: ".stryker-tmp",
  ignorePatterns: ["dist", "reports", "bench", "api-releases", ".stryker-tmp"],
  cleanTempDir: true,
};
