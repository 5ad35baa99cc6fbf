#!/usr/bin/env -S node --max-semi-space-size=2
// The flag caps V8's young generation at 2 MiB per semi-space (default 16): streaming allocates
// many short-lived objects, and the default let the server's RSS grow by ~30 MB under load.
import { readFileSync } from "node:fs";
import { Command } from "commander";

type Register = (program: Command) => void;

/**
 * Command groups, one file each, loaded on demand: `lxhub serve` does not load the client and
 * `lxhub pull` does not load the server (each costs memory and start-up time).
 */
const GROUPS: Record<string, () => Promise<Register>> = {
  serve: async () => (await import("./serve.js")).registerServe,
  token: async () => (await import("./token.js")).registerToken,
  key: async () => (await import("./key.js")).registerKey,
  push: async () => (await import("./push.js")).registerPush,
  remote: async () => (await import("./remote.js")).registerRemote,
  pull: async () => (await import("./pull.js")).registerPull,
  verify: async () => (await import("./pull.js")).registerPull,
  cache: async () => (await import("./cache.js")).registerCache,
  mirror: async () => (await import("./mirror.js")).registerMirror,
  prune: async () => (await import("./lifecycle.js")).registerLifecycle,
  gc: async () => (await import("./lifecycle.js")).registerLifecycle,
  image: async () => (await import("./image.js")).registerImage,
  completion: async () => (await import("./completion.js")).registerCompletion,
};

/** The package's version, read at run time: dist/cli/main.js → ../../package.json (also when installed). */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version?: unknown;
  };
  return typeof pkg.version === "string" ? pkg.version : "unknown";
}

const VERSION_FLAGS = new Set(["-V", "--version"]);

async function main(): Promise<void> {
  const program = new Command();
  program
    .name("lxhub")
    .description("simplestreams image server and verifying client for LXD, Incus and LXC")
    .version(packageVersion(), "-V, --version", "print the version of lxhub")
    // Root options only before the command: `lxhub push … --version V` is push's own flag.
    .enablePositionalOptions();
  const first = process.argv[2] ?? "";
  const wanted = GROUPS[first];
  // Help, an unknown command, no command or `completion`: register every group so commander can
  // list them (`--version` needs none).
  const all = [...new Set(Object.values(GROUPS))];
  const loaders = VERSION_FLAGS.has(first) ? [] : wanted && first !== "completion" ? [wanted] : all;
  const registered = new Set<Register>();
  for (const load of loaders) {
    const register = await load();
    if (!registered.has(register)) register(program);
    registered.add(register);
  }
  await program.parseAsync(process.argv);
}

main().catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`lxhub: ${msg}\n`);
  process.exit(1);
});
