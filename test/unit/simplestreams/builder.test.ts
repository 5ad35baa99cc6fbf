import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildDocuments,
  parseIndex,
  parseProducts,
  rfc2822,
  StreamValidationError,
  type BuildOptions,
  type StreamFile,
  type StreamProduct,
} from "../../../simplestreams/index.js";
import { at, fingerprintOf, json, productOf, sha256, UPDATED, type ProductSpec } from "./fixtures.js";

const ACME: ProductSpec = { os: "Acme", release: "1", arch: "amd64", requirements: { secureboot: "false" } };
const INDEX = "streams/v1/index.json";
const IMAGES = "streams/v1/images.json";
const LXC_SYSTEM = "meta/1.0/index-system";
const LXC_USER = "meta/1.0/index-user";

function acme(): StreamProduct {
  return productOf(ACME, { "20240201_0000": { roots: ["squashfs", "disk-kvm.img"] } });
}

function build(products: StreamProduct[], opts: Partial<BuildOptions> = {}) {
  const docs = buildDocuments(products, { updated: UPDATED, ...opts });
  return { docs, index: json(docs.files, INDEX), images: json(docs.files, opts.productsPath ?? IMAGES) };
}

function refuses(
  products: StreamProduct[],
  pattern: RegExp,
  opts: Partial<BuildOptions> = {},
): StreamValidationError {
  let caught: unknown;
  try {
    buildDocuments(products, { updated: UPDATED, ...opts });
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof StreamValidationError,
    `expected a StreamValidationError, got ${String(caught)}`,
  );
  assert.match(caught.message, pattern);
  return caught;
}

function fileOfType(p: StreamProduct, version: string, ftype: string): StreamFile {
  const f = p.versions.find((v) => v.name === version)?.files.find((x) => x.ftype === ftype);
  if (!f) throw new Error(`fixture has no ${ftype} in ${version}`);
  return f;
}

test("§2.6: index and products documents have the shape every client reads", () => {
  const { docs, index, images } = build([acme()]);
  assert.deepEqual([...docs.files.keys()].sort(), [LXC_SYSTEM, LXC_USER, IMAGES, INDEX]);

  assert.equal(index["format"], "index:1.0");
  assert.equal(index["updated"], "Thu, 01 Feb 2024 12:30:05 +0000");
  assert.deepEqual(at(index, "index", "images"), {
    datatype: "image-downloads",
    format: "products:1.0",
    path: "streams/v1/images.json",
    products: ["Acme:1:amd64:default"],
    updated: "Thu, 01 Feb 2024 12:30:05 +0000",
  });

  assert.equal(images["content_id"], "images");
  assert.equal(images["datatype"], "image-downloads");
  assert.equal(images["format"], "products:1.0");
  assert.equal(images["updated"], "Thu, 01 Feb 2024 12:30:05 +0000");
  const product = at(images, "products", "Acme:1:amd64:default") as Record<string, unknown>;
  assert.equal(product["aliases"], "acme/1/default,acme/1");
  assert.equal(product["arch"], "amd64");
  assert.equal(product["os"], "Acme");
  assert.equal(product["release"], "1");
  assert.equal(product["release_title"], "1");
  assert.equal(product["variant"], "default");
  assert.deepEqual(product["lxd_requirements"], { secureboot: "false" });
  assert.deepEqual(product["requirements"], { secureboot: "false" });
  assert.equal(product["support_eol"], undefined);

  const items = at(product, "versions", "20240201_0000", "items") as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(items).sort(), ["disk.qcow2", "incus.tar.xz", "lxd.tar.xz", "root.squashfs"]);
  const dir = "images/acme/1/amd64/default/20240201_0000";
  const meta = fileOfType(acme(), "20240201_0000", "lxd.tar.xz");
  assert.deepEqual(items["lxd.tar.xz"], {
    ftype: "lxd.tar.xz",
    path: `${dir}/lxd.tar.xz`,
    sha256: meta.sha256,
    size: meta.size,
    combined_squashfs_sha256: fingerprintOf(ACME, "20240201_0000", "squashfs"),
    "combined_disk-kvm-img_sha256": fingerprintOf(ACME, "20240201_0000", "disk-kvm.img"),
  });
  assert.equal(items["root.squashfs"]?.["ftype"], "squashfs");
  assert.equal(items["root.squashfs"]?.["path"], `${dir}/rootfs.squashfs`);
  assert.equal(items["disk.qcow2"]?.["ftype"], "disk-kvm.img");
  assert.equal(items["disk.qcow2"]?.["path"], `${dir}/disk.qcow2`);
});

test("pitfall 10: every metadata file is published as both lxd.tar.xz and incus.tar.xz", () => {
  // Recorded once as incus.tar.xz (a distrobuilder 3.x build): LXD must still see it.
  const p = productOf(ACME, { "20240201_0000": { roots: ["squashfs"], meta: "incus.tar.xz" } });
  const { images } = build([p]);
  const items = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
  ) as Record<string, Record<string, unknown>>;
  const lxd = items["lxd.tar.xz"];
  const incus = items["incus.tar.xz"];
  assert.ok(lxd && incus);
  assert.equal(lxd["ftype"], "lxd.tar.xz");
  assert.equal(incus["ftype"], "incus.tar.xz");
  assert.deepEqual({ ...lxd, ftype: "x" }, { ...incus, ftype: "x" });
  assert.equal(lxd["combined_squashfs_sha256"], fingerprintOf(ACME, "20240201_0000", "squashfs"));
});

test("pitfall 1: sizes are JSON integers; fractional, negative, huge or string sizes are refused", () => {
  const { docs } = build([acme()]);
  const text = docs.files.get(IMAGES)?.toString("utf8") ?? "";
  const sizes = [...text.matchAll(/"size":([^,}]*)/g)].map((m) => m[1]);
  assert.equal(sizes.length, 4);
  for (const s of sizes) assert.match(s ?? "", /^[0-9]+$/);

  for (const bad of [328.5, -1, 2 ** 53, Number.NaN, "328" as unknown as number]) {
    const p = acme();
    fileOfType(p, "20240201_0000", "squashfs").size = bad;
    const err = refuses([p], /size .* must be a non-negative integer/);
    assert.match(
      err.message,
      /product "Acme:1:amd64:default" version "20240201_0000" file "rootfs.squashfs"/,
    );
  }
});

test("pitfalls 2 and 7: aliases are one comma-joined string; commas, white space and empty aliases are refused", () => {
  const { images } = build([
    productOf(
      { ...ACME, aliases: ["acme/1/default", "acme/1", "acme"] },
      { "20240201_0000": { roots: ["squashfs"] } },
    ),
  ]);
  const aliases = at(images, "products", "Acme:1:amd64:default", "aliases");
  assert.equal(typeof aliases, "string");
  assert.equal(aliases, "acme/1/default,acme/1,acme");

  for (const bad of [
    ["acme/1", " acme"],
    ["acme/1,acme"],
    ["acme 1"],
    ["acme/1\t"],
    [""],
    ["acme", "acme"],
  ]) {
    refuses([productOf({ ...ACME, aliases: bad }, { "20240201_0000": { roots: ["squashfs"] } })], /alias/);
  }
  const p = acme();
  p.aliases = "acme/1,acme" as unknown as string[];
  refuses([p], /aliases must be an array/);
});

test("a product without aliases is published without the field (image reachable by fingerprint)", () => {
  const { images } = build([
    productOf({ ...ACME, aliases: [] }, { "20240201_0000": { roots: ["squashfs"] } }),
  ]);
  const product = at(images, "products", "Acme:1:amd64:default") as Record<string, unknown>;
  assert.equal(Object.hasOwn(product, "aliases"), false);
});

test("pitfall 3: every emitted field has the JSON type LXD's Go structs expect", () => {
  const p = productOf(
    { ...ACME, supportEol: "2029-06-30" },
    {
      "20240101_0000": { roots: ["squashfs", "root.tar.xz", "disk-kvm.img"], label: "release" },
      "20240201_0000": { roots: ["squashfs"], deltaFrom: "20240101_0000" },
    },
  );
  const { docs, images } = build([p]);
  // The strict parser applies Go's type rules; it must accept our own output.
  parseIndex(JSON.parse(docs.files.get(INDEX)?.toString() ?? ""));
  const parsed = parseProducts(JSON.parse(docs.files.get(IMAGES)?.toString() ?? ""));
  assert.equal(parsed.products.size, 1);
  const product = at(images, "products", "Acme:1:amd64:default") as Record<string, unknown>;
  // `supported` must be a bool if present; lxhub does not write it at all.
  assert.equal(Object.hasOwn(product, "supported"), false);
  for (const k of ["aliases", "arch", "os", "release", "release_title", "variant", "support_eol"]) {
    assert.equal(typeof product[k], "string", k);
  }
  assert.equal(product["support_eol"], "2029-06-30");
  assert.equal(at(product, "versions", "20240101_0000", "label"), "release");
});

test("pitfall 4: requirement values are strings in both maps; anything else is refused", () => {
  const { images } = build([
    productOf(
      { ...ACME, requirements: { secureboot: "false", nesting: "true" } },
      { "20240201_0000": { roots: ["squashfs"] } },
    ),
  ]);
  const product = at(images, "products", "Acme:1:amd64:default") as Record<string, unknown>;
  assert.deepEqual(product["lxd_requirements"], { nesting: "true", secureboot: "false" });
  assert.deepEqual(product["requirements"], product["lxd_requirements"]);

  // Both maps are present even when empty, so either client reads the same thing.
  const { images: empty } = build([
    productOf({ ...ACME, requirements: {} }, { "20240201_0000": { roots: ["squashfs"] } }),
  ]);
  assert.deepEqual(at(empty, "products", "Acme:1:amd64:default", "lxd_requirements"), {});
  assert.deepEqual(at(empty, "products", "Acme:1:amd64:default", "requirements"), {});

  for (const bad of [false, 1, null, ["x"]]) {
    const p = acme();
    p.requirements = { secureboot: bad as unknown as string };
    refuses([p], /requirement "secureboot" must be a string/);
  }
  const p = acme();
  p.requirements = { "secure boot": "false" };
  refuses([p], /requirement key/);
});

test("pitfall 5: upper-case, prefixed or wrong-length hex is refused, for digests and combined hashes", () => {
  const good = fileOfType(acme(), "20240201_0000", "squashfs").sha256;
  for (const bad of [
    good.toUpperCase(),
    `sha256:${good}`,
    good.slice(1),
    `${good}0`,
    good.replace(/[a-f]/, "g"),
  ]) {
    const p = acme();
    fileOfType(p, "20240201_0000", "squashfs").sha256 = bad;
    refuses([p], /sha256 .* must be 64 lower-case hex/);
  }
  const p = acme();
  const meta = fileOfType(p, "20240201_0000", "lxd.tar.xz");
  meta.combined = { ...meta.combined, squashfs: meta.combined?.squashfs?.toUpperCase() ?? "" };
  refuses([p], /combined squashfs hash .* must be 64 lower-case hex/);
});

test("pitfall 6: a metadata file needs a combined hash for every root file of its version", () => {
  const p = acme();
  const meta = fileOfType(p, "20240201_0000", "lxd.tar.xz");
  delete meta.combined?.["disk-kvm.img"];
  const err = refuses([p], /missing combined disk-kvm.img hash \(combined_disk-kvm-img_sha256\)/);
  assert.match(err.message, /version "20240201_0000" file "lxd.tar.xz"/);

  // Combined hashes for roots the version does not have are not written (no phantom pairs).
  const q = productOf(ACME, { "20240201_0000": { roots: ["squashfs"] } });
  const qm = fileOfType(q, "20240201_0000", "lxd.tar.xz");
  qm.combined = { ...qm.combined, "root.tar.xz": sha256(Buffer.from("elsewhere")) };
  const { images } = build([q]);
  const item = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
    "lxd.tar.xz",
  ) as Record<string, unknown>;
  assert.equal(Object.hasOwn(item, "combined_rootxz_sha256"), false);
  assert.equal(Object.hasOwn(item, "combined_sha256"), false);
});

test("root.tar.xz pairs also carry the legacy combined_sha256; other roots get their own item keys", () => {
  const p = productOf(ACME, { "20240201_0000": { roots: ["root.tar.xz", "disk1.img", "uefi1.img"] } });
  const { images } = build([p]);
  const items = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
  ) as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(items).sort(), [
    "disk1.img",
    "incus.tar.xz",
    "lxd.tar.xz",
    "root.tar.xz",
    "uefi1.img",
  ]);
  const fp = fingerprintOf(ACME, "20240201_0000", "root.tar.xz");
  for (const meta of [items["lxd.tar.xz"], items["incus.tar.xz"]]) {
    assert.equal(meta?.["combined_rootxz_sha256"], fp);
    assert.equal(meta?.["combined_sha256"], fp);
    assert.equal(meta?.["combined_disk1-img_sha256"], fingerprintOf(ACME, "20240201_0000", "disk1.img"));
    assert.equal(meta?.["combined_uefi1-img_sha256"], fingerprintOf(ACME, "20240201_0000", "uefi1.img"));
  }
  assert.equal(items["root.tar.xz"]?.["ftype"], "root.tar.xz");
  assert.equal(items["disk1.img"]?.["ftype"], "disk1.img");
  assert.equal(items["uefi1.img"]?.["ftype"], "uefi1.img");
});

test("pitfall 8: version keys that do not start with a real YYYYMMDD are refused", () => {
  for (const bad of ["2024-02-01", "v20240201", "20240230_0000", "2024020", "20240201 0000"]) {
    const p = productOf(ACME, { [bad]: { roots: ["squashfs"] } });
    refuses([p], /version .* must (start with|be) a real date YYYYMMDD/);
  }
  const twice = acme();
  twice.versions.push(structuredClone(twice.versions[0]!));
  refuses([twice], /version "20240201_0000" is listed twice/);
});

test("pitfall 9: arch spellings LXD 5.0.2 does not know are refused; known ones are published as given", () => {
  for (const bad of ["x64", "loong64", "AMD64", ""]) {
    refuses([productOf({ ...ACME, arch: bad }, { "20240201_0000": { roots: ["squashfs"] } })], /arch/);
  }
  for (const good of ["amd64", "x86_64", "arm64", "ppc64el", "riscv64"]) {
    const { images } = build([
      productOf({ ...ACME, arch: good }, { "20240201_0000": { roots: ["squashfs"] } }),
    ]);
    assert.equal(at(images, "products", `Acme:1:${good}:default`, "arch"), good);
  }
});

test("pitfall 13 and 17: the products path must be plain .json and not collide with index.json in client caches", () => {
  refuses([acme()], /plain \.json/, { productsPath: "streams/v1/images.sjson" });
  refuses([acme()], /must not be named index\.json/, { productsPath: "streams/v2/index.json" });
  refuses([acme()], /relative path/, { productsPath: "/streams/v1/images.json" });
  refuses([acme()], /relative path/, { productsPath: "streams/../images.json" });
  const { index, docs } = build([acme()], {
    productsPath: "streams/v1/images-daily.json",
    contentId: "images-daily",
  });
  assert.equal(at(index, "index", "images-daily", "path"), "streams/v1/images-daily.json");
  assert.ok(docs.files.has("streams/v1/images-daily.json"));
  assert.equal(json(docs.files, "streams/v1/images-daily.json")["content_id"], "images-daily");
});

test("paths must be relative and clean (the canonical tools refuse absolute and .. paths)", () => {
  for (const bad of [
    "/images/acme/x",
    "images/../x",
    "../x",
    "images//x",
    "./images/x",
    "images/./x",
    "images\\x",
    "images/x\n",
    "",
  ]) {
    const p = acme();
    fileOfType(p, "20240201_0000", "squashfs").path = bad;
    refuses([p], /path .* must be relative/);
  }
});

test("pitfall 19: one path names one content in the whole stream", () => {
  const p = productOf(ACME, {
    "20240101_0000": { roots: ["squashfs"] },
    "20240201_0000": { roots: ["squashfs"] },
  });
  fileOfType(p, "20240201_0000", "squashfs").path = fileOfType(p, "20240101_0000", "squashfs").path;
  refuses([p], /already names different content/);
});

test("pitfall 22: one alias claimed by two products for the same arch and image type is refused", () => {
  const one = productOf(
    { ...ACME, aliases: ["acme/1", "acme"] },
    { "20240201_0000": { roots: ["squashfs"] } },
  );
  const two = productOf(
    { ...ACME, release: "2", aliases: ["acme/2", "acme"] },
    { "20240201_0000": { roots: ["squashfs"] } },
  );
  const err = refuses(
    [one, two],
    /alias "acme" \(container, x86_64\) already belongs to product "Acme:1:amd64:default"/,
  );
  assert.match(err.message, /product "Acme:2:amd64:default"/);

  // Spelled x86_64 instead of amd64: same canonical arch, same namespace.
  const alt = productOf(
    { ...ACME, arch: "x86_64", variant: "cloud", aliases: ["acme/1"] },
    { "20240201_0000": { roots: ["squashfs"] } },
  );
  refuses([one, alt], /alias "acme\/1"/);

  // A short alias equal to another product's medium alias collides too.
  const medium = productOf(
    { ...ACME, variant: "cloud", aliases: ["acme/amd64"] },
    { "20240201_0000": { roots: ["squashfs"] } },
  );
  refuses([one, medium], /alias "acme\/amd64"/);

  // Different arch, or different image type: separate namespaces, both fine.
  const arm = productOf(
    { ...ACME, arch: "arm64", aliases: ["acme/1", "acme"] },
    { "20240201_0000": { roots: ["squashfs"] } },
  );
  const vm = productOf(
    { ...ACME, variant: "vm", aliases: ["acme/1", "acme"] },
    { "20240201_0000": { roots: ["disk-kvm.img"] } },
  );
  const { index } = build([one, arm, vm]);
  assert.deepEqual(at(index, "index", "images", "products"), [
    "Acme:1:amd64:default",
    "Acme:1:amd64:vm",
    "Acme:1:arm64:default",
  ]);
});

test("pitfall 23: at most one delta of a kind per version, with a present and older delta_base", () => {
  const p = productOf(ACME, {
    "20240101_0000": { roots: ["squashfs"] },
    "20240201_0000": { roots: ["squashfs"], deltaFrom: "20240101_0000" },
  });
  const { images } = build([p]);
  const items = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
  ) as Record<string, Record<string, unknown>>;
  const delta = items["root.20240101_0000.vcdiff"];
  assert.equal(delta?.["ftype"], "squashfs.vcdiff");
  assert.equal(delta?.["delta_base"], "20240101_0000");
  assert.equal(delta?.["path"], "images/acme/1/amd64/default/20240201_0000/delta-20240101_0000.vcdiff");

  const two = structuredClone(p);
  const v2 = two.versions[1]!;
  v2.files.push({
    ...fileOfType(two, "20240201_0000", "squashfs.vcdiff"),
    name: "other.vcdiff",
    path: "images/acme/other.vcdiff",
    sha256: sha256(Buffer.from("other")),
  });
  refuses([two], /more than one squashfs\.vcdiff file in one version/);

  const dangling = structuredClone(p);
  dangling.versions.shift();
  refuses([dangling], /delta_base "20240101_0000" is not a published version of this product/);

  const newer = productOf(ACME, {
    "20240301_0000": { roots: ["squashfs"] },
    "20240201_0000": { roots: ["squashfs"], deltaFrom: "20240301_0000" },
  });
  refuses([newer], /must be an older version/);

  const noTarget = productOf(ACME, {
    "20240101_0000": { roots: ["squashfs"] },
    "20240201_0000": { roots: ["root.tar.xz"], deltaFrom: "20240101_0000" },
  });
  refuses([noTarget], /needs a squashfs file in the same version/);

  const baseWithoutSquashfs = productOf(ACME, {
    "20240101_0000": { roots: ["disk-kvm.img"] },
    "20240201_0000": { roots: ["squashfs"], deltaFrom: "20240101_0000" },
  });
  refuses([baseWithoutSquashfs], /has no metadata \+ squashfs image/);
});

test("pitfall 25: fingerprints are full 64-character sha256 values", () => {
  const { images } = build([acme()]);
  const meta = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
    "lxd.tar.xz",
  ) as Record<string, unknown>;
  for (const k of ["combined_squashfs_sha256", "combined_disk-kvm-img_sha256"])
    assert.match(String(meta[k]), /^[0-9a-f]{64}$/);
});

test("pitfall 27: output bytes are deterministic, keys sorted byte-wise, with a trailing newline", () => {
  const a = productOf(ACME, {
    "20240101": { roots: ["squashfs"] },
    "20240101_0000": { roots: ["squashfs", "disk-kvm.img"] },
  });
  a.requirements = { secureboot: "false", nesting: "true", agent: "1" };
  const b = productOf({ ...ACME, arch: "arm64" }, { "20240115_0000": { roots: ["squashfs"] } });
  const first = buildDocuments([a, b], { updated: UPDATED });
  const shuffled = structuredClone([b, a]);
  for (const p of shuffled) {
    p.versions.reverse();
    for (const v of p.versions) v.files.reverse();
  }
  shuffled[1]!.requirements = Object.fromEntries(Object.entries(shuffled[1]!.requirements).reverse());
  const second = buildDocuments(shuffled, { updated: UPDATED });
  for (const path of [INDEX, IMAGES]) {
    assert.ok(first.files.get(path)?.equals(second.files.get(path) ?? Buffer.alloc(0)), path);
    const text = first.files.get(path)?.toString("utf8") ?? "";
    assert.ok(text.endsWith("}\n"), path);
    assert.equal(text.indexOf("\n"), text.length - 1, "one line, one newline");
  }
  const text = first.files.get(IMAGES)?.toString("utf8") ?? "";
  // JSON.stringify would hoist the integer-like key "20240101"; byte-wise order keeps it first
  // only because it is a prefix of "20240101_0000", and puts "Acme:1:amd64" before "Acme:1:arm64".
  assert.ok(text.indexOf('"20240101":') < text.indexOf('"20240101_0000":'));
  assert.ok(text.indexOf('"Acme:1:amd64:default"') < text.indexOf('"Acme:1:arm64:default"'));
  assert.ok(text.indexOf('"aliases"') < text.indexOf('"arch"'));
  assert.ok(text.indexOf('"agent"') < text.indexOf('"nesting"'));
});

test("pitfall 28: updated is RFC 2822 in UTC", () => {
  assert.equal(rfc2822(new Date(Date.UTC(2015, 8, 15, 16, 15, 24))), "Tue, 15 Sep 2015 16:15:24 +0000");
  assert.equal(rfc2822(new Date("2024-03-05T01:02:03+02:00")), "Mon, 04 Mar 2024 23:02:03 +0000");
  refuses([acme()], /updated must be a valid Date/, { updated: new Date(Number.NaN) });
});

test("pitfall 29: the same (meta, root) pair may appear only once in the whole stream", () => {
  // The same files republished under a second version key.
  const p = acme();
  const copy = structuredClone(p.versions[0]!);
  copy.name = "20240301_0000";
  p.versions.push(copy);
  const err = refuses(
    [p],
    /already published at product "Acme:1:amd64:default" version "20240201_0000".*pitfall 29/,
  );
  assert.match(err.message, /version "20240301_0000"/);

  // The same files under another product.
  const other = acme();
  other.variant = "cloud";
  other.aliases = ["acme/1/cloud"];
  refuses([acme(), other], /pitfall 29/);

  // Two metadata files in one version.
  const twoMeta = acme();
  const v = twoMeta.versions[0]!;
  const meta = fileOfType(twoMeta, "20240201_0000", "lxd.tar.xz");
  v.files.push({
    ...structuredClone(meta),
    name: "incus.tar.xz",
    ftype: "incus.tar.xz",
    path: meta.path.replace("lxd.tar.xz", "incus.tar.xz"),
  });
  refuses([twoMeta], /more than one metadata file in one version/);
});

test("pitfall 30: format is set on the index, its entry and the products file", () => {
  const { index, images } = build([acme()]);
  assert.equal(index["format"], "index:1.0");
  assert.equal(at(index, "index", "images", "format"), "products:1.0");
  assert.equal(images["format"], "products:1.0");
});

test("an empty catalog gives valid documents with no index entry, and the products file still exists", () => {
  const { index, images, docs } = build([]);
  assert.deepEqual(index, { format: "index:1.0", index: {}, updated: "Thu, 01 Feb 2024 12:30:05 +0000" });
  assert.deepEqual(images["products"], {});
  assert.ok(docs.files.has(IMAGES));
  assert.equal(parseIndex(index).index.size, 0);
  assert.equal(parseProducts(images).products.size, 0);
});

test("other refusals name what is wrong", () => {
  refuses([acme(), acme()], /product "Acme:1:amd64:default": product is listed twice/);
  refuses(
    [productOf({ ...ACME, os: "" }, { "20240201_0000": { roots: ["squashfs"] } })],
    /os must not be empty/,
  );
  refuses(
    [productOf({ ...ACME, supportEol: "2029-02-30" }, { "20240201_0000": { roots: ["squashfs"] } })],
    /supportEol/,
  );
  const p = acme();
  fileOfType(p, "20240201_0000", "squashfs").ftype = "squashfs.manifest" as StreamFile["ftype"];
  refuses([p], /unknown ftype "squashfs.manifest"/);
  const q = acme();
  fileOfType(q, "20240201_0000", "squashfs").combined = {};
  refuses([q], /only a metadata file carries combined hashes/);
  const r = acme();
  fileOfType(r, "20240201_0000", "squashfs").deltaBase = "20240101_0000";
  refuses([r], /delta files, and only they, name a delta_base/);
  refuses([acme()], /contentId/, { contentId: "my images" });
});

test("§7.2: the LXC download index lists each product's newest build with rootfs.tar.xz and meta.tar.xz", () => {
  const product = productOf(ACME, {
    "20240101_0000": { roots: ["root.tar.xz"] },
    "20240201_0000": { roots: ["squashfs", "root.tar.xz"] },
    "20240301_0000": { roots: ["squashfs"] },
  });
  const lxcMeta = (version: string): StreamFile => {
    const root = fileOfType(product, version, "root.tar.xz");
    const dir = root.path.slice(0, root.path.lastIndexOf("/"));
    return {
      name: "meta.tar.xz",
      ftype: "lxc.tar.xz",
      path: `${dir}/meta.tar.xz`,
      sha256: "c".repeat(64),
      size: 3,
    };
  };
  for (const v of ["20240101_0000", "20240201_0000"])
    product.versions.find((x) => x.name === v)!.files.push(lxcMeta(v));
  const other = productOf(
    { os: "Other", release: "2", arch: "arm64" },
    { "20240101_0000": { roots: ["root.tar.xz"] } },
  );
  const { docs, images } = build([product, other]);
  const dir = fileOfType(product, "20240201_0000", "root.tar.xz").path.replace(/\/[^/]+$/, "");
  assert.equal(docs.files.get(LXC_SYSTEM)?.toString(), `Acme;1;amd64;default;20240201_0000;/${dir}/\n`);
  assert.ok(docs.files.get(LXC_USER)?.equals(docs.files.get(LXC_SYSTEM)!));
  // The products file lists the LXC metadata as its own item; LXD and Incus ignore its ftype.
  const item = at(
    images,
    "products",
    "Acme:1:amd64:default",
    "versions",
    "20240201_0000",
    "items",
    "lxc.tar.xz",
  );
  assert.deepEqual(item, {
    ftype: "lxc.tar.xz",
    path: `${dir}/meta.tar.xz`,
    sha256: "c".repeat(64),
    size: 3,
  });
});
