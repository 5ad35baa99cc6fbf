#!/usr/bin/env node
import { Command } from "commander";
import { registerServe } from "./serve.js";
import { registerToken } from "./token.js";
import { registerPush } from "./push.js";
import { registerRemote } from "./remote.js";
import { registerPull } from "./pull.js";

/** `lxhub`: one command, both server and client. Each command group lives in its own file. */
const program = new Command();
program.name("lxhub").description("simplestreams image server and verifying client for LXD, Incus and LXC");
registerServe(program);
registerToken(program);
registerPush(program);
registerRemote(program);
registerPull(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`lxhub: ${msg}\n`);
  process.exit(1);
});
