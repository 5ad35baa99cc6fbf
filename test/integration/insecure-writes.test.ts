import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import net from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { api, errorCode } from "../support/api.js";
import { buildTinyImage } from "../support/tiny-image.js";

/** A request over TLS, trusting the server's own (self-signed) certificate. */
function tlsRequest(
  s: RunningServer,
  method: string,
  p: string,
  token: string,
): Promise<{ status: number; body: string }> {
  const url = new URL(s.httpsUrl + p);
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: url.hostname, port: url.port, path: url.pathname, method, ca: s.certPem },
      (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setHeader("authorization", `Bearer ${token}`);
    req.on("error", reject);
    req.end();
  });
}

/**
 * Headers of a PATCH that announces `declared` bytes, sent without any body: the answer must come
 * at once (the body is not waited for) and the server must close the connection.
 */
function rawHeadersOnly(
  base: string,
  token: string,
  declared: number,
): Promise<{ head: string; closed: boolean }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(url.port), url.hostname);
    let data = "";
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ head: data, closed: false });
    }, 5_000);
    sock.setEncoding("utf8").on("data", (d: string) => (data += d));
    sock.on("end", () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ head: data, closed: true });
    });
    sock.on("error", reject);
    sock.write(
      `PATCH /api/v1/uploads/aaaaaaaaaaaa HTTP/1.1\r\nhost: ${url.host}\r\n` +
        `authorization: Bearer ${token}\r\ncontent-length: ${declared}\r\n\r\n`,
    );
  });
}

describe("tokens over plain HTTP", () => {
  let s: RunningServer;
  let admin: string;
  let work: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-insecure-"));
    s = await startServer({ allowInsecureWrites: false });
    admin = await createToken(s.dataDir, "admin");
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("refuses a write with a token on the plain listener: 403 INSECURE_TRANSPORT", async () => {
    const r = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    assert.equal(r.status, 403, r.text);
    assert.equal(errorCode(r), "INSECURE_TRANSPORT");
    assert.match(String((r.json?.error as { message: string }).message), /--allow-insecure-writes/);
  });

  it("refuses it on the TLS port too when the request is plain HTTP (first-byte sniff)", async () => {
    const plainOnTlsPort = s.httpsUrl.replace(/^https:/, "http:");
    const r = await api(plainOnTlsPort, "POST", "/api/v1/uploads", { token: admin });
    assert.equal(r.status, 403, r.text);
    assert.equal(errorCode(r), "INSECURE_TRANSPORT");
  });

  it("accepts the same write over TLS", async () => {
    const r = await tlsRequest(s, "POST", "/api/v1/uploads", admin);
    assert.equal(r.status, 201, r.body);
  });

  it("answers without reading the announced body and closes the connection", async () => {
    const r = await rawHeadersOnly(s.httpUrl, admin, 1 << 30);
    assert.match(r.head, /^HTTP\/1\.1 403 /);
    assert.match(r.head, /INSECURE_TRANSPORT/);
    assert.ok(r.closed, "the server closed the connection");
  });

  it("still serves reads and token-less requests over plain HTTP", async () => {
    assert.equal((await api(s.httpUrl, "GET", "/streams/v1/index.json")).status, 200);
    assert.equal((await api(s.httpUrl, "GET", "/healthz")).status, 200);
    const anon = await api(s.httpUrl, "POST", "/api/v1/uploads");
    assert.equal(errorCode(anon), "UNAUTHORIZED");
  });

  it("`lxhub push http://…` warns on stderr that the token goes in clear, and the server refuses it", async () => {
    const img = await buildTinyImage(path.join(work, "img"));
    const r = await lxhubCli(["push", s.httpUrl, img.dir, "--token", admin], {
      env: { XDG_CONFIG_HOME: work, XDG_CACHE_HOME: work, XDG_STATE_HOME: work },
      timeoutMs: 60_000,
    });
    assert.match(r.stderr, /warning: .*plain HTTP: the token is sent in clear/);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /INSECURE_TRANSPORT|plain HTTP, where anyone/);
  });
});

describe("tokens over plain HTTP with --allow-insecure-writes", () => {
  let s: RunningServer;
  before(async () => {
    s = await startServer({ allowInsecureWrites: true });
  });
  after(async () => {
    await s?.stop();
  });

  it("accepts the write", async () => {
    const admin = await createToken(s.dataDir, "admin");
    const r = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    assert.equal(r.status, 201, r.text);
  });
});
