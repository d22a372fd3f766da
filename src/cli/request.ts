/** `k4s request TARGET JSON [--timeout 5s]`: send a request and print the reply. */
import { Command } from "commander";
import { TEXT_CONTENT_TYPE } from "../api/payload.js";
import { interruptSignal, withClient } from "./connection.js";
import { durationFlag } from "./options.js";
import { messageArguments, readPayloadArg } from "./payload-arg.js";
import { DEFAULT_CALL_TIMEOUT_MS, withWaitingNotice } from "./waiting-notice.js";

interface RequestOptions {
  timeout: number;
  text?: boolean;
}

/** Creates the request command. */
export function requestCommand(): Command {
  return messageArguments(new Command("request").description("send a request to container/NAME, service/NAME or NAME and print the reply"), "the request")
    .addOption(durationFlag("--timeout <duration>", "how long to wait for the reply, e.g. 500ms, 5s", DEFAULT_CALL_TIMEOUT_MS))
    .action(async (target: string, json: string | undefined, opts: RequestOptions, cmd: Command) => {
      const value = await readPayloadArg(json, opts.text ?? false);
      await withClient(cmd, async (client) => {
        const call = client.request(target, value, {
          timeoutMs: opts.timeout,
          contentType: opts.text ? TEXT_CONTENT_TYPE : undefined,
          // Ctrl-C cancels the request on the server too, down to the worker handling it.
          signal: interruptSignal(),
        });
        const reply = await withWaitingNotice(client, target, opts.timeout, call);
        printReply(reply);
      });
    });
}

function printReply(reply: unknown): void {
  if (reply === undefined) return;
  if (typeof reply === "string") console.log(reply);
  else if (reply instanceof Uint8Array) process.stdout.write(reply);
  else console.log(JSON.stringify(reply, null, 2));
}
