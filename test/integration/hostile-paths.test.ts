import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { publishTinyImage } from "../support/tiny-image.js";

/** A GET with the path sent exactly as written (fetch and URL would resolve `..` first). */
function rawGet(base: string, rawPath: string): Promise<{ status: number; body: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: rawPath, method: "GET", agent: false },
      (res) => {
        let body = "";
        res.setEncoding("latin1").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** Every way of writing `..` and `/` that a server might decode into a step out of its tree. */
const DOTDOT = [
  "..",
  "%2e%2e",
  "%2E%2E",
  ".%2e",
  "%2e.",
  "%252e%252e",
  "%25252e%25252e",
  "%c0%ae%c0%ae",
  "%e0%80%ae%e0%80%ae",
  "..%00",
  "%2e%2e%00",
  "....",
];
const SLASH = ["/", "%2f", "%2F", "%252f", "\\", "%5c", "%5C", "%c0%af", "//", "/./"];
const PREFIXES = [
  "/",
  "/images/tiny/1/amd64/default/20240101_0000/",
  "/images/",
  "/blobs/sha256/",
  "/streams/v1/",
  "/.well-known/lxhub/",
  "/api/v1/",
  "/api/v1/uploads/",
  "/api/v1/products/tiny/1/amd64/default/versions/",
];
const TARGETS = ["catalog.sqlite", "keys/token-secret", "tls/server.key", "keys/signing", "etc/passwd"];

function hostilePaths(kid: string): string[] {
  const out = new Set<string>();
  const targets = [...TARGETS, `keys/signing/${kid}.jwk`];
  for (const prefix of PREFIXES) {
    for (const dd of DOTDOT) {
      for (const sl of SLASH) {
        for (const depth of [1, 4]) {
          for (const target of targets) {
            out.add(prefix + `${dd}${sl}`.repeat(depth) + target.replaceAll("/", sl));
          }
        }
      }
    }
  }
  // The data folder's own names, as they are on disk, straight from the root or under served prefixes.
  for (const prefix of PREFIXES) {
    for (const target of [
      ...targets,
      "uploads",
      "tmp",
      "blobs/sha256",
      "keys",
      "tls",
      "catalog.sqlite-wal",
    ]) {
      out.add(prefix + target);
    }
  }
  out.add("/%00");
  out.add("/images/%00/x");
  out.add("/streams/v1/index.json%00.txt");
  out.add("/streams/v1/index.json%2500");
  out.add("/%");
  out.add("/images/%zz");
  out.add("/api/v1/products/%c0%ae/1/amd64/default");
  out.add("/api/v1/uploads/%ff");
  return [...out];
}

describe("hostile paths never reach outside the served tree", () => {
  let s: RunningServer;
  let work: string;
  let secrets: { name: string; text: string }[];
  let kid: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-hostile-"));
    s = await startServer();
    const admin = await createToken(s.dataDir, "admin");
    await publishTinyImage(s.httpUrl, admin, path.join(work, "img"));

    const keyDir = path.join(s.dataDir, "keys", "signing");
    const [keyFile] = await readdir(keyDir);
    kid = keyFile!.replace(/\.jwk$/, "");
    const jwk = JSON.parse(await readFile(path.join(keyDir, keyFile!), "utf8")) as { d: string };
    const pem = await readFile(path.join(s.dataDir, "tls", "server.key"), "utf8");
    secrets = [
      { name: "signing key (d)", text: jwk.d },
      {
        name: "token secret",
        text: (await readFile(path.join(s.dataDir, "keys", "token-secret"), "utf8")).trim(),
      },
      { name: "TLS key", text: pem.split("\n")[1] ?? pem },
      { name: "catalog database", text: "SQLite format 3" },
      { name: "/etc/passwd", text: "root:x:0:0" },
    ];
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("answers every encoded traversal with a 4xx, never a 5xx, and never with a secret", async () => {
    const paths = hostilePaths(kid);
    assert.ok(paths.length > 2000, `${paths.length} paths`);
    const failures: string[] = [];
    for (const p of paths) {
      const r = await rawGet(s.httpUrl, p);
      if (r.status < 400 || r.status >= 500) failures.push(`${r.status} ${p}`);
      for (const secret of secrets) {
        if (r.body.includes(secret.text)) failures.push(`${p} served the ${secret.name}`);
      }
    }
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} of ${paths.length} paths failed`);
  });

  it("still serves the real files next to them", async () => {
    assert.equal((await rawGet(s.httpUrl, "/streams/v1/index.json")).status, 200);
    const f = await rawGet(s.httpUrl, "/images/tiny/1/amd64/default/20240101_0000/rootfs.tar.xz");
    assert.equal(f.status, 200);
    assert.equal(
      (await rawGet(s.httpUrl, "//images//tiny/1/amd64/default/20240101_0000/lxd.tar.xz")).status,
      200,
    );
  });
});
