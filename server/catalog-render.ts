import { listImages } from "../simplestreams/images.js";
import { decodeJson, parseProducts } from "../simplestreams/parse.js";
import type { ProductDoc, StreamImage } from "../simplestreams/types.js";
import { compareBytewise, compareVersionKeys, versionDate } from "../simplestreams/version.js";

/**
 * The web catalog's markup (server/catalog-page.ts serves it): products from a generation's own
 * `images.json` (aliases as `listImages` gives them, as LXD sees them), grouped by os and
 * release. Pure, so it runs in a worker thread (server/catalog-worker.ts): parsing a large
 * `images.json` takes hundreds of milliseconds the read path must not wait on.
 *
 * Every catalog string goes through `markup`'s escaping: release titles, requirement values and
 * mirrored upstream text are free text (names.ts), and the Host header is the client's.
 */

/** Text already escaped (or markup written here). */
export class Html {
  constructor(readonly text: string) {}
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escaped for both text and quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

type Part = Html | string | number | readonly Part[];

function part(v: Part): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return (v as readonly Part[]).map(part).join("");
  return escapeHtml(String(v as string | number));
}

/** Markup with every interpolated value escaped, unless it is markup made by `markup` itself. */
export function markup(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => (out += part(v) + strings[i + 1]!));
  return new Html(out);
}

/** The remote name the copy-paste lines use. */
export const REMOTE = "lxhub";

interface VersionView {
  key: string;
  date: string;
  size: number;
  fingerprints: { type: string; fingerprint: string }[];
  files: { name: string; ftype: string; size: number; sha256: string }[];
}

interface ProductView {
  key: string;
  os: string;
  release: string;
  releaseTitle: string;
  arch: string;
  variant: string;
  /** As LXD derives them: the short ones this product won, then the `/<arch>` ones. */
  aliases: string[];
  requirements: [string, string][];
  /** Newest first. */
  versions: VersionView[];
}

/** The products' markup (it names no origin) and how many there are, from a generation's `images.json`. */
export function renderProducts(imagesJson: Uint8Array): { count: number; main: string } {
  const products = parseProducts(decodeJson(Buffer.from(imagesJson)));
  const images = new Map<string, StreamImage[]>();
  for (const img of listImages(products, { metaFtype: "lxd.tar.xz" })) {
    const list = images.get(img.productKey);
    if (list) list.push(img);
    else images.set(img.productKey, [img]);
  }
  const views: ProductView[] = [];
  for (const [key, p] of products.products) views.push(productView(key, p, images.get(key) ?? []));
  views.sort(
    (a, b) =>
      compareBytewise(a.os, b.os) ||
      compareBytewise(a.release, b.release) ||
      compareBytewise(a.variant, b.variant) ||
      compareBytewise(a.arch, b.arch),
  );
  const main = groups(views).map(
    (g) => markup`<section class="group" data-group>
      <h2>${g.os} ${g.release} <small>${g.titles.join(" / ")}</small></h2>
      ${g.products.map(productHtml)}
    </section>
    `,
  );
  return { count: views.length, main: markup`${main}`.text };
}

/** `mine`: the product's images as `listImages` gives them (aliases won, fingerprints). */
function productView(key: string, p: ProductDoc, mine: StreamImage[]): ProductView {
  const short = new Set<string>();
  const medium = new Set<string>();
  for (const img of mine) for (const a of img.aliases) (a.medium ? medium : short).add(a.name);
  const requirements = p.lxdRequirements.size ? p.lxdRequirements : p.requirements;
  const versions = [...p.versions]
    .sort(([a], [b]) => compareVersionKeys(b, a))
    .map(([vkey, v]): VersionView => {
      // One row per file: the lxd.tar.xz and incus.tar.xz items of a version name the same file.
      const byPath = new Map<string, VersionView["files"][number]>();
      for (const i of v.items.values()) {
        const seen = byPath.get(i.path);
        if (seen) seen.ftype += `, ${i.ftype}`;
        else
          byPath.set(i.path, {
            name: i.path.slice(i.path.lastIndexOf("/") + 1),
            ftype: i.ftype,
            size: i.size,
            sha256: i.sha256,
          });
      }
      const files = [...byPath.values()].sort((a, b) => compareBytewise(a.name, b.name));
      return {
        key: vkey,
        date: versionDate(vkey)?.toISOString().slice(0, 10) ?? "",
        size: files.reduce((n, f) => n + f.size, 0),
        fingerprints: mine
          .filter((i) => i.versionKey === vkey)
          .map((i) => ({ type: i.rootType, fingerprint: i.fingerprint })),
        files,
      };
    });
  return {
    key,
    os: p.os,
    release: p.release,
    releaseTitle: p.releaseTitle,
    arch: p.arch,
    variant: p.variant,
    aliases: [...short, ...medium],
    requirements: [...requirements],
    versions,
  };
}

/** Exact sizes, grouped by thousands: `312,456,789 bytes`. */
const GROUPED = new Intl.NumberFormat("en");
const size = (n: number) => `${GROUPED.format(n)} bytes`;

/** The name `lxc launch` and `lxhub pull` take: the first alias LXD gives it, else its fingerprint. */
function launchName(p: ProductView): string {
  return p.aliases[0] ?? p.versions[0]?.fingerprints[0]?.fingerprint.slice(0, 12) ?? p.key;
}

function productHtml(p: ProductView): Html {
  const name = launchName(p);
  const search = [p.key, p.os, p.release, p.releaseTitle, p.arch, p.variant, ...p.aliases]
    .join(" ")
    .toLowerCase();
  return markup`<article class="product" id="${p.key}" data-search="${search}">
<h3>${p.os}/${p.release}/${p.arch}/${p.variant}</h3>
<dl>
<dt>Aliases</dt><dd>${p.aliases.length ? p.aliases.map((a, i) => markup`${i ? ", " : ""}<code>${a}</code>`) : "none"}</dd>
<dt>Architecture</dt><dd><code>${p.arch}</code></dd>
<dt>Variant</dt><dd><code>${p.variant}</code></dd>
${
  p.requirements.length
    ? markup`<dt>Requirements</dt>
        <dd>${p.requirements.map(([k, v], i) => markup`${i ? ", " : ""}<code>${k}=${v}</code>`)}</dd>`
    : ""
}
</dl>
<pre class="lines"><code>lxc launch ${REMOTE}:${name} c1</code>
<code>incus launch ${REMOTE}:${name} c1</code>
<code>lxhub pull ${REMOTE} ${name} ./rootfs</code></pre>
<details${p.versions.length === 1 ? markup` open` : ""}><summary>${p.versions.length} version${p.versions.length === 1 ? "" : "s"}, newest ${p.versions[0]?.key ?? ""}</summary>
${p.versions.map(
  (v) =>
    markup`<section class="version">
      <h4>${v.key} <small>${v.date} · ${size(v.size)}</small></h4>
      <p>
        ${v.fingerprints.map((f) => markup`fingerprint (${f.type}) <code class="hash">${f.fingerprint}</code><br />`)}
      </p>
      <table>
        <thead>
          <tr>
            <th>file</th>
            <th>type</th>
            <th>size</th>
            <th>sha256</th>
          </tr>
        </thead>
        <tbody>
          ${v.files.map(
            (f) =>
              markup`<tr>
                <td>${f.name}</td>
                <td>${f.ftype}</td>
                <td>${size(f.size)}</td>
                <td><code class="hash">${f.sha256}</code></td>
              </tr> `,
          )}
        </tbody>
      </table>
    </section> `,
)}</details>
</article>
`;
}

/** Products grouped by os and release, in the clients' order. */
function groups(
  products: ProductView[],
): { os: string; release: string; titles: string[]; products: ProductView[] }[] {
  const out: ReturnType<typeof groups> = [];
  for (const p of products) {
    const last = out[out.length - 1];
    if (last && last.os === p.os && last.release === p.release) {
      last.products.push(p);
      if (!last.titles.includes(p.releaseTitle)) last.titles.push(p.releaseTitle);
    } else out.push({ os: p.os, release: p.release, titles: [p.releaseTitle], products: [p] });
  }
  return out;
}
