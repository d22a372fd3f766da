// The k4s command from the unbundled dist/cli/main.js (built by `npm run build`), for profiles
// that name functions and files: bench/lib/systems.ts runs it instead of bin/k4s.js when
// BENCH_CPU_PROF is set.
const { main } = await import("../../dist/cli/main.js");
await main(process.argv);
