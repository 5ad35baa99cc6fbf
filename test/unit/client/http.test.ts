import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import net from "node:net";
import { HttpClient, HttpError, isTransient, NetworkError, networkError } from "../../../client/http.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

/** A real loopback server whose handler sees the 1-based number of the request. */
async function serve(
  handler: Handler,
): Promise<{ url: string; hits: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => handler(req, res, ++n));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => n,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function jsonError(res: http.ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { code, message, detail: { hint: "x" } } }));
}

const fast = { retries: 3, retryBaseMs: 1, retryMaxMs: 5 };

describe("HttpClient retries", () => {
  test("retries 503 and then succeeds", async () => {
    const s = await serve((_req, res, n) => {
      if (n <= 2) return jsonError(res, 503, "INTERNAL", "busy");
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: n }));
    });
    const c = new HttpClient(s.url, fast);
    try {
      const r = await c.json<{ ok: number }>("GET", "/api/v1/products");
      assert.equal(r.status, 200);
      assert.deepEqual(r.data, { ok: 3 });
      assert.equal(s.hits(), 3);
    } finally {
      c.close();
      await s.close();
    }
  });

  test("retries 429 and a reset connection", async () => {
    const s = await serve((req, res, n) => {
      if (n === 1) return void req.socket.destroy();
      if (n === 2) return jsonError(res, 429, "TOO_MANY", "slow down");
      res.end("fine");
    });
    const c = new HttpClient(s.url, fast);
    try {
      const r = await c.request("GET", "/x");
      assert.equal(r.body.toString(), "fine");
      assert.equal(s.hits(), 3);
    } finally {
      c.close();
      await s.close();
    }
  });

  test("retries a refused connection, then gives up with the socket error", async () => {
    const s = await serve((_req, res) => res.end());
    const url = s.url;
    await s.close();
    const c = new HttpClient(url, { ...fast, retries: 2 });
    try {
      await assert.rejects(c.request("GET", "/x"), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, "ECONNREFUSED");
        assert.match(err.message, /^cannot connect to 127\.0\.0\.1:\d+: the connection was refused/);
        assert.ok(isTransient(err));
        return true;
      });
    } finally {
      c.close();
    }
  });

  test("gives up after the configured retries on persistent 5xx", async () => {
    const s = await serve((_req, res) => jsonError(res, 502, "INTERNAL", "upstream down"));
    const c = new HttpClient(s.url, { ...fast, retries: 2 });
    try {
      await assert.rejects(
        c.request("GET", "/x"),
        (err: HttpError) => err instanceof HttpError && err.status === 502,
      );
      assert.equal(s.hits(), 3);
    } finally {
      c.close();
      await s.close();
    }
  });

  for (const [status, code] of [
    [400, "BAD_REQUEST"],
    [403, "FORBIDDEN"],
    [404, "NOT_FOUND"],
  ] as const) {
    test(`never retries ${status}; parses the error body`, async () => {
      const s = await serve((_req, res) => jsonError(res, status, code, `refused with ${status}`));
      const c = new HttpClient(s.url, fast);
      try {
        await assert.rejects(c.json("POST", "/api/v1/uploads", { a: 1 }), (err: unknown) => {
          assert.ok(err instanceof HttpError);
          assert.equal(err.status, status);
          assert.equal(err.code, code);
          assert.equal(err.message, `refused with ${status}`);
          assert.deepEqual(err.detail, { hint: "x" });
          assert.equal(isTransient(err), false);
          return true;
        });
        assert.equal(s.hits(), 1);
      } finally {
        c.close();
        await s.close();
      }
    });
  }

  test("a non-JSON error body still gives status and text", async () => {
    const s = await serve((_req, res) => {
      res.writeHead(500, { "content-type": "text/html" });
      res.end("<h1>oops</h1>");
    });
    const c = new HttpClient(s.url, { ...fast, retries: 0 });
    try {
      await assert.rejects(c.request("GET", "/"), (err: unknown) => {
        assert.ok(err instanceof HttpError);
        assert.equal(err.code, "HTTP_500");
        assert.match(err.message, /oops/);
        return true;
      });
    } finally {
      c.close();
      await s.close();
    }
  });
});

describe("HttpClient requests", () => {
  test("sends the bearer token and user agent; base path prefix and accepted statuses", async () => {
    const seen: Array<{ url?: string; auth?: string; ua?: string }> = [];
    const s = await serve((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization, ua: req.headers["user-agent"] });
      res.writeHead(req.method === "HEAD" ? 404 : 200);
      res.end();
    });
    const c = new HttpClient(`${s.url}/prefix/`, { token: "t0k", userAgent: "lxhub-test" });
    try {
      const r = await c.request("HEAD", "/api/v1/blobs/sha256:ab", { accept: [404] });
      assert.equal(r.status, 404);
      assert.deepEqual(seen[0], {
        url: "/prefix/api/v1/blobs/sha256:ab",
        auth: "Bearer t0k",
        ua: "lxhub-test",
      });
    } finally {
      c.close();
      await s.close();
    }
  });

  test("uploads exactly the requested file range", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "lxhub-http-"));
    const file = path.join(dir, "data");
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 251;
    writeFileSync(file, data);
    let got: Buffer | undefined;
    let length: string | undefined;
    const s = await serve((req, res) => {
      const chunks: Buffer[] = [];
      length = req.headers["content-length"];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        got = Buffer.concat(chunks);
        res.writeHead(202);
        res.end();
      });
    });
    const c = new HttpClient(s.url);
    try {
      let progress = 0;
      const start = 1024 * 1024 + 5;
      const end = 3 * 1024 * 1024;
      await c.uploadFileRange("PATCH", "/u", file, start, end, { onUploadProgress: (n) => (progress = n) });
      assert.deepEqual(got, data.subarray(start, end + 1));
      assert.equal(length, String(end - start + 1));
      assert.equal(progress, end - start + 1);
    } finally {
      c.close();
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("getStream asks for a range and streams the answer", async () => {
    const blob = Buffer.from("0123456789abcdefghij");
    const s = await serve((req, res) => {
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      if (!m) {
        res.writeHead(200, { "content-length": blob.length });
        return void res.end(blob);
      }
      const start = Number(m[1]);
      const end = m[2] ? Number(m[2]) : blob.length - 1;
      res.writeHead(206, { "content-range": `bytes ${start}-${end}/${blob.length}` });
      res.end(blob.subarray(start, end + 1));
    });
    const c = new HttpClient(s.url);
    try {
      const r = await c.getStream("/blobs/sha256/x", { range: { start: 5 } });
      assert.equal(r.status, 206);
      assert.equal(r.headers["content-range"], "bytes 5-19/20");
      const chunks: Buffer[] = [];
      for await (const chunk of r.body) chunks.push(chunk as Buffer);
      assert.equal(Buffer.concat(chunks).toString(), "56789abcdefghij");
    } finally {
      c.close();
      await s.close();
    }
  });

  test("getStream follows a redirect to another origin without the token", async () => {
    const target = await serve((req, res) => {
      res.end(req.headers.authorization ?? "no-auth");
    });
    const origin = await serve((req, res) => {
      res.writeHead(302, { location: `${target.url}/signed?x=1` });
      res.end();
    });
    const c = new HttpClient(origin.url, { token: "secret" });
    try {
      const r = await c.getStream("/blobs/sha256/x");
      let text = "";
      for await (const chunk of r.body) text += (chunk as Buffer).toString();
      assert.equal(text, "no-auth");
      assert.equal(r.url, `${target.url}/signed?x=1`);
    } finally {
      c.close();
      await origin.close();
      await target.close();
    }
  });
});

describe("HttpClient TLS", () => {
  let dir = "";
  let cert: Buffer;
  let key: Buffer;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "lxhub-tls-"));
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path.join(dir, "key.pem"),
        "-out",
        path.join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    cert = readFileSync(path.join(dir, "cert.pem"));
    key = readFileSync(path.join(dir, "key.pem"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function tlsServer(maxVersion: "TLSv1.2" | "TLSv1.3") {
    let connections = 0;
    const server = https.createServer({ cert, key, maxVersion }, (_req, res) => res.end("secure"));
    server.on("connection", () => connections++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    return {
      port,
      connections: () => connections,
      close: async () => {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      },
    };
  }

  test("a pinned self-signed certificate is trusted by IP and by name", async () => {
    const s = await tlsServer("TLSv1.3");
    for (const host of ["127.0.0.1", "localhost"]) {
      const c = new HttpClient(`https://${host}:${s.port}`, { ca: cert });
      try {
        const r = await c.request("GET", "/");
        assert.equal(r.body.toString(), "secure");
      } finally {
        c.close();
      }
    }
    await s.close();
  });

  test("without the pin the certificate is refused, and not retried", async () => {
    const s = await tlsServer("TLSv1.3");
    const c = new HttpClient(`https://127.0.0.1:${s.port}`, fast);
    try {
      await assert.rejects(c.request("GET", "/"), (err: NodeJS.ErrnoException) => {
        assert.match(String(err.code), /SELF_SIGNED|UNABLE_TO_VERIFY/);
        assert.match(
          err.message,
          /^the TLS certificate of 127\.0\.0\.1:\d+ is not trusted .*pin the server's certificate with --ca FILE$/,
        );
        assert.equal(isTransient(err), false);
        return true;
      });
      assert.equal(s.connections(), 1);
    } finally {
      c.close();
      await s.close();
    }
  });

  test("a TLS 1.2-only server is refused", async () => {
    const s = await tlsServer("TLSv1.2");
    const c = new HttpClient(`https://127.0.0.1:${s.port}`, { ca: cert, retries: 0 });
    try {
      await assert.rejects(c.request("GET", "/"), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, "EPROTO");
        assert.match(err.message, /^127\.0\.0\.1:\d+ does not offer TLS 1\.3/);
        return true;
      });
    } finally {
      c.close();
      await s.close();
    }
  });
});

describe("HttpClient failures are named in words", () => {
  /** What a failed call was rejected with. */
  async function failure(p: Promise<unknown>): Promise<NetworkError> {
    try {
      await p;
    } catch (err) {
      assert.ok(err instanceof NetworkError, `a NetworkError, not ${String(err)}`);
      return err;
    }
    throw new Error("the call succeeded");
  }

  test("a redirect to file: is refused, not followed, not retried", async () => {
    const s = await serve((_req, res) => res.writeHead(302, { location: "file:///etc/passwd" }).end());
    const c = new HttpClient(s.url, fast);
    try {
      const err = await failure(c.getStream("/images/x"));
      assert.match(
        err.message,
        /^refused: redirect to a non-HTTP URL \(file:\/\/\/etc\/passwd\) from http:\/\/127\.0\.0\.1:\d+\/images\/x$/,
      );
      assert.equal(isTransient(err), false);
      assert.equal(s.hits(), 1);
    } finally {
      c.close();
      await s.close();
    }
  });

  test("a redirect loop and a redirect to an invalid URL are refused", async () => {
    const s = await serve((req, res) => {
      const location = req.url === "/bad" ? "http://[::1" : "/loop";
      res.writeHead(307, { location }).end();
    });
    const c = new HttpClient(s.url, fast);
    try {
      assert.match(
        (await failure(c.getStream("/loop"))).message,
        /^refused: more than 5 redirects, starting at http:\/\/127\.0\.0\.1:\d+\/loop$/,
      );
      assert.match(
        (await failure(c.getStream("/bad"))).message,
        /^refused: redirect to an invalid URL \("http:\/\/\[::1"\)/,
      );
    } finally {
      c.close();
      await s.close();
    }
  });

  test("a connection closed before answering, and one closed mid-body, name the host", async () => {
    const s = await serve((req, res) => {
      if (req.url === "/hangup") return void req.socket.destroy();
      res.writeHead(200, { "content-length": "100000" });
      res.write(Buffer.alloc(1000), () => req.socket.destroy());
    });
    const c = new HttpClient(s.url, { ...fast, retries: 0 });
    try {
      const hangup = await failure(c.request("GET", "/hangup"));
      assert.match(hangup.message, /^127\.0\.0\.1:\d+ closed the connection without answering$/);
      assert.equal(hangup.code, "ECONNRESET");
      const buffered = await failure(c.request("GET", "/cut"));
      assert.match(
        buffered.message,
        /^127\.0\.0\.1:\d+ closed the connection before the answer was complete$/,
      );
      const res = await c.getStream("/cut");
      const streamed = await failure(
        (async () => {
          for await (const chunk of res.chunks()) assert.ok(chunk.length > 0);
        })(),
      );
      assert.match(
        streamed.message,
        /^127\.0\.0\.1:\d+ closed the connection before the answer was complete$/,
      );
      assert.ok(isTransient(streamed));
    } finally {
      c.close();
      await s.close();
    }
  });

  test("a body that stops arriving fails as a stall naming the URL", async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "100000" });
      res.write(Buffer.alloc(1000));
    });
    const c = new HttpClient(s.url, { ...fast, retries: 0, timeoutMs: 300 });
    try {
      const res = await c.getStream("/slow");
      const started = Date.now();
      const err = await failure(
        (async () => {
          for await (const chunk of res.chunks()) assert.ok(chunk.length > 0);
        })(),
      );
      assert.match(err.message, /^stalled: no data for 0\.3 s from http:\/\/127\.0\.0\.1:\d+\/slow$/);
      assert.ok(Date.now() - started < 5000);
      assert.ok(isTransient(err), "a stall is retried (resumed) like a dropped connection");
    } finally {
      c.close();
      await s.close();
    }
  });

  test("a server that does not speak HTTP, and TLS to a plain HTTP port, are named as such", async () => {
    const raw = net.createServer((sock) => sock.end("SSH-2.0-OpenSSH_9.6\r\n"));
    await new Promise<void>((r) => raw.listen(0, "127.0.0.1", r));
    const plain = await serve((_req, res) => res.end("plain"));
    const rawUrl = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
    const c1 = new HttpClient(rawUrl, { ...fast, retries: 0 });
    const c2 = new HttpClient(plain.url.replace("http:", "https:"), { ...fast, retries: 0 });
    try {
      assert.match(
        (await failure(c1.request("GET", "/"))).message,
        /^127\.0\.0\.1:\d+ answered with something that is not HTTP/,
      );
      assert.match(
        (await failure(c2.request("GET", "/"))).message,
        /^127\.0\.0\.1:\d+ does not answer TLS on this port/,
      );
    } finally {
      c1.close();
      c2.close();
      raw.close();
      await plain.close();
    }
  });

  test("DNS and certificate failures (node's error shapes) become sentences naming the host", () => {
    const url = "https://images.example.org:8443/streams/v1/index.json";
    const cases: [string, string, RegExp][] = [
      [
        "ENOTFOUND",
        "getaddrinfo ENOTFOUND images.example.org",
        /^no such host: images\.example\.org \(the DNS lookup/,
      ],
      [
        "EAI_AGAIN",
        "getaddrinfo EAI_AGAIN images.example.org",
        /^the DNS lookup of images\.example\.org failed for now/,
      ],
      ["ECONNRESET", "read ECONNRESET", /^the connection to images\.example\.org:8443 was reset/],
      ["ETIMEDOUT", "connect ETIMEDOUT 10.0.0.1:8443", /^connecting to images\.example\.org:8443 timed out/],
      ["EHOSTUNREACH", "connect EHOSTUNREACH", /^images\.example\.org:8443 is unreachable/],
      [
        "CERT_HAS_EXPIRED",
        "certificate has expired",
        /^the TLS certificate of images\.example\.org:8443 has expired$/,
      ],
      [
        "ERR_TLS_CERT_ALTNAME_INVALID",
        "Hostname/IP does not match",
        /is for other host names, not images\.example\.org/,
      ],
    ];
    for (const [code, message, want] of cases) {
      const err = networkError(Object.assign(new Error(message), { code }), url) as NetworkError;
      assert.ok(err instanceof NetworkError);
      assert.match(err.message, want);
      assert.doesNotMatch(err.message, new RegExp(code), "the code is not the message");
      assert.equal(err.code, code, "the code is kept for retry decisions");
      assert.equal(err.url, url);
    }
    const fsError = Object.assign(new Error("EACCES: permission denied, open '/x'"), {
      code: "EACCES",
      syscall: "open",
      path: "/x",
    });
    assert.equal(networkError(fsError, url), fsError, "a file error is not a network error");
  });
});
