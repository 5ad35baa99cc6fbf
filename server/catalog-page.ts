import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { gzip } from "node:zlib";
import {
  JWKS_PATH,
  PRODUCTS_PATH,
  STATEMENT_PATH,
  servedDocument,
  type Generation,
  type ServedDocument,
} from "../registry/indexer.js";
import { Html, markup, REMOTE } from "./catalog-render.js";

/**
 * The web catalog (`GET /`, `/images/`): one server-rendered HTML page of what the current
 * generation publishes, read back from its own `images.json` (so the page shows exactly what
 * LXD and Incus see, aliases as `listImages` gives them) and the key id of its statement. No
 * framework and no build step: the page is plain HTML, styled by `/catalog.css`; `/catalog.js`
 * only adds the filter box, so everything else works without JavaScript.
 *
 * Every catalog string goes through `markup`'s escaping: release titles, requirement values and
 * mirrored upstream text are free text (names.ts), and the Host header is the client's.
 *
 * The products' markup is made once per generation in a worker thread (catalog-render.ts); each
 * origin adds the header lines (the copy-paste lines name the server). The page is kept with its
 * generation: a request costs a map lookup, like the documents.
 */

/** What the page shows, from one generation (independent of the origin). */
interface CatalogModel {
  serial: number;
  updated: string;
  keyId: string;
  /** How many products. */
  count: number;
  /** The products' markup, grouped by os and release (it names no origin). */
  main: Html;
}

function keyIdOf(gen: Generation): string {
  const jws = gen.documents.get(STATEMENT_PATH)?.body.toString("utf8") ?? "";
  try {
    const header = JSON.parse(Buffer.from(jws.split(".")[0] ?? "", "base64url").toString("utf8")) as {
      kid?: unknown;
    };
    return typeof header.kid === "string" ? header.kid : "";
  } catch {
    return "";
  }
}

/** `renderProducts` in a worker thread: the read path goes on answering meanwhile. */
function renderInWorker(imagesJson: Buffer): Promise<{ count: number; main: string }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./catalog-worker.js", import.meta.url), { workerData: imagesJson });
    worker.once("message", resolve);
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`the catalog worker exited with code ${code}`)));
  });
}

async function modelOf(gen: Generation): Promise<CatalogModel> {
  const doc = gen.documents.get(PRODUCTS_PATH);
  const { count, main } = doc ? await renderInWorker(doc.body) : { count: 0, main: "" };
  return {
    serial: gen.serial,
    updated: gen.builtAt.toISOString(),
    keyId: keyIdOf(gen),
    count,
    main: new Html(main),
  };
}

/** The page for one origin (`https://host:port`, no trailing slash). */
function renderCatalog(model: CatalogModel, origin: string): string {
  const docs = [
    ["streams/v1/index.json", "index (simplestreams)"],
    ["streams/v1/images.json", "products (simplestreams)"],
    ["streams/v1/statement.jws", "signed statement (lxhub pull)"],
    [JWKS_PATH, "statement signing keys (JWKS)"],
    ["streams/v1/index.sjson", "index, OpenPGP clear-signed"],
    ["streams/v1/images.sjson", "products, OpenPGP clear-signed"],
    ["streams/v1/signing-key.asc", "OpenPGP signing key"],
    [".well-known/lxhub/server.crt", "TLS certificate"],
  ];
  const key = model.keyId || "THUMBPRINT";
  const page = markup`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>lxhub images</title>
        <link rel="stylesheet" href="/catalog.css" />
        <script src="/catalog.js" defer></script>
      </head>
      <body>
        <header>
          <h1>lxhub images</h1>
          <p>
            ${model.count} product${model.count === 1 ? "" : "s"} · serial ${model.serial}
            · updated ${model.updated}
          </p>
        </header>
        <section id="use">
          <h2>Use this server</h2>
          <p>
            LXD (<code>lxc</code>) and Incus take it as a simplestreams remote over <code>https://</code>; a
            self-signed certificate is trusted once it sits in the client's <code>servercerts</code> folder
            (compare its sha256 fingerprint with the one <code>lxhub serve</code> printed):
          </p>
          <pre
            class="lines"
          ><code>mkdir -p ~/.config/lxc/servercerts &amp;&amp; curl -k ${origin}/.well-known/lxhub/server.crt -o ~/.config/lxc/servercerts/${REMOTE}.crt</code>
<code>lxc remote add ${REMOTE} ${origin} --protocol=simplestreams --public</code>
<code>mkdir -p ~/.config/incus/servercerts &amp;&amp; curl -k ${origin}/.well-known/lxhub/server.crt -o ~/.config/incus/servercerts/${REMOTE}.crt</code>
<code>incus remote add ${REMOTE} ${origin} --protocol=simplestreams --public</code>
<code>lxhub remote add ${REMOTE} ${origin} --key ${key}</code></pre>
          <p>Signed documents:</p>
          <ul class="links">
            ${docs.map(([path, what]) => markup`<li><a href="/${path!}">${what!}</a> <code>/${path!}</code></li> `)}
          </ul>
        </section>
        <p id="filter-row" hidden>
          <label for="filter">Filter</label>
          <input
            id="filter"
            type="search"
            placeholder="os, release, alias, architecture…"
            autocomplete="off"
          />
          <span id="shown"></span>
        </p>
        <main>
          ${model.count === 0 ? markup`<p>Nothing is published yet.</p>` : ""} ${model.main}
        </main>
      </body>
    </html> `;
  return page.text;
}

/** The page's stylesheet: no inline style, so the CSP needs no `'unsafe-inline'`. */
const CSS = `:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { max-width: 72rem; margin: 0 auto; padding: 1rem; line-height: 1.4; }
[hidden] { display: none !important; }
pre.lines { overflow-x: auto; padding: .5rem; border: 1px solid #8884; border-radius: 4px; }
.product { border-top: 1px solid #8884; padding: .5rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .3rem 0; }
dt { font-weight: 600; }
dd { margin: 0; }
table { border-collapse: collapse; font-size: .9em; }
td, th { text-align: left; padding: .1rem .6rem .1rem 0; }
.hash { font-size: .85em; word-break: break-all; }
h2 small, h4 small { font-weight: normal; opacity: .75; }
#filter { width: 20rem; max-width: 100%; }
`;

/** The filter: shows the box (hidden without JavaScript), hides products that miss a typed word. */
const JS = `"use strict";
(() => {
  const row = document.getElementById("filter-row");
  const box = document.getElementById("filter");
  const shown = document.getElementById("shown");
  if (!row || !box || !shown) return;
  row.hidden = false;
  const apply = () => {
    const words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let n = 0;
    for (const group of document.querySelectorAll("[data-group]")) {
      let any = false;
      for (const p of group.querySelectorAll("[data-search]")) {
        const hit = words.every((w) => p.dataset.search.includes(w));
        p.hidden = !hit;
        if (hit) { any = true; n++; }
      }
      group.hidden = !any;
    }
    shown.textContent = words.length ? n + " shown" : "";
  };
  box.addEventListener("input", apply);
  apply();
})();
`;

/** `/catalog.css` and `/catalog.js`: the same bytes for the process's life. */
export const CATALOG_ASSETS: ReadonlyMap<string, ServedDocument> = new Map([
  ["catalog.css", servedDocument(Buffer.from(CSS), "text/css; charset=utf-8")],
  ["catalog.js", servedDocument(Buffer.from(JS), "text/javascript; charset=utf-8")],
]);

/**
 * No inline script or style, nothing from elsewhere: a string that escaped escaping still could
 * not run (defence in depth).
 */
export const CATALOG_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'none'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * Origins rendered per generation. Past them a new Host header gets the page that says `HOST`
 * (one per scheme), so a client inventing Host headers costs at most this many renders per
 * publish; with `--public-url` there is one.
 */
const MAX_ORIGINS = 16;
const gzipAsync = promisify(gzip);
const cache = new WeakMap<
  Generation,
  { model: Promise<CatalogModel>; pages: Map<string, Promise<ServedDocument>> }
>();

/** The page as served: its gzip form made off the event loop (a large catalog takes a while). */
async function servePage(text: string): Promise<ServedDocument> {
  const body = Buffer.from(text);
  const sha256 = createHash("sha256").update(body).digest("hex");
  const compressed = await gzipAsync(body, { level: 9 });
  return { body, gzip: compressed, etag: `"${sha256}"`, sha256, contentType: "text/html; charset=utf-8" };
}

/**
 * The catalog page of a generation for the request's origin (`originOf`): rendered on first use,
 * then kept with the generation (concurrent first requests share one render).
 */
export function catalogPage(
  gen: Generation,
  req: { publicUrl: string | undefined; host: string | undefined; tls: boolean },
): Promise<ServedDocument> {
  let entry = cache.get(gen);
  if (!entry) {
    // A document that cannot be read rejects (500), it does not throw here.
    entry = { model: modelOf(gen), pages: new Map() };
    cache.set(gen, entry);
  }
  let origin = originOf(req.publicUrl, req.host, req.tls);
  let page = entry.pages.get(origin);
  if (!page) {
    if (entry.pages.size >= MAX_ORIGINS) {
      origin = originOf(req.publicUrl, undefined, req.tls);
      page = entry.pages.get(origin);
    }
    if (!page) {
      const at = origin;
      page = entry.model.then((model) => servePage(renderCatalog(model, at)));
      entry.pages.set(origin, page);
    }
  }
  return page;
}

/** A Host header that is a host name or IP literal with an optional port; anything else is not echoed. */
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

/**
 * The base URL the copy-paste lines name: the configured public URL, else the request's scheme
 * and Host header (when it looks like a host; else the placeholder `HOST`).
 */
export function originOf(publicUrl: string | undefined, host: string | undefined, tls: boolean): string {
  if (publicUrl) return publicUrl;
  return `${tls ? "https" : "http"}://${host !== undefined && HOST_RE.test(host) ? host : "HOST"}`;
}
