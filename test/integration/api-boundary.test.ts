import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startServer, createToken, type RunningServer } from "../support/server.js";
import { tokenCreate } from "../support/tokens.js";
import { api, errorCode } from "../support/api.js";
import { rawRequest } from "../support/raw-http.js";

const GiB = 1024 ** 3;
const PRODUCT = "/api/v1/products/busybox/1.36/amd64/default";
const validFiles = [
  { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: `sha256:${"a".repeat(64)}` },
  { name: "rootfs.squashfs", ftype: "squashfs", digest: `sha256:${"b".repeat(64)}` },
];

/** The request boundary: names, numbers, methods and refused bodies, against a real server. */
describe("API boundary", () => {
  let s: RunningServer;
  let admin: string;
  const maxBlobBytes = 10 * 1024 * 1024;

  before(async () => {
    s = await startServer({ env: { LXHUB_MAX_BLOB_BYTES: String(maxBlobBytes) } });
    admin = await createToken(s.dataDir, "admin");
  });
  after(async () => {
    await s?.stop();
  });

  it("a method a known path does not answer gets 405 with Allow", async () => {
    for (const [method, path, allow] of [
      ["GET", "/api/v1/uploads", "POST"],
      ["POST", "/api/v1/products", "GET, HEAD"],
      ["GET", `/api/v1/blobs/sha256:${"0".repeat(64)}`, "HEAD"],
      ["POST", `${PRODUCT}/versions/20240101_0000`, "GET, HEAD, PUT, DELETE"],
      ["OPTIONS", "/healthz", "GET, HEAD"],
      ["DELETE", "/streams/v1/index.json", "GET, HEAD"],
    ] as const) {
      const r = await api(s.httpUrl, method, path, { token: admin });
      assert.equal(r.status, 405, `${method} ${path}: ${r.text}`);
      assert.equal(r.headers.get("allow"), allow, `${method} ${path}`);
      assert.equal(errorCode(r), "METHOD_NOT_ALLOWED");
    }
  });

  it("every GET answers HEAD with the same status and no body", async () => {
    for (const path of [
      "/healthz",
      "/readyz",
      "/api/v1/products",
      `${PRODUCT}`,
      `${PRODUCT}/versions/20240101_0000`,
    ]) {
      const get = await api(s.httpUrl, "GET", path);
      const head = await api(s.httpUrl, "HEAD", path);
      assert.equal(head.status, get.status, path);
      assert.equal(head.text, "", path);
    }
  });

  it("answers only the documented spelling of a path", async () => {
    for (const path of ["/API/v1/products", "/api/v1/products/", "/api/v1/uploads/"]) {
      const r = await api(s.httpUrl, "GET", path);
      assert.equal(r.status, 404, path);
      assert.equal(errorCode(r), "NOT_FOUND", path);
    }
  });

  it("path segments that are not names get 400 with the name's code, never a 5xx", async () => {
    const long = "a".repeat(300);
    const cases: [string, string, string][] = [
      ["GET", `/api/v1/products/%2e%2e/1.36/amd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/busybox/..%2F..%2Fetc/amd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/busy%00box/1.36/amd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/busy%0Abox/1.36/amd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/${long}/1.36/amd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/busybox/1.36/x64/default`, "UNKNOWN_ARCH"],
      ["GET", `/api/v1/products/busybox/1.36/am%2Fd64/default`, "INVALID_PRODUCT"],
      ["GET", `/api/v1/products/busybox/1.36/amd64/%ff%fe`, "INVALID_NAME"],
      ["GET", `${PRODUCT}/versions/20241301_0000`, "INVALID_VERSION"],
      ["GET", `${PRODUCT}/versions/20240101%2F..`, "INVALID_VERSION"],
      ["PUT", `${PRODUCT}/versions/${"2".repeat(8)}${long}`, "INVALID_VERSION"],
      ["DELETE", `${PRODUCT}/versions/..`, "INVALID_VERSION"],
      ["GET", `/api/v1/uploads/..%2F..%2Fcatalog.sqlite`, "INVALID_NAME"],
      ["PATCH", `/api/v1/uploads/${long}`, "INVALID_NAME"],
      ["DELETE", `/api/v1/tokens/not-a-token-id`, "INVALID_NAME"],
      ["HEAD", `/api/v1/blobs/sha256:ABC`, ""],
    ];
    for (const [method, path, code] of cases) {
      const r = await rawRequest(s.httpUrl, method, path, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(r.status, 400, `${method} ${path}`);
      if (code)
        assert.equal(
          (JSON.parse(r.body) as { error: { code: string } }).error.code,
          code,
          `${method} ${path}`,
        );
    }
  });

  it("Content-Range numbers past 2^53 or backwards, and bodies over the blob limit, get 4xx before reading", async () => {
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    for (const range of [
      "bytes 0-9007199254740993/*",
      "bytes 9007199254740993-9007199254740994/*",
      "bytes 5-2/10",
      "bytes 0-20/10",
      "bytes 0-3/99999999999999999999",
    ]) {
      const r = await api(s.httpUrl, "PATCH", location, {
        token: admin,
        body: Buffer.from("abcd"),
        headers: { "content-range": range },
      });
      assert.equal(r.status, 400, `${range}: ${r.text}`);
      assert.equal(errorCode(r), "BAD_REQUEST");
    }
    const big = await rawRequest(s.httpUrl, "PATCH", location, {
      headers: { authorization: `Bearer ${admin}` },
      declared: maxBlobBytes + 1,
    });
    assert.equal(big.status, 413);
    assert.ok(big.bodyBytesWritten < maxBlobBytes / 2, `client wrote ${big.bodyBytesWritten} bytes`);
    const state = await api(s.httpUrl, "GET", location, { token: admin });
    assert.equal(state.json?.offset, 0, "nothing was appended");
  });

  it("a 1 GiB body to a refused route is answered within a second and not read", async () => {
    for (const [method, path, headers, status] of [
      ["POST", "/api/v1/uploads", {}, 401],
      ["PATCH", "/api/v1/uploads/AAAAAAAAAAAAAAAA", { authorization: "Bearer nope" }, 401],
      ["PUT", `${PRODUCT}/versions/20240101_0000`, {}, 401],
      ["POST", "/api/v1/nowhere", {}, 404],
      ["POST", "/api/v1/products", {}, 405],
      ["PUT", `${PRODUCT}/versions/20240101_0000`, { authorization: `Bearer ${admin}` }, 413],
    ] as const) {
      const r = await rawRequest(s.httpUrl, method, path, { headers, declared: GiB });
      assert.equal(r.status, status, `${method} ${path}`);
      assert.ok(r.ms < 1000, `${method} ${path} answered after ${r.ms} ms`);
      assert.equal(r.headers.connection, "close", `${method} ${path}`);
      assert.ok(r.closed, `${method} ${path}: the server closed the connection`);
      assert.ok(
        r.bodyBytesWritten < 64 * 1024 * 1024,
        `${method} ${path}: ${r.bodyBytesWritten} bytes went out`,
      );
    }
    // The server is fine afterwards.
    assert.equal((await api(s.httpUrl, "GET", "/healthz")).status, 200);
  });

  it("request bodies are checked with the name grammar and text limits", async () => {
    const put = (body: unknown) =>
      api(s.httpUrl, "PUT", `${PRODUCT}/versions/20240101_0000`, {
        token: admin,
        body: JSON.stringify(body),
      });
    const cases: [unknown, string][] = [
      [{ files: validFiles, release_title: "busy\u0007box" }, "INVALID_TEXT"],
      [{ files: validFiles, release_title: "x".repeat(257) }, "INVALID_TEXT"],
      [{ files: validFiles, requirements: { "bad key": "x" } }, "INVALID_REQUIREMENT"],
      [{ files: validFiles, requirements: { secureboot: "fa\nlse" } }, "INVALID_REQUIREMENT"],
      [{ files: validFiles, aliases: Array.from({ length: 33 }, (_, i) => `a${i}`) }, "INVALID_ALIAS"],
      [{ files: validFiles, aliases: ["debian//12"] }, "INVALID_ALIAS"],
      [{ files: [validFiles[0]] }, "INVALID_FILES"],
      [{ files: [{ ...validFiles[0], name: "../x" }, validFiles[1]] }, "INVALID_FILES"],
      [{ files: [validFiles[0], { ...validFiles[1], delta_base: "../../x" }] }, "INVALID_FILES"],
      [{ files: validFiles, move_aliases: "yes" }, "BAD_REQUEST"],
      [{ files: validFiles, unknown_field: 1 }, "BAD_REQUEST"],
    ];
    for (const [body, code] of cases) {
      const r = await put(body);
      assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 120)}: ${r.text}`);
      assert.equal(errorCode(r), code, JSON.stringify(body).slice(0, 120));
    }
    // move_aliases is accepted (the blobs do not exist, so the publish itself is refused).
    const moved = await put({ files: validFiles, move_aliases: true });
    assert.equal(errorCode(moved), "BLOB_UNKNOWN", moved.text);
  });

  it("a token lifetime past 10 years is refused, over the API and on the command line", async () => {
    for (const ttl of ["99999999999d", "3651d", "0s"]) {
      const r = await api(s.httpUrl, "POST", "/api/v1/tokens", {
        token: admin,
        body: JSON.stringify({ scopes: ["push:*"], ttl }),
      });
      assert.equal(r.status, 400, `${ttl}: ${r.text}`);
    }
    const ok = await api(s.httpUrl, "POST", "/api/v1/tokens", {
      token: admin,
      body: JSON.stringify({ scopes: ["push:*"], ttl: "3650d" }),
    });
    assert.equal(ok.status, 201, ok.text);
    const cli = await tokenCreate(s.dataDir, ["admin"], "99999999999d");
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /at most 3650d/);
    assert.equal(cli.stdout, "");
  });
});
