/**
 * The NATS peer's responder process: serves request subjects in a queue group (replying the
 * payload as is) and counts fire-and-forget messages on others. Args: NATS URL, then
 * `--reply SUBJECT` / `--count SUBJECT` pairs. Answers {cmd:"count"} over IPC.
 */
import { connect } from "nats";
import { exitWithParent, failStartup, tellParent } from "../lib/processes.js";

const [url, ...rest] = process.argv.slice(2);
let received = 0;
try {
  const nc = await connect({ servers: url!, noEcho: true, maxReconnectAttempts: 0 });
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const subject = rest[i + 1]!;
    if (rest[i] === "--reply") {
      nc.subscribe(subject, { queue: subject, callback: (_err, m) => void m.respond(m.data) });
    } else {
      nc.subscribe(subject, { queue: subject, callback: () => void received++ });
    }
  }
  await nc.flush();
  process.on("message", (m: { id: number; cmd: string }) => {
    if (m.cmd === "count") tellParent({ id: m.id, count: received });
  });
  exitWithParent(() => nc.close());
  tellParent({ ev: "ready" });
} catch (err) {
  failStartup(err);
}
