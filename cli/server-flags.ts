import { readFileSync } from "node:fs";

/** The flags of the commands that write to a server's publish API (`push`, `image delete`). */
export interface ServerFlags {
  token?: string;
  ca?: string;
}

/** The token (`--token`, else `$LXHUB_TOKEN`) and pinned certificate; warns about plain HTTP. */
export function serverAccess(server: string, flags: ServerFlags): { token: string; ca?: Buffer } {
  const token = flags.token ?? process.env.LXHUB_TOKEN;
  if (!token) throw new Error("no token: pass --token or set LXHUB_TOKEN");
  if (/^http:/i.test(server)) {
    process.stderr.write(
      `lxhub: warning: ${server} is plain HTTP: the token is sent in clear, and anyone on the way ` +
        "can read it and publish with it; use the server's https:// address (--ca pins a self-signed " +
        "certificate). The server refuses it unless started with --allow-insecure-writes.\n",
    );
  }
  if (!flags.ca) return { token };
  try {
    return { token, ca: readFileSync(flags.ca) };
  } catch (err) {
    throw new Error(`cannot read --ca ${flags.ca}: ${(err as Error).message}`);
  }
}
