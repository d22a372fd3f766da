/**
 * Shell completion, as `kubectl completion` does it: `k4s completion bash|zsh|fish` prints a
 * script that asks `k4s __complete WORDS...` for the candidates of the word being typed, so
 * commands, flags, kinds and the names of objects on the server complete alike in every shell.
 */
import { Command, type Option } from "commander";
import { KINDS, kindInfo, parseKind, type Kind } from "../api/kinds.js";
import { CliError } from "./errors.js";

/** What a positional argument of a command completes to. */
type Slot =
  | { kind: "words"; words: readonly string[] }
  /** A kind; the names after it complete to objects of that kind. */
  | { kind: "kind" }
  /** Names of objects of the kind given before (or of a fixed kind); `many` repeats it. */
  | { kind: "names"; of?: Kind; many?: boolean }
  /** container/NAME and service/NAME of the server's objects. */
  | { kind: "target" };

const KIND_WORDS = [...KINDS.map((k) => kindInfo(k).plural), "all"];

/** The positional arguments each command completes, in order; a command not listed completes none. */
const POSITIONALS: Record<string, readonly Slot[]> = {
  get: [{ kind: "kind" }, { kind: "names", many: true }],
  describe: [{ kind: "kind" }, { kind: "names" }],
  edit: [{ kind: "kind" }, { kind: "names" }],
  explain: [{ kind: "words", words: KINDS.map((k) => kindInfo(k).plural) }],
  rollout: [{ kind: "words", words: ["restart", "status"] }, { kind: "words", words: ["replicasets"] }, { kind: "names", of: "ReplicaSet" }],
  delete: [{ kind: "kind" }, { kind: "names", many: true }],
  label: [{ kind: "kind" }, { kind: "names", many: true }],
  annotate: [{ kind: "kind" }, { kind: "names", many: true }],
  scale: [{ kind: "words", words: ["replicasets"] }, { kind: "names", of: "ReplicaSet" }],
  logs: [{ kind: "names", of: "Container" }],
  send: [{ kind: "target" }],
  request: [{ kind: "target" }],
  completion: [{ kind: "words", words: ["bash", "zsh", "fish"] }],
};

/** Values of options that take one from a short list. */
const OPTION_VALUES: Record<string, readonly string[]> = {
  "--output": ["json", "yaml", "wide", "name"],
  "--color": ["auto", "always", "never"],
};

const SCRIPTS: Record<string, string> = {
  bash: `# k4s completion for bash: source <(k4s completion bash), or save it in
# /etc/bash_completion.d/k4s (or ~/.local/share/bash-completion/completions/k4s).
_k4s() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  local IFS=$'\\n'
  COMPREPLY=( $(compgen -W "$(k4s __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "$cur") )
}
complete -o default -F _k4s k4s
`,
  zsh: `#compdef k4s
# k4s completion for zsh: source <(k4s completion zsh), or save it as _k4s in a folder of $fpath.
_k4s() {
  local -a candidates
  candidates=("\${(@f)$(k4s __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  candidates=(\${candidates:#})
  if (( \${#candidates} )); then
    compadd -- "\${candidates[@]}"
  else
    _files
  fi
}
if (( $+functions[compdef] )); then compdef _k4s k4s; fi
`,
  fish: `# k4s completion for fish: k4s completion fish | source, or save it in
# ~/.config/fish/completions/k4s.fish.
function __k4s_complete
  set -l candidates (k4s __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)
  if test (count $candidates) -eq 0
    __fish_complete_path (commandline -ct)
  else
    printf '%s\\n' $candidates
  end
end
complete -c k4s -f -a '(__k4s_complete)'
`,
};

/** Creates the completion command. */
export function completionCommand(): Command {
  return new Command("completion")
    .description("print a shell completion script: source <(k4s completion bash), zsh likewise, k4s completion fish | source")
    .argument("<shell>", "bash, zsh or fish")
    .action((shell: string) => {
      const script = SCRIPTS[shell];
      if (!script) throw new CliError(`no completion for "${shell}": use bash, zsh or fish`);
      process.stdout.write(script);
    });
}

/** Flags an option answers to. */
function flagsOf(o: Option): string[] {
  return [o.long, o.short].filter((f): f is string => Boolean(f));
}

/** Whether an option takes a value (so the next word is its value, not an argument). */
function takesValue(o: Option): boolean {
  return o.required || o.optional;
}

/**
 * The candidates for the last of `words` (what follows `k4s` on the command line, the last one
 * being the word under the cursor, possibly empty), one per line, for `k4s __complete`. Names
 * of objects come from the server the words (or the environment) name; when it cannot be
 * reached there are none.
 */
export async function complete(program: Command, words: readonly string[]): Promise<string[]> {
  const current = words.at(-1) ?? "";
  const before = words.slice(0, -1);
  const globals = program.options;
  const globalValue = (flag: string) => globals.find((o) => flagsOf(o).includes(flag) && takesValue(o));

  // Find the command and the positional words typed after it, skipping option values.
  let command: Command | undefined;
  const positionals: string[] = [];
  const server: { server?: string; token?: string } = {};
  for (let i = 0; i < before.length; i++) {
    const w = before[i]!;
    if (w.startsWith("-")) {
      const flag = w.split("=")[0]!;
      const option = command?.options.find((o) => flagsOf(o).includes(flag)) ?? globalValue(flag);
      if (option && takesValue(option) && !w.includes("=")) {
        const value = before[++i];
        if (option.long === "--server" && value) server.server = value;
        if (option.long === "--token" && value) server.token = value;
      }
      continue;
    }
    if (!command) {
      command = program.commands.find((c) => c.name() === w || c.aliases().includes(w));
      if (!command) return [];
    } else {
      positionals.push(w);
    }
  }
  const previous = before.at(-1);
  const previousOption = previous?.startsWith("-") ? (command?.options.find((o) => flagsOf(o).includes(previous)) ?? globalValue(previous)) : undefined;
  if (previousOption && takesValue(previousOption)) return [...(OPTION_VALUES[previousOption.long ?? ""] ?? [])];
  if (!command) {
    if (current.startsWith("-")) return globals.flatMap((o) => (o.hidden ? [] : flagsOf(o)));
    return program.commands.map((c) => c.name());
  }
  if (current.startsWith("-")) return [...[...command.options, ...globals].filter((o) => !o.hidden).flatMap((o) => (o.long ? [o.long] : flagsOf(o))), "--help"];

  const slots = POSITIONALS[command.name()] ?? [];
  const slot = slots[Math.min(positionals.length, slots.length - 1)];
  if (!slot || (positionals.length >= slots.length && !(slot.kind === "names" && slot.many))) return [];
  switch (slot.kind) {
    case "words":
      return [...slot.words];
    case "kind":
      return current.includes("/") ? objectRefs(server, current.slice(0, current.indexOf("/"))) : KIND_WORDS;
    case "names": {
      const kindWord = slot.of ?? positionals[0];
      if (kindWord === undefined || kindWord.includes("/")) return kindWord?.includes("/") ? objectRefs(server, kindWord.slice(0, kindWord.indexOf("/"))) : [];
      return names(server, kindWord);
    }
    case "target":
      return [...(await objectRefs(server, "container")), ...(await objectRefs(server, "service"))];
  }
}

/** Names of the objects of a kind (or of every kind for "all"); none when the server cannot say. */
async function names(server: { server?: string; token?: string }, kindWord: string): Promise<string[]> {
  let kinds: Kind[];
  try {
    kinds = kindWord === "all" ? [...KINDS] : kindWord.split(",").map(parseKind);
  } catch {
    return [];
  }
  const { createClient } = await import("../client/client.js");
  const { normalizeAddress } = await import("../api/address.js");
  let client;
  try {
    client = createClient({ ...(server.server ? { address: normalizeAddress(server.server) } : {}), ...(server.token ? { token: server.token } : {}) });
  } catch {
    return [];
  }
  try {
    const signal = AbortSignal.timeout(2000);
    const lists = await Promise.all(kinds.map((k) => Promise.race([client.list(k), aborted(signal)])));
    return lists.flatMap((l) => l.items.map((o) => o.metadata?.name ?? "")).filter(Boolean);
  } catch {
    return [];
  } finally {
    await client.close();
  }
}

function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
}

/** KIND/NAME words of a kind's objects, spelled with the kind word typed. */
async function objectRefs(server: { server?: string; token?: string }, kindWord: string): Promise<string[]> {
  return (await names(server, kindWord)).map((n) => `${kindWord}/${n}`);
}
