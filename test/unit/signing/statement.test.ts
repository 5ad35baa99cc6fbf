import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { base64url, decodeJwt, decodeProtectedHeader, type JWK, SignJWT } from "jose";
import { Keyring } from "../../../signing/keyring.js";
import {
  checkDocument,
  signStatement,
  STATEMENT_TYP,
  StatementError,
  type StatementErrorCode,
  verifyStatement,
} from "../../../signing/statement.js";

const INDEX = Buffer.from('{"format":"index:1.0","index":{}}\n');
const IMAGES = Buffer.from('{"format":"products:1.0","products":{}}\n');
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const DOCUMENTS = [
  { path: "streams/v1/index.json", sha256: sha256(INDEX), size: INDEX.length },
  { path: "streams/v1/images.json", sha256: sha256(IMAGES), size: IMAGES.length },
];

function refusedWith(code: StatementErrorCode) {
  return (err: unknown) => {
    assert.ok(err instanceof StatementError, `expected a StatementError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** Re-encodes a token's payload and keeps the original signature: what a tampering proxy does. */
function withPayload(jws: string, edit: (claims: Record<string, unknown>) => void): string {
  const [header, , signature] = jws.split(".");
  const claims = decodeJwt(jws) as Record<string, unknown>;
  edit(claims);
  return `${header}.${base64url.encode(JSON.stringify(claims))}.${signature}`;
}

describe("signed statement", () => {
  let root: string;
  let ring: Keyring;
  let other: Keyring;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "lxhub-statement-"));
    ring = await Keyring.open(join(root, "keys"));
    other = await Keyring.open(join(root, "other"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("round-trips: the verified statement gives back every document, the serial and the times", async () => {
    const issuedAt = new Date();
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 7, issuedAt, ttlSeconds: 3600 });
    const header = decodeProtectedHeader(jws);
    assert.deepEqual(header, { alg: "EdDSA", kid: ring.active().kid, typ: STATEMENT_TYP });

    const s = await verifyStatement(jws, { keys: ring.jwks(), minSerial: 7 });
    assert.equal(s.kid, ring.active().kid);
    assert.equal(s.serial, 7);
    assert.equal(s.issuer, "lxhub");
    assert.equal(s.issuedAt.getTime(), Math.floor(issuedAt.getTime() / 1000) * 1000);
    assert.equal(s.expiresAt.getTime() - s.issuedAt.getTime(), 3600_000);
    assert.deepEqual(
      [...s.documents],
      DOCUMENTS.map((d) => [d.path, { sha256: d.sha256, size: d.size }]),
    );
    assert.deepEqual(checkDocument(s, "streams/v1/index.json", INDEX), {
      sha256: sha256(INDEX),
      size: INDEX.length,
    });
    checkDocument(s, "streams/v1/images.json", { sha256: sha256(IMAGES), size: IMAGES.length });
  });

  it("verifies with one pinned public key, with or without its kid", async () => {
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 1, ttlSeconds: 60 });
    const pinned = ring.jwks().keys[0] as JWK;
    assert.equal((await verifyStatement(jws, { keys: pinned })).serial, 1);
    const { kid: _kid, ...withoutKid } = pinned;
    assert.equal((await verifyStatement(jws, { keys: withoutKid })).serial, 1);
  });

  it("refuses a statement whose claims were changed after signing", async () => {
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 3, ttlSeconds: 600 });
    const forged = withPayload(jws, (c) => {
      (c.documents as Record<string, { sha256: string }>)["streams/v1/images.json"]!.sha256 = "0".repeat(64);
    });
    await assert.rejects(verifyStatement(forged, { keys: ring.jwks() }), refusedWith("BAD_SIGNATURE"));
    const higherSerial = withPayload(jws, (c) => {
      c.serial = 4;
    });
    await assert.rejects(verifyStatement(higherSerial, { keys: ring.jwks() }), refusedWith("BAD_SIGNATURE"));
  });

  it("refuses a statement with any single payload byte changed", async () => {
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 3, ttlSeconds: 600 });
    const [header, payload = "", signature] = jws.split(".");
    const bytes = Buffer.from(base64url.decode(payload));
    for (const at of [0, Math.floor(bytes.length / 2), bytes.length - 2]) {
      const changed = Buffer.from(bytes);
      changed[at] = changed[at]! ^ 0x01;
      const tampered = `${header}.${base64url.encode(changed)}.${signature}`;
      await assert.rejects(verifyStatement(tampered, { keys: ring.jwks() }), refusedWith("BAD_SIGNATURE"));
    }
  });

  it("refuses an expired statement, allowing the configured clock skew", async () => {
    const issuedAt = new Date(Date.now() - 2 * 3600_000);
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 1, issuedAt, ttlSeconds: 3600 });
    await assert.rejects(verifyStatement(jws, { keys: ring.jwks() }), refusedWith("EXPIRED"));

    const expiry = issuedAt.getTime() + 3600_000;
    const justAfter = new Date(expiry + 30_000);
    assert.equal((await verifyStatement(jws, { keys: ring.jwks(), now: justAfter })).serial, 1);
    await assert.rejects(
      verifyStatement(jws, { keys: ring.jwks(), now: justAfter, clockToleranceSeconds: 0 }),
      refusedWith("EXPIRED"),
    );
    const before = new Date(expiry - 1000);
    assert.equal(
      (await verifyStatement(jws, { keys: ring.jwks(), now: before, clockToleranceSeconds: 0 })).serial,
      1,
    );
  });

  it("refuses a replayed statement (serial below the newest seen) and accepts an equal one", async () => {
    const jws = await signStatement(ring, { documents: DOCUMENTS, serial: 41, ttlSeconds: 600 });
    await assert.rejects(verifyStatement(jws, { keys: ring.jwks(), minSerial: 42 }), refusedWith("REPLAYED"));
    assert.equal((await verifyStatement(jws, { keys: ring.jwks(), minSerial: 41 })).serial, 41);
  });

  it("refuses a statement signed by a key that is not trusted", async () => {
    const jws = await signStatement(other, { documents: DOCUMENTS, serial: 1, ttlSeconds: 600 });
    await assert.rejects(verifyStatement(jws, { keys: ring.jwks() }), refusedWith("UNKNOWN_KEY"));
    const pinnedTrusted = ring.jwks().keys[0] as JWK;
    await assert.rejects(verifyStatement(jws, { keys: pinnedTrusted }), refusedWith("UNKNOWN_KEY"));
  });

  it("refuses a trusted kid bound to a different key (a JWKS entry with a borrowed kid)", async () => {
    const jws = await signStatement(other, { documents: DOCUMENTS, serial: 1, ttlSeconds: 600 });
    const impostor = { ...(ring.jwks().keys[0] as JWK), kid: other.active().kid };
    await assert.rejects(verifyStatement(jws, { keys: { keys: [impostor] } }), refusedWith("BAD_SIGNATURE"));
  });

  it("keeps verifying statements of the old key after rotation; new statements name the new key", async () => {
    const dir = join(root, "rotating");
    const rotating = await Keyring.open(dir);
    const oldKid = rotating.active().kid;
    const before = await signStatement(rotating, { documents: DOCUMENTS, serial: 1, ttlSeconds: 600 });
    const newKid = await rotating.rotate();
    const after = await signStatement(rotating, { documents: DOCUMENTS, serial: 2, ttlSeconds: 600 });

    assert.equal(decodeProtectedHeader(before).kid, oldKid);
    assert.equal(decodeProtectedHeader(after).kid, newKid);
    const jwks = rotating.jwks();
    assert.equal((await verifyStatement(before, { keys: jwks })).kid, oldKid);
    assert.equal((await verifyStatement(after, { keys: jwks })).kid, newKid);
    // A client that pinned the old key does not accept the new key's statements by itself.
    const oldPinned = jwks.keys.find((k) => k.kid === oldKid) as JWK;
    await assert.rejects(verifyStatement(after, { keys: oldPinned }), refusedWith("UNKNOWN_KEY"));
  });

  it("refuses alg none and an HS256 token keyed with the public key, both carrying the trusted kid", async () => {
    const genuine = await signStatement(ring, { documents: DOCUMENTS, serial: 9, ttlSeconds: 600 });
    const claims = decodeJwt(genuine);
    const kid = ring.active().kid;
    const enc = (o: object) => base64url.encode(JSON.stringify(o));

    const none = `${enc({ alg: "none", kid, typ: STATEMENT_TYP })}.${enc(claims)}.`;
    await assert.rejects(verifyStatement(none, { keys: ring.jwks() }), refusedWith("BAD_SIGNATURE"));

    const publicX = base64url.decode(ring.active().publicJwk.x as string);
    const hs256 = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid, typ: STATEMENT_TYP })
      .sign(publicX);
    await assert.rejects(verifyStatement(hs256, { keys: ring.jwks() }), refusedWith("BAD_SIGNATURE"));
    // The same HMAC, trying the pinned-key path.
    await assert.rejects(
      verifyStatement(hs256, { keys: ring.jwks().keys[0] as JWK }),
      refusedWith("BAD_SIGNATURE"),
    );
  });

  it("refuses a token of another type even when the trusted key signed it", async () => {
    const key = ring.active();
    const jwt = await new SignJWT({ serial: 1, documents: {} })
      .setProtectedHeader({ alg: "EdDSA", kid: key.kid, typ: "JWT" })
      .setIssuedAt()
      .setIssuer("lxhub")
      .setExpirationTime("10m")
      .sign(key.privateKey);
    await assert.rejects(verifyStatement(jwt, { keys: ring.jwks() }), refusedWith("MALFORMED"));
  });

  it("refuses validly signed claims of the wrong types", async () => {
    const key = ring.active();
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT({
        serial: 1,
        documents: { "streams/v1/index.json": { sha256: "a".repeat(64), size: 1 } },
        ...claims,
      })
        .setProtectedHeader({ alg: "EdDSA", kid: key.kid, typ: STATEMENT_TYP })
        .setIssuedAt()
        .setIssuer("lxhub")
        .setExpirationTime("10m")
        .sign(key.privateKey);
    const cases: Record<string, Record<string, unknown>> = {
      "upper-case sha256": { documents: { "a.json": { sha256: "A".repeat(64), size: 1 } } },
      "short sha256": { documents: { "a.json": { sha256: "a".repeat(63), size: 1 } } },
      "fractional size": { documents: { "a.json": { sha256: "a".repeat(64), size: 1.5 } } },
      "string size": { documents: { "a.json": { sha256: "a".repeat(64), size: "1" } } },
      "escaping path": { documents: { "../a.json": { sha256: "a".repeat(64), size: 1 } } },
      "documents as a list": { documents: [] },
      "string serial": { serial: "1" },
      "negative serial": { serial: -1 },
      "missing serial": { serial: undefined },
    };
    for (const [name, claims] of Object.entries(cases)) {
      const jws = await sign(claims);
      await assert.rejects(verifyStatement(jws, { keys: ring.jwks() }), refusedWith("MALFORMED"), name);
    }
  });

  it("refuses things that are not a compact JWS", async () => {
    for (const bad of ["", "abc", "a.b", "a.b.c.d.e", "!!.!!.!!"]) {
      await assert.rejects(verifyStatement(bad, { keys: ring.jwks() }), refusedWith("MALFORMED"), bad);
    }
  });

  it("checks the issuer when one is required", async () => {
    const jws = await signStatement(ring, {
      documents: DOCUMENTS,
      serial: 1,
      ttlSeconds: 60,
      issuer: "hub.example",
    });
    assert.equal(
      (await verifyStatement(jws, { keys: ring.jwks(), issuer: "hub.example" })).issuer,
      "hub.example",
    );
    await assert.rejects(
      verifyStatement(jws, { keys: ring.jwks(), issuer: "lxhub" }),
      refusedWith("WRONG_ISSUER"),
    );
  });

  it("checkDocument names the path of a document that differs or is not listed", async () => {
    const s = await verifyStatement(
      await signStatement(ring, { documents: DOCUMENTS, serial: 1, ttlSeconds: 60 }),
      {
        keys: ring.jwks(),
      },
    );
    const changed = Buffer.from(IMAGES);
    changed[0] = 0x5b;
    const mismatch = (path: string) => (err: unknown) => {
      refusedWith("DOCUMENT_MISMATCH")(err);
      assert.match((err as Error).message, new RegExp(path.replace(/[.]/g, "\\.")));
      return true;
    };
    assert.throws(
      () => checkDocument(s, "streams/v1/images.json", changed),
      mismatch("streams/v1/images.json"),
    );
    assert.throws(
      () => checkDocument(s, "streams/v1/images.json", Buffer.concat([IMAGES, Buffer.from(" ")])),
      mismatch("streams/v1/images.json"),
    );
    assert.throws(
      () => checkDocument(s, "streams/v1/index.json", { sha256: sha256(IMAGES), size: INDEX.length }),
      mismatch("streams/v1/index.json"),
    );
    assert.throws(() => checkDocument(s, "streams/v1/other.json", INDEX), mismatch("streams/v1/other.json"));
    assert.throws(() => checkDocument(s, "constructor", INDEX), mismatch("constructor"));
  });

  it("refuses to sign ill-formed documents or serials", async () => {
    const doc = DOCUMENTS[0]!;
    const sign = (over: Partial<typeof doc>, serial = 1) =>
      signStatement(ring, { documents: [{ ...doc, ...over }], serial, ttlSeconds: 60 });
    await assert.rejects(sign({ sha256: doc.sha256.toUpperCase() }), TypeError);
    await assert.rejects(sign({ size: -1 }), TypeError);
    await assert.rejects(sign({ path: "/streams/v1/index.json" }), TypeError);
    await assert.rejects(sign({ path: "streams/../secret" }), TypeError);
    await assert.rejects(sign({}, 1.5), TypeError);
    await assert.rejects(signStatement(ring, { documents: [doc, doc], serial: 1, ttlSeconds: 60 }), /twice/);
  });
});
