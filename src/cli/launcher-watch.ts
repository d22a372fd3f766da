/**
 * Noticing that the npx (npm exec) that started a long-running k4s command is gone. Killing
 * `npx k4s server` kills npm, but not the `sh -c` npm ran nor the k4s process under it, which
 * would go on serving with nobody to stop it; so under npm, k4s watches the processes above it.
 */
import { readFileSync } from "node:fs";

/** How often the launcher is looked for. */
const CHECK_EVERY_MS = 1000;

/** The parent pid of a process, from /proc (Linux); undefined where there is no /proc. */
function parentOf(pid: number): number | undefined {
  try {
    // Field 4 of /proc/PID/stat, after the command name in parentheses (which may hold spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * When this process was started by `npx` / `npm exec`, calls onGone once the npm process (or
 * the shell between it and us) has exited; otherwise does nothing, so a server started from a
 * shell, nohup or a service manager lives on its own. Returns a function that stops watching.
 */
export function watchLauncher(onGone: (what: string) => void): () => void {
  if (process.env.npm_command !== "exec") return () => {};
  const parent = process.ppid;
  const ancestors = [parent];
  const grandparent = parentOf(parent);
  if (grandparent !== undefined && grandparent > 1) ancestors.push(grandparent);
  const timer = setInterval(() => {
    if (process.ppid === parent && ancestors.every(alive)) return;
    clearInterval(timer);
    onGone("the npx (npm exec) that started it is gone");
  }, CHECK_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}
