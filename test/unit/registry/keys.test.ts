import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { decodeProtectedHeader } from "jose";
import { ENDORSEMENTS_PATH, JWKS_PATH, STATEMENT_PATH, type Generation } from "../../../registry/indexer.js";
import type { Registry } from "../../../registry/registry.js";
import { openScratchRegistry, type ScratchRegistry } from "../../support/registry.js";
import { signEndorsement } from "../../../signing/endorsement.js";
import { Keyring } from "../../../signing/keyring.js";
import { dataPath } from "../../../storage/layout.js";

const DAY_MS = 86400_000;

function doc(gen: Generation | null, rel: string): string {
  const d = gen?.documents.get(rel);
  assert.ok(d, `the generation has ${rel}`);
  return d.body.toString("utf8");
}

const kidOf = (gen: Generation | null) => decodeProtectedHeader(doc(gen, STATEMENT_PATH).trim()).kid;

describe("a running registry follows rotations made by another process", () => {
  let scratch: ScratchRegistry;
  let reg: Registry;
  /** What `lxhub key rotate|retire` does on the same data folder, from another process. */
  let other: Keyring;

  before(async () => {
    scratch = await openScratchRegistry("lxhub-keys-");
    reg = scratch.reg;
    await reg.index.rebuild();
    other = await Keyring.open(dataPath(scratch.dir, { kind: "signingKeys" }));
  });
  after(() => scratch.close());

  it("re-signs at its next check with the rotated key, publishing the endorsement; then nothing is due", async () => {
    const oldKid = kidOf(reg.index.generation());
    assert.deepEqual(JSON.parse(doc(reg.index.generation(), ENDORSEMENTS_PATH)), { endorsements: [] });
    const newKid = await other.rotate((prev, next) =>
      signEndorsement(prev, next, { notAfter: new Date(Date.now() + DAY_MS), issuer: "test" }),
    );
    // What the server's minute check runs: due only because the keys changed.
    const gen = await reg.index.resignIfDue(Infinity);
    assert.ok(gen, "a changed key store makes a re-signature due");
    assert.equal(kidOf(gen), newKid);
    const { endorsements } = JSON.parse(doc(gen, ENDORSEMENTS_PATH)) as { endorsements: string[] };
    assert.equal(endorsements.length, 1);
    assert.equal(decodeProtectedHeader(endorsements[0] as string).kid, oldKid);
    assert.equal(await reg.index.resignIfDue(Infinity), null);

    const list = await reg.keys.list();
    assert.deepEqual(
      list.map((k) => [k.kid, k.state, k.endorsedBy?.kid, k.endorsedBy?.published]),
      [
        [oldKid, "previous", undefined, undefined],
        [newKid, "active", oldKid, true],
      ],
    );
  });

  it("a retirement elsewhere: the old key leaves the JWKS and its endorsement stops", async () => {
    const [old, active] = other.list();
    await other.retire(old!.kid);
    const gen = await reg.index.resignIfDue(DAY_MS);
    assert.ok(gen);
    assert.equal(kidOf(gen), active!.kid);
    const jwks = JSON.parse(doc(gen, JWKS_PATH)) as { keys: { kid: string }[] };
    assert.deepEqual(
      jwks.keys.map((k) => k.kid),
      [active!.kid],
    );
    assert.deepEqual(JSON.parse(doc(gen, ENDORSEMENTS_PATH)), { endorsements: [] });
    const [only] = await reg.keys.list();
    assert.deepEqual(only?.endorsedBy?.retired, true);
  });

  it("KeyService: rotate endorses with the registry's issuer; the active key cannot be retired", async () => {
    const before = reg.keyring.active().kid;
    const { previous, kid } = await reg.keys.rotate(3600);
    assert.equal(previous, before);
    assert.equal(reg.keyring.active().kid, kid);
    await assert.rejects(reg.keys.retire(kid), /active key/);
    const gen = await reg.index.resignIfDue(DAY_MS);
    assert.equal(kidOf(gen), kid);
  });
});
