/** The server's data directory: made ready before the store opens in it. */
import { accessSync, constants, mkdirSync, rmdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { reasonOf, StartupError } from "./startup-error.js";

/**
 * Makes sure a data directory exists and is a writable directory, creating it and its missing
 * parents; returns its absolute path and the directories it created (to remove them again when
 * the start fails later). Failures are StartupErrors naming the path and the reason. Node's recursive mkdir is
 * not used: it loops forever on paths like /proc/k4s, where the parent exists but refuses.
 */
export function prepareDataDir(dir: string): { path: string; created: string[] } {
  const path = resolve(dir);
  const fail = (reason: string): never => {
    throw new StartupError(`data dir ${path}: ${reason}`, "dataDir");
  };
  const missing: string[] = [];
  let at = path;
  for (;;) {
    let isDir: boolean;
    try {
      isDir = statSync(at).isDirectory();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a file on the way; walking up finds it and names it.
      if (code !== "ENOENT" && code !== "ENOTDIR") fail(`${at}: ${reasonOf(err)}`);
      missing.unshift(at);
      const parent = dirname(at);
      if (parent === at) fail("no such file system root");
      at = parent;
      continue;
    }
    if (!isDir) fail(at === path ? "it is a file, not a directory" : `${at} is a file, not a directory`);
    break;
  }
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT for a directory whose parent exists: a file system that makes no directories (/proc).
      fail(`cannot create ${d}: ${code === "ENOENT" ? `${dirname(d)} does not take new directories` : reasonOf(err)}`);
    }
  }
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch (err) {
    fail(`not writable (${reasonOf(err)})`);
  }
  return { path, created: missing };
}

/** Removes the directories prepareDataDir created, if they are still empty. */
export function removeCreatedDirs(created: readonly string[]): void {
  for (const d of [...created].reverse()) {
    try {
      rmdirSync(d);
    } catch {
      return;
    }
  }
}
