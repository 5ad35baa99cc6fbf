/**
 * The web catalog (`GET /`, `/images/`) in a real browser: Debian's Chromium (`/usr/bin/chromium`,
 * package `chromium`) driven by playwright-core, against a real `lxhub serve` holding several
 * products, one of them with a hostile release title and requirement value. A screenshot of the
 * page is kept under `test-artifacts/` (gitignored) and its path printed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { chromium, type Browser } from "playwright-core";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { checkAnswer } from "../support/openapi.js";
import { publishTinyImage } from "../support/tiny-image.js";
import { rawGet, type RawAnswer } from "../support/raw-http.js";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = fileURLToPath(new URL("../../../test-artifacts/", import.meta.url));

/** Text that would run if it reached the page as markup, in an element or in an attribute. */
const HOSTILE_TITLE = `<script>window.__pwned=1</script>"'><img src=x onerror="window.__pwned=2">&amp;`;
const HOSTILE_REQUIREMENT = `"><script>window.__pwned=3</script>`;

function checked(urlPath: string, a: RawAnswer): RawAnswer {
  checkAnswer("GET", urlPath, {
    status: a.status,
    contentType: String(a.headers["content-type"] ?? ""),
    json: undefined,
  });
  return a;
}

describe("web catalog", () => {
  let s: RunningServer;
  let work: string;
  let browser: Browser;
  let keyId: string;
  let filePath: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-webcatalog-"));
    s = await startServer();
    const admin = await createToken(s.dataDir, "admin");
    const img = (n: string) => path.join(work, n);
    await publishTinyImage(s.httpUrl, admin, img("tiny"), "20240101_0000", {
      aliases: ["tiny/1"],
      releaseTitle: HOSTILE_TITLE,
      requirements: { note: HOSTILE_REQUIREMENT },
    });
    await publishTinyImage(s.httpUrl, admin, img("debian"), "20240301_0000", {
      os: "debian",
      release: "12",
      aliases: ["debian/12", "debian/bookworm"],
    });
    for (const v of ["20240401_0000", "20240402_0000"])
      await publishTinyImage(s.httpUrl, admin, img(`alpine-${v}`), v, {
        os: "alpine",
        release: "3.20",
        distinct: true,
        aliases: ["alpine/3.20"],
      });
    const jwks = (await (await fetch(`${s.httpUrl}/.well-known/lxhub/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    keyId = jwks.keys[0]!.kid;
    filePath = "/images/debian/12/amd64/default/20240301_0000/rootfs.tar.xz";
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser?.close();
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("answers /, /images and /images/ with the same page, with a CSP, nosniff, ETag, 304 and gzip", async () => {
    const page = checked("/", await rawGet(`${s.httpUrl}/`));
    assert.equal(page.status, 200);
    assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
    assert.match(String(page.headers["content-security-policy"]), /default-src 'none'; script-src 'self'/);
    assert.equal(page.headers["x-content-type-options"], "nosniff");
    for (const p of ["/images", "/images/"]) {
      const again = checked("/images", await rawGet(`${s.httpUrl}${p}`));
      assert.equal(again.status, 200, p);
      assert.equal(again.headers.etag, page.headers.etag, p);
    }
    const fresh = checked("/", await rawGet(`${s.httpUrl}/`, { "if-none-match": String(page.headers.etag) }));
    assert.equal(fresh.status, 304);
    const gz = await rawGet(`${s.httpUrl}/`, { "accept-encoding": "gzip" });
    assert.equal(gz.headers["content-encoding"], "gzip");
    assert.deepEqual(gunzipSync(gz.body), page.body);
    for (const asset of ["/catalog.js", "/catalog.css"]) {
      const a = checked(asset, await rawGet(`${s.httpUrl}${asset}`));
      assert.equal(a.status, 200, asset);
      assert.equal(a.headers["x-content-type-options"], "nosniff");
    }
    // Image files below /images/ are still files.
    const file = checked(filePath, await rawGet(`${s.httpUrl}${filePath}`));
    assert.equal(file.status, 200);
    assert.equal(file.headers["content-type"], "application/octet-stream");
  });

  it("escapes catalog text and a hostile Host header in the markup", async () => {
    const html = (await rawGet(`${s.httpUrl}/`)).body.toString("utf8");
    assert.ok(!html.includes("window.__pwned=1</script>"), "release title reached the page as markup");
    assert.ok(!html.includes(HOSTILE_REQUIREMENT), "requirement value reached the page as markup");
    assert.ok(html.includes("&lt;script&gt;window.__pwned=1&lt;/script&gt;&quot;&#39;&gt;&lt;img"));
    const evil = (
      await rawGet(`${s.httpUrl}/`, { host: `"><script>window.__pwned=4</script>` })
    ).body.toString("utf8");
    assert.ok(!evil.includes("__pwned=4"), "the Host header was echoed");
    assert.ok(evil.includes("lxc remote add lxhub http://HOST --protocol=simplestreams --public"));
  });

  it("renders every product, its lines and the hostile text as text in Chromium; the filter hides the rest", async (t) => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      // A failed load is checked by URL below (the browser asks for /favicon.ico on its own).
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && new URL(r.url()).pathname !== "/favicon.ico")
        errors.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(`${s.httpUrl}/`);
    const names = await page.locator("article.product h3").allInnerTexts();
    assert.deepEqual(names, ["alpine/3.20/amd64/default", "debian/12/amd64/default", "tiny/1/amd64/default"]);
    const text = await page.locator("body").innerText();
    const origin = s.httpUrl;
    for (const line of [
      `lxc remote add lxhub ${origin} --protocol=simplestreams --public`,
      `incus remote add lxhub ${origin} --protocol=simplestreams --public`,
      `lxhub remote add lxhub ${origin} --key ${keyId}`,
      `curl -k ${origin}/.well-known/lxhub/server.crt -o ~/.config/lxc/servercerts/lxhub.crt`,
      "lxc launch lxhub:debian/12 c1",
      "incus launch lxhub:alpine/3.20 c1",
      "lxhub pull lxhub tiny/1 ./rootfs",
    ])
      assert.ok(text.includes(line), `missing: ${line}`);
    // Hostile text is shown as text, and nothing of it ran or became an element.
    assert.ok(text.includes(HOSTILE_TITLE), "the hostile release title is not shown as text");
    assert.ok(text.includes(`note=${HOSTILE_REQUIREMENT}`), "the hostile requirement is not shown as text");
    assert.equal(await page.evaluate(() => (window as { __pwned?: unknown }).__pwned), undefined);
    assert.equal(await page.locator("script").count(), 1, "only /catalog.js");
    assert.equal(await page.locator("img").count(), 0);
    // Versions: dates, sizes, fingerprints, files with their sha256.
    const alpine = page.locator("article.product", { hasText: "alpine/3.20/amd64/default" });
    assert.match(await alpine.innerText(), /2 versions, newest 20240402_0000/);
    await alpine.locator("summary").click();
    assert.match(await alpine.innerText(), /20240401_0000 2024-04-01 · \d+ bytes/);
    assert.match(await alpine.innerText(), /rootfs\.tar\.xz\s+root\.tar\.xz\s+\d+ bytes\s+[0-9a-f]{64}/);
    assert.match(await alpine.innerText(), /fingerprint \(root\.tar\.xz\) [0-9a-f]{64}/);
    // Links to the signed documents and the keys.
    for (const href of [
      "/streams/v1/statement.jws",
      "/.well-known/lxhub/jwks.json",
      "/streams/v1/signing-key.asc",
    ])
      assert.equal(await page.locator(`a[href="${href}"]`).count(), 1, href);

    await page.locator("#filter").fill("debian");
    assert.deepEqual(await page.locator("article.product:visible h3").allInnerTexts(), [
      "debian/12/amd64/default",
    ]);
    assert.equal(await page.locator("section.group:visible").count(), 1);
    await page.locator("#filter").fill("");
    assert.equal(await page.locator("article.product:visible").count(), 3);
    assert.deepEqual(errors, [], "no script error and no CSP violation");

    await mkdir(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, "web-catalog.png");
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    console.log(`web catalog screenshot: ${shot}`);
    await page.close();
  });

  it("lists every product without JavaScript (the filter box stays hidden)", async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    await page.goto(`${s.httpUrl}/images/`);
    assert.equal(await page.locator("article.product:visible").count(), 3);
    assert.equal(await page.locator("#filter").isVisible(), false);
    assert.ok((await page.locator("body").innerText()).includes("lxc launch lxhub:debian/12 c1"));
    await context.close();
  });

  it("names the https origin when loaded over TLS", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${s.httpsUrl}/`);
    assert.ok(
      (await page.locator("body").innerText()).includes(
        `lxc remote add lxhub ${s.httpsUrl} --protocol=simplestreams --public`,
      ),
    );
    await context.close();
  });

  it("renders at most 16 origins per generation: further Host headers get the page that says HOST", async () => {
    const lines: string[] = [];
    for (let i = 1; i <= 20; i++) {
      const html = (await rawGet(`${s.httpUrl}/`, { host: `h${i}.example:8443` })).body.toString("utf8");
      lines.push(/lxc remote add lxhub (\S+) /.exec(html)?.[1] ?? "");
    }
    assert.equal(lines[0], "http://h1.example:8443");
    assert.equal(lines[19], "http://HOST");
    // What was rendered stays: the first origin still gets its own page.
    const first = (await rawGet(`${s.httpUrl}/`, { host: "h1.example:8443" })).body.toString("utf8");
    assert.ok(first.includes("lxc remote add lxhub http://h1.example:8443 "));
  });
});
