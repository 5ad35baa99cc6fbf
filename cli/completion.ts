import type { Command } from "commander";

/**
 * `lxhub completion bash`: a bash completion script made from the registered commands, so it
 * follows every command, subcommand and flag as they are declared. REMOTE arguments (the first
 * argument of a command whose first argument is `<remote>`) complete to the names
 * `lxhub remote list --json` prints; other arguments and flag values fall back to file names.
 */
export function registerCompletion(program: Command): void {
  program
    .command("completion")
    .description("print a shell completion script: source <(lxhub completion bash)")
    .argument("<shell>", "bash")
    .action((shell: string) => {
      if (shell !== "bash") throw new Error(`only bash completion is available, not ${shell}`);
      process.stdout.write(bashScript(program));
    });
}

interface CommandPath {
  path: string;
  cmd: Command;
}

function walk(cmd: Command, prefix: string): CommandPath[] {
  return cmd.commands.flatMap((c) => {
    const path = prefix ? `${prefix} ${c.name()}` : c.name();
    return [{ path, cmd: c }, ...walk(c, path)];
  });
}

/** One `case` over the command paths: `"image list") echo "…";;`. */
function caseOf(fn: string, entries: [string, string[]][]): string {
  const arms = entries
    .filter(([, words]) => words.length > 0)
    .map(([path, words]) => `    "${path}") echo "${words.join(" ")}" ;;`);
  return [`${fn}() {`, '  case "$1" in', ...arms, "  esac", "}"].join("\n");
}

function bashScript(program: Command): string {
  const paths: CommandPath[] = [{ path: "", cmd: program }, ...walk(program, "")];
  const subcommands = caseOf(
    "_lxhub_subcommands",
    paths.map(({ path, cmd }) => [path, cmd.commands.map((c) => c.name())]),
  );
  const options = caseOf(
    "_lxhub_options",
    paths.map(({ path, cmd }) => [path, [...cmd.options.map((o) => o.long ?? o.short ?? ""), "--help"]]),
  );
  const valued = caseOf(
    "_lxhub_valued",
    paths.map(({ path, cmd }) => [
      path,
      cmd.options
        .filter((o) => o.required || o.optional)
        .flatMap((o) => [o.long, o.short].filter((n) => n !== undefined)),
    ]),
  );
  const remoteFirst = paths
    .filter(({ cmd }) => cmd.registeredArguments[0]?.name() === "remote")
    .map(({ path }) => `"${path}"`);
  return `# bash completion for lxhub; load with: source <(lxhub completion bash)
${subcommands}
${options}
${valued}
_lxhub_remote_first() {
  case "$1" in
    ${remoteFirst.join("|")}) return 0 ;;
  esac
  return 1
}
_lxhub() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" word i skip=0 args=0
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    if ((skip)); then skip=0; continue; fi
    case "$word" in
      --*=*) ;;
      -*) [[ " $(_lxhub_valued "$path") " == *" $word "* ]] && skip=1 ;;
      *)
        if ((args == 0)) && [[ " $(_lxhub_subcommands "$path") " == *" $word "* ]]; then
          path="\${path:+$path }$word"
        else
          args=$((args + 1))
        fi
        ;;
    esac
  done
  ((skip)) && return 0
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_lxhub_options "$path")" -- "$cur"))
    return 0
  fi
  local words
  words="$(_lxhub_subcommands "$path")"
  if ((args == 0)) && [[ -n "$words" ]]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  elif ((args == 0)) && _lxhub_remote_first "$path"; then
    words="$("\${COMP_WORDS[0]}" remote list --json 2>/dev/null | sed -n 's/^ *"name": "\\(.*\\)",$/\\1/p')"
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
  return 0
}
complete -o default -F _lxhub lxhub
`;
}
