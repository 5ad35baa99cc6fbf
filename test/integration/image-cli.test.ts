/**
 * The client commands of issue 11 against a real `lxhub serve` on loopback, with tiny images of
 * several products and architectures.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { lxhubCli } from "../support/server.js";

describe("lxhub client commands", () => {
  it("--version prints the package's version", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    const r = await lxhubCli(["--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });
});
