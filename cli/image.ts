import type { Command } from "commander";
import { filterImages, imageRecord, streamImages, type ImageRecord } from "../client/image-list.js";
import { HttpError } from "../client/http.js";
import { HttpPublisher, type Product } from "../client/publisher.js";
import { describePushError } from "../client/push.js";
import { describeError, findImage, openStream } from "../client/verify.js";
import { printJson, renderCsv, renderTable, reporting } from "./output.js";
import { serverAccess, type ServerFlags } from "./server-flags.js";
import { targetOf, trustOptions, type TrustFlags } from "./trust-flags.js";

interface ListFlags extends TrustFlags {
  format: string;
}

interface InfoFlags extends ListFlags {
  arch?: string;
  vm?: boolean;
}

interface DeleteFlags extends ServerFlags {
  json?: boolean;
}

const LIST_FORMATS = ["table", "json", "csv"];
const INFO_FORMATS = ["table", "json"];

function checkFormat(format: string, allowed: string[]): void {
  if (!allowed.includes(format)) throw new Error(`--format must be ${allowed.join(", ")}, not ${format}`);
}

/** `incus image list`'s SIZE column: MiB with two decimals. */
function mib(size: number): string {
  return `${(size / 1024 / 1024).toFixed(2)}MiB`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `incus image list`'s UPLOAD DATE: `Jan 2, 2006 at 3:04pm (UTC)`. */
function listDate(iso: string): string {
  const d = new Date(iso);
  const h = d.getUTCHours();
  const min = String(d.getUTCMinutes()).padStart(2, "0");
  const clock = `${h % 12 === 0 ? 12 : h % 12}:${min}${h < 12 ? "am" : "pm"}`;
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}, ${d.getUTCFullYear()} at ${clock} (UTC)`;
}

/** `incus image info`'s timestamps: `2006/01/02 15:04 UTC`. */
function infoDate(iso: string | null): string {
  if (iso === null) return "never";
  return `${iso.slice(0, 10).replace(/-/g, "/")} ${iso.slice(11, 16)} UTC`;
}

/** The ALIAS column: the shortest alias, and how many more there are. */
function aliasColumn(aliases: string[]): string {
  if (aliases.length === 0) return "";
  const shortest = aliases.reduce((a, b) => (b.length < a.length ? b : a));
  return aliases.length > 1 ? `${shortest} (${aliases.length - 1} more)` : shortest;
}

const COLUMNS = [
  "ALIAS",
  "FINGERPRINT",
  "PUBLIC",
  "DESCRIPTION",
  "ARCHITECTURE",
  "TYPE",
  "SIZE",
  "UPLOAD DATE",
];

/** The rows of the table and of `--format csv`, sorted as incus sorts them (column by column). */
function listRows(records: ImageRecord[]): string[][] {
  const rows = records.map((r) => [
    aliasColumn(r.aliases),
    r.fingerprint.slice(0, 12),
    r.public ? "yes" : "no",
    r.description,
    r.architecture,
    r.type.toUpperCase(),
    mib(r.size),
    listDate(r.uploaded_at),
  ]);
  const cmp = (a: string[], b: string[]): number => {
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) return (a[i] as string) < (b[i] as string) ? -1 : 1;
    }
    return 0;
  };
  return rows.sort(cmp);
}

function infoText(r: ImageRecord): string {
  const lines = [
    `Fingerprint: ${r.fingerprint}`,
    `Size: ${mib(r.size)}`,
    `Architecture: ${r.architecture}`,
    `Type: ${r.type}`,
    `Public: ${r.public ? "yes" : "no"}`,
    "Timestamps:",
    `    Created: ${infoDate(r.created_at)}`,
    `    Uploaded: ${infoDate(r.uploaded_at)}`,
    `    Expires: ${infoDate(r.expires_at)}`,
    "Properties:",
    ...Object.entries(r.properties).map(([k, v]) => `    ${k}: ${v}`),
    "Aliases:",
    ...r.aliases.map((a) => `    - ${a}`),
    `Product: ${r.product}`,
    `Version: ${r.version}`,
    "Files:",
    ...r.files.map(
      (f) =>
        `    - ${f.name} (${f.ftype}${f.delta_base ? ` from ${f.delta_base}` : ""}): ${f.size} bytes, sha256 ${f.sha256}`,
    ),
  ];
  return lines.join("\n") + "\n";
}

/** `os/release/arch/variant` → the product. */
function parseProduct(s: string): Product {
  const parts = s.split("/");
  if (parts.length !== 4 || parts.some((p) => p === "")) {
    throw new Error(`PRODUCT must be os/release/arch/variant (e.g. debian/12/amd64/default), not ${s}`);
  }
  const [os, release, arch, variant] = parts as [string, string, string, string];
  return { os, release, arch, variant };
}

function describeDeleteError(err: unknown, product: string, version: string, server: string): string {
  if (err instanceof HttpError) {
    if (err.status === 403) {
      return `the token may not delete ${product}: it needs a delete: scope covering it (e.g. delete:${product.split("/")[0]}/*) or admin`;
    }
    if (err.status === 404) return `${server} has no live version ${version} of ${product}`;
  }
  return describePushError(err);
}

/** `lxhub image list|info|delete` (client/image-list.ts, client/publisher.ts). */
export function registerImage(program: Command): void {
  const image = program
    .command("image")
    .description(
      "list and inspect a remote's images (as incus image list/info shows them), delete a version",
    );

  trustOptions(
    image
      .command("list")
      .description("list the images of a remote, verified like lxhub pull reads them")
      .argument("<remote>", "a remote name (lxhub remote add) or a URL")
      .argument("[filter...]", "alias or fingerprint substring, or KEY=VALUE on properties (all must match)")
      .option("--format <format>", `output format: ${LIST_FORMATS.join(", ")}`, "table"),
  ).action(async (source: string, filters: string[], flags: ListFlags) => {
    checkFormat(flags.format, LIST_FORMATS);
    await reporting(flags.format === "json", describeError, async () => {
      const stream = await openStream(await targetOf(source, flags));
      let records: ImageRecord[];
      try {
        records = filterImages(
          streamImages(stream).map((img) => imageRecord(img)),
          filters,
        );
      } finally {
        stream.close();
      }
      if (flags.format === "json") printJson(records);
      else if (flags.format === "csv") process.stdout.write(renderCsv(listRows(records)));
      else process.stdout.write(renderTable(COLUMNS, listRows(records)));
    });
  });

  trustOptions(
    image
      .command("info")
      .description("show one image: fingerprint, size, timestamps, properties, aliases and files")
      .argument("<remote>", "a remote name (lxhub remote add) or a URL")
      .argument("<image>", "image alias or fingerprint prefix, resolved as lxhub pull does")
      .option("--arch <arch>", "architecture (default: this machine's)")
      .option("--vm", "the virtual-machine image instead of the container one")
      .option("--format <format>", `output format: ${INFO_FORMATS.join(", ")}`, "table"),
  ).action(async (source: string, name: string, flags: InfoFlags) => {
    checkFormat(flags.format, INFO_FORMATS);
    await reporting(flags.format === "json", describeError, async () => {
      const stream = await openStream(await targetOf(source, flags));
      let record: ImageRecord;
      try {
        record = imageRecord(findImage(stream, name, { arch: flags.arch, vm: flags.vm }).image);
      } finally {
        stream.close();
      }
      if (flags.format === "json") printJson(record);
      else process.stdout.write(infoText(record));
    });
  });

  image
    .command("delete")
    .description("withdraw a version from a server's documents (token with a delete: scope)")
    .argument("<server>", "server URL, e.g. https://localhost:8443")
    .argument("<product>", "os/release/arch/variant, e.g. debian/12/amd64/default")
    .argument("<version>", "version key, e.g. 20240101_0000")
    .option("--token <token>", "API token with a delete: scope covering the product (default: $LXHUB_TOKEN)")
    .option("--ca <file>", "PEM certificate to trust for the server (pins a self-signed certificate)")
    .option("--json", "print the result as JSON")
    .action(async (server: string, productArg: string, version: string, flags: DeleteFlags) => {
      await reporting(
        flags.json,
        (err) => describeDeleteError(err, productArg, version, server),
        async () => {
          const product = parseProduct(productArg);
          const { token, ca } = serverAccess(server, flags);
          const publisher = new HttpPublisher({ server, token, ca, userAgent: "lxhub-image-delete" });
          try {
            await publisher.deleteVersion(product, version);
          } finally {
            publisher.close();
          }
          if (flags.json) printJson({ deleted: true, product: productArg, version });
          else process.stdout.write(`deleted ${productArg} version ${version}\n`);
        },
      );
    });
}
