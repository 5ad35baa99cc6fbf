import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { api, settledOffset, truncatedPatch } from "../support/api.js";

/** Small limits, so a stall shows within seconds: headers 1 s, whole body 2 s, idle gap 1 s. */
const LIMITS = ["--headers-timeout", "1", "--request-timeout", "2", "--idle-timeout", "1"];

interface Outcome {
  /** Everything the server sent. */
  data: string;
  /** Milliseconds from connecting until the server closed the connection. */
  closedAfter: number;
  /** The socket was still open when the test gave up (15 s). */
  hung: boolean;
}

/**
 * A raw connection that sends `head`, then `drip` bytes one at a time every `everyMs` (none when
 * `drip` is empty), and reports when the server closes the connection.
 */
function rawClient(
  base: string,
  head: string,
  drip = "",
  everyMs = 300,
  /** Speak TLS, trusting this certificate. */
  ca?: string,
): Promise<Outcome> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock =
      ca === undefined
        ? net.connect(Number(url.port), url.hostname)
        : tls.connect({ port: Number(url.port), host: url.hostname, ca });
    let data = "";
    let i = 0;
    const dripper = setInterval(() => {
      if (i < drip.length && !sock.destroyed) sock.write(drip[i++] ?? "");
    }, everyMs);
    const giveUp = setTimeout(() => finish(true), 15_000);
    const finish = (hung: boolean) => {
      clearInterval(dripper);
      clearTimeout(giveUp);
      sock.destroy();
      resolve({ data, closedAfter: Date.now() - t0, hung });
    };
    sock.setEncoding("utf8").on("data", (d: string) => (data += d));
    sock.on("close", () => finish(false));
    sock.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "ECONNRESET" && err.code !== "EPIPE") reject(err);
    });
    if (head) sock.write(head);
  });
}

function requestHead(method: string, path: string, headers: Record<string, string | number>): string {
  const lines = Object.entries({ host: "localhost", connection: "close", ...headers }).map(
    ([k, v]) => `${k}: ${v}`,
  );
  return `${method} ${path} HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n`;
}

describe("request timeouts (headers 1 s, body 2 s, idle gap 1 s)", () => {
  let s: RunningServer;
  let admin: string;

  before(async () => {
    s = await startServer({ extraArgs: LIMITS });
    admin = await createToken(s.dataDir, "admin");
  });
  after(async () => {
    await s?.stop();
  });

  it("cuts a connection whose headers stall (408), on the plain listener", async () => {
    const r = await rawClient(s.httpUrl, "POST /api/v1/uploads HTTP/1.1\r\nhost: localhost\r\n");
    assert.equal(r.hung, false, "the connection was kept open");
    assert.ok(r.closedAfter < 3_000, `closed after ${r.closedAfter} ms`);
    assert.match(r.data, /^HTTP\/1\.1 408 /);
  });

  it("cuts headers sent a byte at a time: the limit is for all of them, not for a gap", async () => {
    const head = "GET /streams/v1/index.json HTTP/1.1\r\nhost: localhost\r\nx-slow: " + "a".repeat(40);
    const r = await rawClient(s.httpUrl, "", head, 200);
    assert.equal(r.hung, false);
    assert.ok(r.closedAfter < 3_000, `closed after ${r.closedAfter} ms`);
  });

  it("cuts a connection that never says anything, on both ports", async () => {
    for (const base of [s.httpUrl, s.httpsUrl]) {
      const r = await rawClient(base, "");
      assert.equal(r.hung, false, `${base}: the silent connection was kept open`);
      assert.ok(r.closedAfter < 3_000, `${base}: closed after ${r.closedAfter} ms`);
    }
  });

  it("cuts a body that stops arriving (idle gap): 408, and the server goes on serving", async () => {
    const head = requestHead("POST", "/api/v1/tokens", {
      authorization: `Bearer ${admin}`,
      "content-type": "application/json",
      "content-length": 100,
    });
    const r = await rawClient(s.httpUrl, head + '{"scopes":');
    assert.equal(r.hung, false);
    assert.ok(r.closedAfter < 3_000, `closed after ${r.closedAfter} ms`);
    assert.match(r.data, /^HTTP\/1\.1 408 /);
    assert.equal((await api(s.httpUrl, "GET", "/streams/v1/index.json")).status, 200);
    assert.ok(s.logs.some((l) => l.includes('"event":"request-cut"') && l.includes("idle timeout")));
  });

  it("cuts a body that trickles in slower than the request timeout allows", async () => {
    const body = '{"scopes":["push:*"],"subject":"slow"}';
    const head = requestHead("POST", "/api/v1/tokens", {
      authorization: `Bearer ${admin}`,
      "content-type": "application/json",
      "content-length": body.length,
    });
    // A byte every 300 ms (never a 1 s gap) would take ~11 s.
    const r = await rawClient(s.httpUrl, head, body, 300);
    assert.equal(r.hung, false);
    assert.ok(r.closedAfter < 4_000, `closed after ${r.closedAfter} ms`);
    assert.match(r.data, /^HTTP\/1\.1 408 /);
  });

  it("lets an authenticated upload that keeps making progress run past the request timeout", async () => {
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    const body = "0123456789abcd"; // ~4.2 s at one byte every 300 ms
    const head = requestHead("PATCH", location, {
      authorization: `Bearer ${admin}`,
      "content-length": body.length,
      "content-range": `bytes 0-${body.length - 1}/*`,
    });
    const r = await rawClient(s.httpUrl, head, body, 300);
    assert.match(r.data, /^HTTP\/1\.1 202 /, r.data);
    assert.ok(r.closedAfter > 3_000, `finished after ${r.closedAfter} ms, before the limit mattered`);
    const state = await api(s.httpUrl, "GET", location, { token: admin });
    assert.equal(state.json?.offset, body.length);
  });

  it("still cuts an authenticated upload that stops sending; the bytes that came are kept", async () => {
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    const head = requestHead("PATCH", location, {
      authorization: `Bearer ${admin}`,
      "content-length": 1000,
      "content-range": "bytes 0-999/*",
    });
    const r = await rawClient(s.httpUrl, head + "x".repeat(10));
    assert.equal(r.hung, false);
    assert.ok(r.closedAfter < 3_000, `closed after ${r.closedAfter} ms`);
    let offset = -1;
    for (let i = 0; i < 20 && offset !== 10; i++) {
      offset = Number((await api(s.httpUrl, "GET", location, { token: admin })).json?.offset);
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(offset, 10);
  });

  it("over TLS too: a progressing upload runs on, a stalled body is cut", async () => {
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    const body = "0123456789abcd";
    const head = requestHead("PATCH", location, {
      authorization: `Bearer ${admin}`,
      "content-length": body.length,
      "content-range": `bytes 0-${body.length - 1}/*`,
    });
    const slow = await rawClient(s.httpsUrl, head, body, 300, s.certPem);
    assert.match(slow.data, /^HTTP\/1\.1 202 /, slow.data);
    assert.ok(slow.closedAfter > 3_000, `finished after ${slow.closedAfter} ms`);

    const stalled = requestHead("POST", "/api/v1/tokens", {
      authorization: `Bearer ${admin}`,
      "content-length": 100,
    });
    const cut = await rawClient(s.httpsUrl, stalled + "{", "", 300, s.certPem);
    assert.equal(cut.hung, false);
    assert.ok(cut.closedAfter < 3_000, `closed after ${cut.closedAfter} ms`);
    assert.match(cut.data, /^HTTP\/1\.1 408 /);
  });

  it("does not spare a progressing upload whose token is not valid", async () => {
    const head = requestHead("PATCH", "/api/v1/uploads/aaaaaaaaaaaa", {
      authorization: "Bearer not-a-token",
      "content-length": 40,
    });
    const r = await rawClient(s.httpUrl, head, "y".repeat(40), 300);
    assert.equal(r.hung, false);
    assert.ok(r.closedAfter < 4_000, `closed after ${r.closedAfter} ms`);
  });

  it("logs a client that drops its connection mid-upload as an info event, not an error", async () => {
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token: admin });
    const location = String(open.json?.location);
    await truncatedPatch(s.httpUrl, admin, location, Buffer.alloc(4096, 7), 1000);
    assert.equal(await settledOffset(s.httpUrl, admin, location), 1000);
    assert.ok(s.logs.some((l) => l.includes('"event":"client-gone"')));
  });

  it("logged no server error for any of the requests above", () => {
    const errors = s.logs.filter((l) => /"level":50/.test(l));
    assert.deepEqual(errors, []);
  });
});
