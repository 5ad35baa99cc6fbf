import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { base64url, decodeJwt, type JWK, SignJWT } from "jose";
import {
  ENDORSEMENT_TYP,
  EndorsementError,
  type EndorsementRefusal,
  followEndorsements,
  signEndorsement,
  verifyEndorsement,
} from "../../../signing/endorsement.js";
import { endorsementClaims, Keyring } from "../../../signing/keyring.js";

const HOUR = 3600_000;

function refusedWith(code: EndorsementRefusal) {
  return (err: unknown) => {
    assert.ok(err instanceof EndorsementError, `expected an EndorsementError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

const trustedOf = (...keys: JWK[]) => new Map(keys.map((k) => [k.kid as string, k]));
const pub = (ring: Keyring, i = -1) => ring.jwks().keys.at(i === -1 ? 0 : i) as JWK;

describe("endorsements", () => {
  let root: string;
  let a: Keyring;
  let stranger: Keyring;
  let aJwk: JWK;
  let strangerJwk: JWK;
  const notAfter = () => new Date(Date.now() + HOUR);
  const endorse = (ring: Keyring, until = notAfter()) =>
    ring.rotate((old, next) => signEndorsement(old, next, { notAfter: until, issuer: "lxhub" }));

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "lxhub-endorsement-"));
    a = await Keyring.open(join(root, "a"));
    stranger = await Keyring.open(join(root, "stranger"));
    aJwk = pub(a);
    strangerJwk = pub(stranger);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("rotate stores the old key's endorsement with the new key; it verifies from the old key", async () => {
    const ring = await Keyring.open(join(root, "rot"));
    const oldKid = ring.active().kid;
    const oldJwk = pub(ring);
    const newKid = await endorse(ring);
    const file = JSON.parse(await readFile(join(root, "rot", `${newKid}.jwk`), "utf8")) as Record<
      string,
      unknown
    >;
    const jws = file.lxhub_endorsement as string;
    assert.deepEqual(ring.endorsements(), [jws]);
    const claims = endorsementClaims(jws);
    assert.equal(claims?.by, oldKid);
    assert.equal(claims?.kid, newKid);
    const v = await verifyEndorsement(jws, trustedOf(oldJwk));
    assert.equal(v.by, oldKid);
    assert.equal(v.jwk.kid, newKid);
    assert.deepEqual(v.jwk, ring.jwks().keys[0]);
    // Reopened from the folder, the endorsement is still there.
    assert.deepEqual((await Keyring.open(join(root, "rot"))).endorsements(), [jws]);
    // Retired endorser: no longer published.
    await ring.retire(oldKid);
    assert.deepEqual(ring.endorsements(), []);
  });

  it("is not published after its overlap, and refused then", async () => {
    const ring = await Keyring.open(join(root, "short"));
    const oldJwk = pub(ring);
    await endorse(ring, new Date(Date.now() + 2000));
    const [jws] = ring.endorsements();
    assert.ok(jws);
    const later = new Date(Date.now() + HOUR);
    assert.deepEqual(ring.endorsements(later), []);
    await assert.rejects(verifyEndorsement(jws, trustedOf(oldJwk), { now: later }), refusedWith("EXPIRED"));
    // A client walking from the old key is told why it did not count.
    const told: string[] = [];
    const reached = await followEndorsements([oldJwk], [jws], {
      now: later,
      onRefused: (by, err) => told.push(`${by} ${err.code}`),
    });
    assert.equal(reached.size, 0);
    assert.deepEqual(told, [`${oldJwk.kid} EXPIRED`]);
    // An endorsement by a key nobody trusts is not worth mentioning.
    const quiet: string[] = [];
    await followEndorsements([strangerJwk], [jws], { onRefused: (by) => quiet.push(by) });
    assert.deepEqual(quiet, []);
    const earlier = new Date(Date.now() - HOUR);
    await assert.rejects(
      verifyEndorsement(jws, trustedOf(oldJwk), { now: earlier }),
      refusedWith("NOT_YET_VALID"),
    );
  });

  it("refuses an endorsement by a key that is not trusted", async () => {
    const jws = await signEndorsement(stranger.active(), a.active(), {
      notAfter: notAfter(),
      issuer: "lxhub",
    });
    await assert.rejects(verifyEndorsement(jws, trustedOf(aJwk)), refusedWith("UNTRUSTED_SIGNER"));
  });

  it("refuses a forged endorsement: the trusted kid in the header, another key's signature", async () => {
    const jws = await new SignJWT({ jwk: { kty: "OKP", crv: "Ed25519", x: strangerJwk.x } })
      .setProtectedHeader({ alg: "EdDSA", kid: aJwk.kid as string, typ: ENDORSEMENT_TYP })
      .setIssuer("lxhub")
      .setSubject(strangerJwk.kid as string)
      .setIssuedAt()
      .setNotBefore("0s")
      .setExpirationTime("1h")
      .sign(stranger.active().privateKey);
    await assert.rejects(verifyEndorsement(jws, trustedOf(aJwk)), refusedWith("BAD_SIGNATURE"));
  });

  it("refuses a payload swapped under a genuine signature (another key put in)", async () => {
    const genuine = await signEndorsement(a.active(), a.active(), { notAfter: notAfter(), issuer: "lxhub" });
    assert.equal((await verifyEndorsement(genuine, trustedOf(aJwk))).jwk.kid, aJwk.kid);
    const [h, , s] = genuine.split(".");
    const claims = decodeJwt(genuine);
    const swapped = {
      ...claims,
      sub: strangerJwk.kid,
      jwk: { kty: "OKP", crv: "Ed25519", x: strangerJwk.x },
    };
    const tampered = `${h}.${base64url.encode(JSON.stringify(swapped))}.${s}`;
    await assert.rejects(verifyEndorsement(tampered, trustedOf(aJwk)), refusedWith("BAD_SIGNATURE"));
  });

  it("refuses a sub that is not the endorsed key's thumbprint", async () => {
    const jws = await signEndorsement(
      a.active(),
      { kid: aJwk.kid as string, publicJwk: strangerJwk },
      { notAfter: notAfter(), issuer: "lxhub" },
    );
    await assert.rejects(verifyEndorsement(jws, trustedOf(aJwk)), refusedWith("WRONG_KID"));
  });

  it("follows a chain A → B → C from a pinned A, given in any order; never from an unpinned key", async () => {
    const ring = await Keyring.open(join(root, "chain"));
    const kidA = ring.active().kid;
    const pinnedA = pub(ring);
    const kidB = await endorse(ring);
    const kidC = await endorse(ring);
    const published = ring.endorsements();
    assert.equal(published.length, 2);

    const reached = await followEndorsements([pinnedA], [...published].reverse());
    assert.deepEqual([...reached.keys()].sort(), [kidB, kidC].sort());
    assert.deepEqual(reached.get(kidC)?.chain, [kidA, kidB, kidC]);
    assert.equal(reached.get(kidC)?.issuer, "lxhub");

    // Pinned only someone else: nothing is reached.
    assert.equal((await followEndorsements([strangerJwk], published)).size, 0);
    // A broken link (B's endorsement missing) stops the chain at A.
    const onlyC = published.filter((e) => endorsementClaims(e)?.kid === kidC);
    assert.equal((await followEndorsements([pinnedA], onlyC)).size, 0);
    // The stranger endorsing C does not make it reachable from A.
    const byStranger = await signEndorsement(
      stranger.active(),
      { kid: kidC, publicJwk: pub(ring) },
      {
        notAfter: notAfter(),
        issuer: "lxhub",
      },
    );
    assert.equal((await followEndorsements([pinnedA], [byStranger])).size, 0);
  });

  it("reload picks up a rotation and a retirement made by another process", async () => {
    const dir = join(root, "shared");
    const server = await Keyring.open(dir);
    const cli = await Keyring.open(dir);
    const oldKid = server.active().kid;
    const newKid = await endorse(cli);
    await server.reload();
    assert.equal(server.active().kid, newKid);
    assert.equal(server.endorsements().length, 1);
    await cli.retire(oldKid);
    await server.reload();
    assert.deepEqual(
      server.list().map((k) => k.kid),
      [newKid],
    );
    assert.deepEqual(server.endorsements(), []);
  });
});
