#!/usr/bin/env node
// The k4s command. Runs the TypeScript sources through tsx, so `npm ci` leaves a working
// command with no build step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
await main(process.argv);
