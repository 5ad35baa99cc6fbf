import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import type { Registry } from "../../../registry/registry.js";
import { openScratchRegistry, type ScratchRegistry } from "../../support/registry.js";
import { allows, MAX_TOKEN_TTL_SECONDS, parseDuration } from "../../../registry/tokens.js";
import { LxhubError } from "../../../registry/errors.js";

describe("token scopes", () => {
  it("admin allows everything; push/delete patterns match os/release/arch/variant", () => {
    assert.ok(allows(["admin"], "admin", "*"));
    assert.ok(allows(["push:debian/*"], "push", "debian/12/amd64/default"));
    assert.ok(!allows(["push:debian/*"], "push", "ubuntu/24.04/amd64/default"));
    assert.ok(!allows(["push:debian/*"], "delete", "debian/12/amd64/default"));
    assert.ok(allows(["delete:*/*/arm64/*"], "delete", "debian/12/arm64/default"));
    assert.ok(!allows(["push:*"], "admin", "*"));
    // a dot in a pattern is literal, not "any character"
    assert.ok(!allows(["push:debian/1.2/*"], "push", "debian/1x2/amd64/default"));
  });
  it("durations", () => {
    assert.equal(parseDuration("30m"), 1800);
    assert.equal(parseDuration("12h"), 43200);
    assert.equal(parseDuration("90d"), 90 * 86400);
    assert.equal(parseDuration("45"), 45);
    assert.throws(() => parseDuration("soon"), LxhubError);
    assert.throws(() => parseDuration("0s"), LxhubError);
  });
  it("a lifetime is at most 10 years, and numbers past 2^53 are refused, not rounded", () => {
    assert.equal(parseDuration("3650d"), MAX_TOKEN_TTL_SECONDS);
    for (const text of ["3651d", "99999999999d", "99999999999999999999", "522w"]) {
      assert.throws(
        () => parseDuration(text),
        (e: LxhubError) => e.code === "BAD_REQUEST",
        text,
      );
    }
  });
});

describe("registry services over a real data folder", () => {
  let scratch: ScratchRegistry;
  let reg: Registry;
  before(async () => {
    scratch = await openScratchRegistry();
    reg = scratch.reg;
  });
  after(() => scratch.close());

  it("unknown scopes are refused when creating a token", async () => {
    await assert.rejects(reg.tokens.create({ scopes: ["push"], ttlSeconds: 60 }), /unknown scope/);
    await assert.rejects(reg.tokens.create({ scopes: [], ttlSeconds: 60 }), /at least one scope/);
  });

  it("an abandoned upload session expires and its bytes are dropped", async () => {
    const u = await reg.uploads.open("test");
    await reg.uploads.append(u.id, 0, Readable.from([Buffer.from("partial")]));
    assert.equal((await reg.uploads.state(u.id)).offset, 7);
    assert.equal(await reg.uploads.sweep(new Date(Date.now() + 30_000)), 0, "not yet expired");
    assert.equal(await reg.uploads.sweep(new Date(Date.now() + 120_000)), 1);
    await assert.rejects(
      reg.uploads.state(u.id),
      (e: unknown) => e instanceof LxhubError && e.code === "UPLOAD_NOT_FOUND",
    );
    assert.equal(await reg.blobs.uploadState(u.id), null, "the bytes are gone too");
  });

  it("an upload past the size limit is refused and the session keeps its offset", async () => {
    const u = await reg.uploads.open("test");
    await assert.rejects(
      reg.uploads.append(u.id, 0, Readable.from([Buffer.alloc(2048)])),
      (e: unknown) => e instanceof LxhubError && e.code === "TOO_LARGE",
    );
    assert.equal((await reg.uploads.state(u.id)).offset, 0);
  });

  it("each rebuild signs a statement with a higher serial", async () => {
    const a = await reg.index.rebuild();
    const [b, c] = await Promise.all([reg.index.rebuild(), reg.index.rebuild()]);
    assert.ok(b!.serial > a.serial);
    assert.ok(c!.serial >= b!.serial);
    assert.equal(reg.index.generation()?.serial, c!.serial);
  });
});
