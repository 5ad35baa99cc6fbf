import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { get } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import Database from "better-sqlite3";
import { createLocalJWKSet, jwtVerify } from "jose";
import { startServer, createToken, type RunningServer } from "../support/server.js";
import { issueToken, tokenCreate } from "../support/tokens.js";
import { buildBusyboxImage, type BusyboxImage } from "../support/image-fixture.js";
import { stateOf } from "../support/state.js";
import {
  api,
  digestOf,
  errorCode,
  sha256Hex,
  settledOffset,
  truncatedPatch,
  uploadBlob,
  uploadFile,
  versionPath,
} from "../support/api.js";

const product = { os: "busybox", release: "1.36", arch: "amd64", variant: "default" };

function files(digests: Record<string, string>) {
  return [
    { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: digests["lxd.tar.xz"] },
    { name: "rootfs.squashfs", ftype: "squashfs", digest: digests["rootfs.squashfs"] },
  ];
}

function rawGzipGet(url: string): Promise<{ enc: string | undefined; bytes: Buffer }> {
  // node's fetch always decodes gzip, so ask with a raw request to see the encoding.
  return new Promise((resolve, reject) => {
    get(url, { headers: { "accept-encoding": "gzip" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ enc: res.headers["content-encoding"], bytes: Buffer.concat(chunks) }));
    }).on("error", reject);
  });
}

describe("publish API against a real server", () => {
  let s: RunningServer;
  let work: string;
  let admin: string;
  let v1: BusyboxImage;
  let v2: BusyboxImage;
  const d1: Record<string, string> = {};
  const d2: Record<string, string> = {};

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-api-"));
    s = await startServer();
    admin = await createToken(s.dataDir, "admin");
    v1 = await buildBusyboxImage(path.join(work, "v1"), { serial: "20240101_0000", marker: "one" });
    v2 = await buildBusyboxImage(path.join(work, "v2"), { serial: "20240201_0000", marker: "two" });
    for (const [img, d] of [
      [v1, d1],
      [v2, d2],
    ] as const) {
      for (const name of ["lxd.tar.xz", "rootfs.squashfs"]) {
        d[name] = await uploadFile(s.httpUrl, admin, img.files[name]!);
      }
    }
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("publishes a version, and the same files again is a no-op (200)", async () => {
    const body = JSON.stringify({ files: files(d1), aliases: ["busybox/1.36/default", "busybox/1.36"] });
    const r = await api(s.httpUrl, "PUT", versionPath(product, "20240101_0000"), { token: admin, body });
    assert.equal(r.status, 201, r.text);
    const meta = await readFile(v1.files["lxd.tar.xz"]!);
    const root = await readFile(v1.files["rootfs.squashfs"]!);
    assert.equal(
      (r.json?.fingerprints as Record<string, string>).squashfs,
      sha256Hex(Buffer.concat([meta, root])),
    );
    const before = await stateOf(s);
    const again = await api(s.httpUrl, "PUT", versionPath(product, "20240101_0000"), { token: admin, body });
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(await stateOf(s), before);
  });

  it("serves the documents: ETag, 304, gzip only when asked, and a statement that binds them", async () => {
    // wget (the LXC download template) asks for identity: it must never get gzip (pitfall 14).
    const idx = await fetch(`${s.httpUrl}/streams/v1/index.json`, {
      headers: { "accept-encoding": "identity" },
    });
    const etag = idx.headers.get("etag");
    const body = Buffer.from(await idx.arrayBuffer());
    assert.equal(etag, `"${sha256Hex(body)}"`);
    assert.equal(idx.headers.get("content-encoding"), null);
    const cond = await fetch(`${s.httpUrl}/streams/v1/index.json`, { headers: { "if-none-match": etag! } });
    assert.equal(cond.status, 304);
    const raw = await rawGzipGet(`${s.httpUrl}/streams/v1/images.json`);
    assert.equal(raw.enc, "gzip");
    const images = gunzipSync(raw.bytes);
    const jwks = (await (await fetch(`${s.httpUrl}/.well-known/lxhub/jwks.json`)).json()) as Parameters<
      typeof createLocalJWKSet
    >[0];
    const jws = (await (await fetch(`${s.httpUrl}/streams/v1/statement.jws`)).text()).trim();
    const { payload } = await jwtVerify(jws, createLocalJWKSet(jwks), { algorithms: ["EdDSA"] });
    const docs = payload.documents as Record<string, { sha256: string; size: number }>;
    assert.equal(docs["streams/v1/index.json"]?.sha256, sha256Hex(body));
    assert.equal(docs["streams/v1/images.json"]?.sha256, sha256Hex(images));
    assert.equal(docs["streams/v1/images.json"]?.size, images.length);
  });

  it("serves image files with Range, HEAD, doubled slashes and genuine 404s", async () => {
    const root = await readFile(v1.files["rootfs.squashfs"]!);
    const p = `/images/busybox/1.36/amd64/default/20240101_0000/rootfs.squashfs`;
    const whole = await fetch(s.httpUrl + p);
    assert.equal(whole.status, 200);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), root);
    const part = await fetch(s.httpUrl + p, { headers: { range: "bytes=100-199" } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 100-199/${root.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), root.subarray(100, 200));
    const head = await fetch(s.httpUrl + p, { method: "HEAD" });
    assert.equal(head.headers.get("content-length"), String(root.length));
    const doubled = await fetch(
      s.httpUrl + "/images/busybox/1.36/amd64/default/20240101_0000//rootfs.squashfs",
    );
    assert.equal(doubled.status, 200);
    assert.deepEqual(Buffer.from(await doubled.arrayBuffer()), root);
    const byDigest = await fetch(`${s.httpUrl}/blobs/sha256/${sha256Hex(root)}`, { method: "HEAD" });
    assert.equal(byDigest.status, 200);
    assert.equal((await fetch(s.httpUrl + p.replace("rootfs", "nope"))).status, 404);
    assert.equal((await fetch(`${s.httpUrl}/blobs/sha256/${"0".repeat(64)}`)).status, 404);
    const past = await fetch(s.httpUrl + p, { headers: { range: `bytes=${root.length}-` } });
    assert.equal(past.status, 416);
  });

  it("survives clients that go away mid-download, and keeps serving whole files", async () => {
    const bytes = Buffer.alloc(24 * 1024 * 1024, 5);
    const r = await uploadBlob(s.httpUrl, admin, bytes);
    assert.equal(r.status, 201, r.text);
    const url = `${s.httpUrl}/blobs/sha256/${sha256Hex(bytes)}`;
    for (let i = 0; i < 5; i++) {
      const ac = new AbortController();
      const res = await fetch(url, { signal: ac.signal });
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.read().catch(() => undefined);
    }
    const whole = Buffer.from(await (await fetch(url)).arrayBuffer());
    assert.equal(sha256Hex(whole), sha256Hex(bytes));
  });

  it("answers plain HTTP on the TLS port at once (LXD's first try for every file)", async () => {
    const plainOnTls = s.httpsUrl.replace("https://", "http://");
    const r = await fetch(`${plainOnTls}/streams/v1/index.json`, { signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  });

  describe("bad input gets a clear error and changes nothing", () => {
    type Outcome = { status: number; code: string | undefined };
    // `null` = send no token at all.
    const put = async (version: string, body: unknown, token: string | null = admin, p = product) => {
      const r = await api(s.httpUrl, "PUT", versionPath(p, version), {
        token: token ?? undefined,
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      return { status: r.status, code: errorCode(r) };
    };
    const cases: [string, () => Promise<Outcome>, number, string][] = [
      [
        "wrong digest on commit",
        async () => {
          const bytes = Buffer.from("some bytes that are not what the digest says");
          const r = await uploadBlob(s.httpUrl, admin, bytes, digestOf(Buffer.from("other")));
          return { status: r.status, code: errorCode(r) };
        },
        400,
        "DIGEST_MISMATCH",
      ],
      [
        "truncated upload committed with the full file's digest",
        async () => {
          const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
          const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
          const location = String(open.json?.location);
          await truncatedPatch(s.httpUrl, admin, location, bytes, 1024 * 1024);
          const offset = await settledOffset(s.httpUrl, admin, location);
          assert.ok(offset < bytes.length, "the server kept only what arrived");
          const r = await api(s.httpUrl, "PUT", `${location}?digest=${digestOf(bytes)}`, { token: admin });
          return { status: r.status, code: errorCode(r) };
        },
        400,
        "DIGEST_MISMATCH",
      ],
      [
        "metadata architecture does not match the product",
        () => put("20240301_0000", { files: files(d2) }, admin, { ...product, arch: "arm64" }),
        400,
        "ARCH_MISMATCH",
      ],
      [
        "unknown architecture",
        () => put("20240301_0000", { files: files(d2) }, admin, { ...product, arch: "x64" }),
        400,
        "UNKNOWN_ARCH",
      ],
      [
        "the same (metadata, root) pair under another version",
        () => put("20240301_0000", { files: files(d1) }),
        409,
        "DUPLICATE_IMAGE",
      ],
      [
        "an existing version with other files",
        () => put("20240101_0000", { files: files(d2) }),
        409,
        "VERSION_CONFLICT",
      ],
      ["no token", () => put("20240201_0000", { files: files(d2) }, null), 401, "UNAUTHORIZED"],
      [
        "a token with the wrong scope",
        async () => put("20240201_0000", { files: files(d2) }, await createToken(s.dataDir, "push:debian/*")),
        403,
        "FORBIDDEN",
      ],
      [
        "an expired token",
        async () => {
          const r = await tokenCreate(s.dataDir, ["admin"], "1s");
          await new Promise((res) => setTimeout(res, 2100));
          return put("20240201_0000", { files: files(d2) }, r.stdout.trim());
        },
        401,
        "UNAUTHORIZED",
      ],
      [
        "a forged token",
        () => put("20240201_0000", { files: files(d2) }, admin.slice(0, -4) + "AAAA"),
        401,
        "UNAUTHORIZED",
      ],
      ["malformed JSON", () => put("20240201_0000", '{"files": [', admin), 400, "MALFORMED_JSON"],
      ["a body of the wrong shape", () => put("20240201_0000", { files: "lxd.tar.xz" }), 400, "BAD_REQUEST"],
      ["a version key that is not a date", () => put("latest", { files: files(d2) }), 400, "INVALID_VERSION"],
      [
        "a blob that was never uploaded",
        () =>
          put("20240201_0000", {
            files: [
              files(d2)[0],
              { name: "rootfs.squashfs", ftype: "squashfs", digest: digestOf(Buffer.from("never")) },
            ],
          }),
        400,
        "BLOB_UNKNOWN",
      ],
      [
        "an unknown ftype",
        () =>
          put("20240201_0000", {
            files: [files(d2)[0], { name: "x.img", ftype: "vmdk", digest: d2["rootfs.squashfs"] }],
          }),
        400,
        "INVALID_FILES",
      ],
      [
        "a root file given as metadata",
        () =>
          put("20240201_0000", {
            files: [{ name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: d2["rootfs.squashfs"] }, files(d2)[1]],
          }),
        400,
        "INVALID_METADATA",
      ],
      [
        "an alias with a comma",
        () => put("20240201_0000", { files: files(d2), aliases: ["a,b"] }),
        400,
        "INVALID_ALIAS",
      ],
    ];

    for (const [name, run, status, code] of cases) {
      it(name, async () => {
        const before = await stateOf(s);
        const r = await run();
        assert.equal(r.status, status);
        assert.equal(r.code, code);
        assert.deepEqual(await stateOf(s), before);
      });
    }
  });

  it("an upload session can be used only with the token that opened it (or an admin token)", async () => {
    const alice = await createToken(s.dataDir, "push:*");
    const bob = await createToken(s.dataDir, "push:*");
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: alice });
    const location = String(open.json?.location);
    const bytes = Buffer.from("alice's bytes");
    const headers = { "content-range": `bytes 0-${bytes.length - 1}/${bytes.length}` };
    const patch = await api(s.httpUrl, "PATCH", location, { token: bob, body: bytes, headers });
    assert.equal(patch.status, 403, patch.text);
    assert.equal((await api(s.httpUrl, "DELETE", location, { token: bob })).status, 403);
    assert.equal((await api(s.httpUrl, "GET", location, { token: alice })).json?.offset, 0);
    assert.equal(
      (await api(s.httpUrl, "PATCH", location, { token: alice, body: bytes, headers })).status,
      202,
    );
    assert.equal((await api(s.httpUrl, "GET", location, { token: admin })).json?.offset, bytes.length);
  });

  it("a revoked token stops working", async () => {
    const { token, id } = await issueToken(s.dataDir, ["push:*"]);
    assert.equal((await api(s.httpUrl, "POST", "/api/v1/uploads", { token })).status, 201);
    const rev = await api(s.httpUrl, "DELETE", `/api/v1/tokens/${id}`, { token: admin });
    assert.equal(rev.status, 204);
    const after = await api(s.httpUrl, "POST", "/api/v1/uploads", { token });
    assert.equal(after.status, 401);
  });

  it("resumes an upload after a dropped connection, and refuses a chunk at the wrong offset", async () => {
    const bytes = Buffer.alloc(2 * 1024 * 1024 + 5, 3);
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    await truncatedPatch(s.httpUrl, admin, location, bytes, 1024 * 1024);
    const offset = await settledOffset(s.httpUrl, admin, location);
    assert.ok(offset > 0 && offset <= 1024 * 1024, `offset ${offset}`);
    const bad = await api(s.httpUrl, "PATCH", location, {
      token: admin,
      body: Buffer.from("x"),
      headers: { "content-range": `bytes ${offset + 5}-${offset + 5}/*` },
    });
    assert.equal(bad.status, 416);
    assert.equal(errorCode(bad), "UPLOAD_OFFSET_MISMATCH");
    const rest = await api(s.httpUrl, "PATCH", location, {
      token: admin,
      body: bytes.subarray(offset),
      headers: { "content-range": `bytes ${offset}-${bytes.length - 1}/${bytes.length}` },
    });
    assert.equal(rest.status, 202, rest.text);
    const commit = await api(s.httpUrl, "PUT", `${location}?digest=${digestOf(bytes)}`, { token: admin });
    assert.equal(commit.status, 201, commit.text);
    const head = await api(s.httpUrl, "HEAD", `/api/v1/blobs/${digestOf(bytes)}`);
    assert.equal(head.status, 200);
  });

  it("computes the fingerprint while a root file is uploaded with the metadata as prefix, across a resume", async () => {
    const img = await buildBusyboxImage(path.join(work, "v3"), { serial: "20240301_0000", marker: "three" });
    const meta = await readFile(img.files["lxd.tar.xz"]!);
    const root = await readFile(img.files["rootfs.squashfs"]!);
    const metaDigest = await uploadFile(s.httpUrl, admin, img.files["lxd.tar.xz"]!);
    const open = await api(s.httpUrl, "POST", `/api/v1/uploads?prefix=${metaDigest}`, { token: admin });
    assert.equal(open.status, 201, open.text);
    const location = String(open.json?.location);
    await truncatedPatch(s.httpUrl, admin, location, root, 300 * 1024);
    const offset = await settledOffset(s.httpUrl, admin, location);
    const rest = await api(s.httpUrl, "PATCH", location, {
      token: admin,
      body: root.subarray(offset),
      headers: { "content-range": `bytes ${offset}-${root.length - 1}/${root.length}` },
    });
    assert.equal(rest.status, 202, rest.text);
    const commit = await api(s.httpUrl, "PUT", `${location}?digest=${digestOf(root)}`, { token: admin });
    assert.equal(commit.status, 201, commit.text);
    const expected = sha256Hex(Buffer.concat([meta, root]));
    const db = new Database(path.join(s.dataDir, "catalog.sqlite"), { readonly: true });
    const row = db
      .prepare("select sha256 from combined_hashes where meta_digest = ? and root_digest = ?")
      .get(metaDigest, digestOf(root)) as { sha256: string } | undefined;
    db.close();
    assert.equal(row?.sha256, expected, "recorded at commit");
    const body = JSON.stringify({
      files: [
        { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: metaDigest },
        { name: "rootfs.squashfs", ftype: "squashfs", digest: digestOf(root) },
      ],
    });
    const pub = await api(s.httpUrl, "PUT", versionPath(product, "20240301_0000"), { token: admin, body });
    assert.equal(pub.status, 201, pub.text);
    assert.equal((pub.json?.fingerprints as Record<string, string>).squashfs, expected);
    const bad = await api(s.httpUrl, "POST", `/api/v1/uploads?prefix=${digestOf(Buffer.from("nope"))}`, {
      token: admin,
    });
    assert.equal(errorCode(bad), "BLOB_UNKNOWN");
  });

  it("deleting a version drops it from the documents but keeps its files downloadable", async () => {
    const body = JSON.stringify({ files: files(d2) });
    const pub = await api(s.httpUrl, "PUT", versionPath(product, "20240201_0000"), { token: admin, body });
    assert.equal(pub.status, 201, pub.text);
    const del = await api(s.httpUrl, "DELETE", versionPath(product, "20240201_0000"), { token: admin });
    assert.equal(del.status, 204);
    const images = await (await fetch(`${s.httpUrl}/streams/v1/images.json`)).text();
    assert.ok(!images.includes("20240201_0000"));
    const file = await fetch(`${s.httpUrl}/images/busybox/1.36/amd64/default/20240201_0000/rootfs.squashfs`);
    assert.equal(file.status, 200);
    await file.arrayBuffer();
    const reuse = await api(s.httpUrl, "PUT", versionPath(product, "20240201_0000"), { token: admin, body });
    assert.equal(errorCode(reuse), "VERSION_DELETED");
  });
});
