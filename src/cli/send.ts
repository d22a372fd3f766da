/** `k4s send TARGET JSON`: queue a fire-and-forget message at a container or a service. */
import { Command } from "commander";
import { TEXT_CONTENT_TYPE } from "../api/payload.js";
import { withClient } from "./connection.js";
import { durationFlag } from "./options.js";
import { messageArguments, readPayloadArg } from "./payload-arg.js";
import { DEFAULT_CALL_TIMEOUT_MS, withWaitingNotice } from "./waiting-notice.js";

/** Creates the send command. */
export function sendCommand(): Command {
  return messageArguments(new Command("send").description("send a fire-and-forget message to container/NAME, service/NAME or NAME"), "the message")
    .addOption(durationFlag("--timeout <duration>", "how long to wait for an inbox to take it (a service: a ready endpoint), e.g. 500ms, 5s", DEFAULT_CALL_TIMEOUT_MS))
    .action(async (target: string, json: string | undefined, opts: { text?: boolean; timeout: number }, cmd: Command) => {
      const value = await readPayloadArg(json, opts.text ?? false);
      await withClient(cmd, async (client) => {
        const call = client.send(target, value, { contentType: opts.text ? TEXT_CONTENT_TYPE : undefined, timeoutMs: opts.timeout });
        const receipt = await withWaitingNotice(client, target, opts.timeout, call);
        console.log(`message queued at container/${receipt.container}`);
      });
    });
}
