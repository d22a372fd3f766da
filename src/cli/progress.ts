/**
 * Progress of a long wait (`apply --wait`, `scale --wait`, `rollout`): on a terminal, a bar
 * redrawn in place on stderr; otherwise (piped, a log file, CI) a plain line each time the words
 * change, so logs stay readable and scripts see every step.
 */

/** Progress reports how far a wait got. */
export interface Progress {
  /** Reports `done` of `total` steps and what is awaited, in words. */
  update(done: number, total: number, text: string): void;
  /** Ends the bar (the line is cleared, so the result lines that follow stand alone). */
  end(): void;
}

/** Width of the bar in cells. */
const BAR_WIDTH = 20;

/**
 * Creates a progress reporter: a bar on `stream` (stderr) when it is a terminal, else
 * `plain(text)` for each change of text.
 */
export function createProgress(plain: (line: string) => void, stream: NodeJS.WriteStream = process.stderr): Progress {
  const bar = stream.isTTY === true && process.env.TERM !== "dumb";
  let last = "";
  let drawn = false;
  return {
    update(done, total, text) {
      if (!bar) {
        if (text !== last) plain(text);
        last = text;
        return;
      }
      const filled = total > 0 ? Math.round((Math.min(done, total) / total) * BAR_WIDTH) : 0;
      const line = `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${done}/${total} ${text}`;
      // A terminal that does not know its size (a pty under `script`, some CI runners) says 0.
      const width = stream.columns || 80;
      stream.write(`\r\x1b[2K${line.length >= width ? `${line.slice(0, width - 2)}…` : line}`);
      drawn = true;
    },
    end() {
      if (drawn) stream.write("\r\x1b[2K");
      drawn = false;
    },
  };
}
