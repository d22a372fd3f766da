/** The command line every side bench shares: `--quick` and `--rounds N`, and the windows they imply. */
import { Command } from "commander";

/** How many rounds to run and how long each measures. */
export interface RoundOptions {
  rounds: number;
  warmupMs: number;
  durationMs: number;
  /** `--scenarios A B ...`: run only these (empty: all); a bench that has no scenarios ignores it. */
  scenarios: string[];
}

/** Parses `--quick` (1 round, short windows), `--rounds N` (default 3) and `--scenarios A B ...` from process.argv. */
export function parseRoundOptions(): RoundOptions {
  const opts = new Command()
    .option("--quick", "1 round, short windows", false)
    .option("--rounds <n>", "rounds (default 3; --quick 1)", (v) => Number(v))
    .option("--scenarios <names...>", "the scenarios to run, each one argument (default: all)")
    .parse()
    .opts<{ quick: boolean; rounds?: number; scenarios?: string[] }>();
  return {
    rounds: opts.rounds ?? (opts.quick ? 1 : 3),
    warmupMs: opts.quick ? 300 : 500,
    durationMs: opts.quick ? 1000 : 3000,
    scenarios: opts.scenarios ?? [],
  };
}
