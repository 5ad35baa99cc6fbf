import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { SignJWT } from "jose";
import { API_ROUTES } from "../../server/api.js";
import type { AuthRule } from "../../server/routes/route.js";
import { startServer, createToken, type RunningServer } from "../support/server.js";
import { buildBusyboxImage } from "../support/image-fixture.js";
import { api, digestOf, errorCode, uploadFile, versionPath, type ApiResponse } from "../support/api.js";
import { issueToken } from "../support/tokens.js";

/**
 * Every write route (from the route table) × every kind of token gets exactly the expected
 * answer, a refused request changes nothing, and no token ever reaches the server's logs.
 */
const KINDS = [
  "none",
  "malformed",
  "forged",
  "expired",
  "revoked",
  "other product",
  "right scope",
  "admin",
] as const;
type Kind = (typeof KINDS)[number];

const product = { os: "busybox", release: "1.36", arch: "amd64", variant: "default" };
const VERSION = "20240101_0000";

/** What a kind of token gets on a route with this rule: a status, or "allowed" (2xx or a domain 4xx). */
function expected(rule: AuthRule, kind: Kind): number | "allowed" {
  if (["none", "malformed", "forged", "expired", "revoked"].includes(kind)) return 401;
  if (kind === "admin") return "allowed";
  if (kind === "other product") return rule === "push-any" ? "allowed" : 403;
  return rule === "admin" ? 403 : "allowed";
}

/** Codes that mean "not allowed" rather than a domain answer. */
const REFUSALS = ["UNAUTHORIZED", "FORBIDDEN", "ALIAS_FORBIDDEN", "INSECURE_TRANSPORT"];

interface Request {
  method: string;
  path: string;
  body?: Buffer | string;
  headers?: Record<string, string>;
}

describe("auth matrix: every write route × every kind of token", () => {
  let s: RunningServer;
  let work: string;
  let admin: string;
  const tokens = {} as Record<Kind, string | undefined>;
  let files: { name: string; ftype: string; digest: string }[] = [];

  /** The token that opened an upload session: the right-scope one, so others are not its owner. */
  const session = async (): Promise<string> => {
    const r = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: tokens["right scope"] });
    assert.equal(r.status, 201, r.text);
    return String(r.json?.location);
  };
  const chunk = Buffer.from("abcd");

  /** A valid request per write route (by operationId), prepared afresh for each case. */
  const REQUESTS: Record<string, () => Promise<Request>> = {
    openUpload: async () => ({ method: "POST", path: "/api/v1/uploads" }),
    getUpload: async () => ({ method: "GET", path: await session() }),
    appendUpload: async () => ({
      method: "PATCH",
      path: await session(),
      body: chunk,
      headers: { "content-range": `bytes 0-${chunk.length - 1}/${chunk.length}` },
    }),
    commitUpload: async () => ({
      method: "PUT",
      path: `${await session()}?digest=${digestOf(Buffer.alloc(0))}`,
    }),
    cancelUpload: async () => ({ method: "DELETE", path: await session() }),
    putVersion: async () => ({
      method: "PUT",
      path: versionPath(product, VERSION),
      body: JSON.stringify({ files, aliases: ["busybox/1.36"] }),
    }),
    deleteVersion: async () => ({ method: "DELETE", path: versionPath(product, VERSION) }),
    createToken: async () => ({
      method: "POST",
      path: "/api/v1/tokens",
      body: JSON.stringify({ scopes: ["push:busybox/*"], ttl: "1h" }),
    }),
    prune: async () => ({
      method: "POST",
      path: "/api/v1/prune",
      body: JSON.stringify({ dry_run: true, policies: [{ product: "*", keep: 1 }] }),
    }),
    collectGarbage: async () => ({
      method: "POST",
      path: "/api/v1/gc",
      body: JSON.stringify({ dry_run: true }),
    }),
    revokeToken: async () => {
      const t = await api(s.httpUrl, "POST", "/api/v1/tokens", {
        token: admin,
        body: JSON.stringify({ scopes: ["push:nothing/*"], ttl: "1h" }),
      });
      return { method: "DELETE", path: `/api/v1/tokens/${String(t.json?.id)}` };
    },
  };

  /** Everything a refused request must leave as it was: catalog rows, files on disk, the served documents. */
  async function state(): Promise<unknown> {
    const db = new Database(path.join(s.dataDir, "catalog.sqlite"), { readonly: true, fileMustExist: true });
    const rows: Record<string, unknown> = {};
    for (const t of [
      "products",
      "versions",
      "items",
      "blobs",
      "image_pairs",
      "upload_sessions",
      "tokens",
      "audit_log",
    ])
      rows[t] = db.prepare(`select * from ${t}`).all();
    db.close();
    const sizes: Record<string, number> = {};
    for (const dir of ["uploads", "blobs"]) {
      const root = path.join(s.dataDir, dir);
      for (const f of (await readdir(root, { recursive: true }).catch(() => [])).sort()) {
        const st = await stat(path.join(root, f));
        if (st.isFile()) sizes[`${dir}/${f}`] = st.size;
      }
    }
    const doc = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as Record<
      string,
      unknown
    >;
    delete doc.updated;
    return { rows, sizes, products: doc.products };
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-auth-"));
    // Each case opens its own upload session with the one admin token: lift the per-token quota.
    s = await startServer({ extraArgs: ["--max-uploads-per-token", "1000"] });
    admin = await createToken(s.dataDir, "admin");
    const img = await buildBusyboxImage(path.join(work, "img"), { serial: VERSION });
    files = [
      {
        name: "lxd.tar.xz",
        ftype: "lxd.tar.xz",
        digest: await uploadFile(s.httpUrl, admin, img.files["lxd.tar.xz"]!),
      },
      {
        name: "rootfs.squashfs",
        ftype: "squashfs",
        digest: await uploadFile(s.httpUrl, admin, img.files["rootfs.squashfs"]!),
      },
    ];
    const expiredToken = await issueToken(s.dataDir, ["admin"], "1s");
    const revoked = await issueToken(s.dataDir, ["admin"]);
    assert.equal(
      (await api(s.httpUrl, "DELETE", `/api/v1/tokens/${revoked.id}`, { token: admin })).status,
      204,
    );
    const right = await issueToken(s.dataDir, ["push:busybox/*", "delete:busybox/*"]);
    const forged = await new SignJWT({ scopes: ["admin"] })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setJti(right.id)
      .setSubject("forger")
      .setIssuer("lxhub")
      .setAudience("lxhub-api")
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(randomBytes(32));
    Object.assign(tokens, {
      none: undefined,
      malformed: "not-a-token",
      forged,
      expired: expiredToken.token,
      revoked: revoked.token,
      "other product": (await issueToken(s.dataDir, ["push:other/*", "delete:other/*"])).token,
      "right scope": right.token,
      admin,
    });
    // Past the expired token's one second (JWT times have one-second resolution).
    await new Promise((r) => setTimeout(r, 2100));
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const writeRoutes = API_ROUTES.filter((r) => r.auth !== "none");

  it("has a request for every write route in the route table", () => {
    for (const r of writeRoutes) assert.ok(REQUESTS[r.operationId], `no request for ${r.operationId}`);
  });

  for (const route of writeRoutes) {
    describe(`${route.method} ${route.path} (${route.auth})`, () => {
      for (const kind of KINDS) {
        const want = expected(route.auth, kind);
        it(`${kind} → ${want}`, async () => {
          const req = await REQUESTS[route.operationId]!();
          const before = want === "allowed" ? null : await state();
          const r: ApiResponse = await api(s.httpUrl, req.method, req.path, {
            token: tokens[kind],
            body: req.body,
            headers: req.headers,
          });
          if (want === "allowed") {
            const domain = r.status >= 400 && r.status < 500 && !REFUSALS.includes(errorCode(r) ?? "");
            assert.ok((r.status >= 200 && r.status < 300) || domain, `${kind}: ${r.status} ${r.text}`);
          } else {
            assert.equal(r.status, want, `${kind}: ${r.text}`);
            assert.equal(errorCode(r), want === 401 ? "UNAUTHORIZED" : "FORBIDDEN");
            if (want === 401) assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="lxhub"');
            assert.deepEqual(await state(), before, "a refused request changed nothing");
          }
        });
      }
    });
  }

  it("the right scope and admin really wrote (the matrix is not vacuous)", async () => {
    const v = await api(s.httpUrl, "GET", versionPath(product, VERSION));
    assert.equal(v.status, 404, "published by the right scope, then deleted by it");
    const deleted = await api(s.httpUrl, "PUT", versionPath(product, VERSION), {
      token: admin,
      body: JSON.stringify({ files }),
    });
    assert.equal(errorCode(deleted), "VERSION_DELETED");
  });

  it("no token appears in the server's logs", () => {
    const logs = s.logs.join("\n") + s.stderr();
    assert.ok(logs.length > 0);
    for (const [kind, token] of Object.entries(tokens)) {
      if (!token || kind === "malformed") continue;
      assert.ok(!logs.includes(token), `the ${kind} token is in the logs`);
      // Nor the signature alone (the part that makes it a credential).
      assert.ok(!logs.includes(token.split(".")[2]!), `the ${kind} token's signature is in the logs`);
    }
  });
});
