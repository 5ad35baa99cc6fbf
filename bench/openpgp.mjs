// What a publish spends on the OpenPGP documents (registry/openpgp-documents.ts) for a large
// products document: clear-signing index.json and images.json (.sjson), detached signatures
// (.json.gpg), and the gzip the read path keeps of each new document (registry/indexer.ts
// `served`). Needs `npm run build`.
//
//   node bench/openpgp.mjs [PRODUCTS] [VERSIONS]    default 1000 products × 3 versions
//
// Products are spread over os/release/arch/variant like images.linuxcontainers.org's, each
// version with a metadata file and squashfs, root.tar.xz and disk-kvm.img roots.
import { performance } from "node:perf_hooks";
import { gzipSync } from "node:zlib";
import { buildDocuments } from "../dist/simplestreams/builder.js";
import { productOf } from "../dist/test/unit/simplestreams/fixtures.js";
import { OpenPgpSigner } from "../dist/signing/openpgp.js";
import { openPgpDocuments } from "../dist/registry/openpgp-documents.js";

const nProducts = Number(process.argv[2] ?? 1000);
const nVersions = Number(process.argv[3] ?? 3);
const arches = ["amd64", "arm64", "armhf", "i386", "ppc64el", "riscv64", "s390x"];
const products = [];
for (let i = 0; products.length < nProducts; i++) {
  const arch = arches[i % arches.length];
  const release = `r${Math.floor(i / (arches.length * 2))}`;
  const variant = i % 2 ? "cloud" : "default";
  const versions = {};
  for (let v = 0; v < nVersions; v++) {
    versions[`202401${String(v + 1).padStart(2, "0")}_0000`] = {
      roots: ["squashfs", "root.tar.xz", "disk-kvm.img"],
    };
  }
  products.push(
    productOf(
      { os: `os${i % 40}`, release, arch, variant, aliases: [`os${i % 40}/${release}/${variant}`] },
      versions,
    ),
  );
}
const docs = buildDocuments(products, { updated: new Date() }).files;
const size = (b) => `${(b.length / 1e6).toFixed(2)} MB`;
console.log(
  `images.json ${size(docs.get("streams/v1/images.json"))}, index.json ${size(docs.get("streams/v1/index.json"))}`,
);

const signer = await OpenPgpSigner.fromArmored(await OpenPgpSigner.generate("bench"), "bench");
const runs = [];
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  const out = await openPgpDocuments(signer, docs);
  const t1 = performance.now();
  for (const d of out.values()) gzipSync(d.body, { level: 9 });
  const t2 = performance.now();
  runs.push({
    sign: t1 - t0,
    gzip: t2 - t1,
    bytes: [...out.values()].reduce((n, d) => n + d.body.length, 0),
  });
}
const median = (k) => runs.map((x) => x[k]).sort((a, b) => a - b)[2];
console.log(
  `OpenPGP documents: ${(runs[0].bytes / 1e6).toFixed(2)} MB; signing ${median("sign").toFixed(0)} ms, ` +
    `their gzip -9 ${median("gzip").toFixed(0)} ms (median of 5)`,
);
{
  const t0 = performance.now();
  for (const d of docs.values()) gzipSync(d, { level: 9 });
  console.log(
    `for comparison, gzip -9 of index.json + images.json: ${(performance.now() - t0).toFixed(0)} ms`,
  );
}
