// Mutation testing of the core with StrykerJS (npm run mutate; not part of npm test): each
// mutant of the modules below is run against the fast unit tests that cover it, through the TAP
// runner over node:test (tsx loads the TypeScript). Results: reports/mutation/ and docs/testing.md.
/** @type {import("@stryker-mutator/api/core").PartialStrykerOptions} */
export default {
  testRunner: "tap",
  plugins: ["@stryker-mutator/tap-runner"],
  tap: {
    testFiles: [
      "test/auth.test.ts",
      "test/inbox.test.ts",
      "test/deadline-queue.test.ts",
      "test/router.test.ts",
      "test/container-lifecycle.test.ts",
    ],
    nodeArgs: ["--import", "tsx", "--test-reporter=tap", "-r", "{{hookFile}}", "{{testFile}}"],
  },
  mutate: (process.env.K4S_MUTATE ?? [
    "src/server/auth.ts",
    "src/server/messaging/inbox.ts",
    "src/server/messaging/deadline-queue.ts",
    "src/server/messaging/mailbox.ts",
    "src/server/controllers/scheduler.ts",
  ].join(",")).split(","),
  coverageAnalysis: "perTest",
  // The machine is shared: two test processes at a time at most.
  concurrency: Number(process.env.K4S_MUTATE_CONCURRENCY ?? 2),
  timeoutMS: 20_000,
  reporters: ["clear-text", "progress-append-only", "html", "json"],
  htmlReporter: { fileName: "reports/mutation/index.html" },
  jsonReporter: { fileName: "reports/mutation/mutation.json" },
  tempDirName: ".stryker-tmp",
  ignorePatterns: ["dist", "reports", "bench", "api-releases", ".stryker-tmp"],
  cleanTempDir: true,
};
