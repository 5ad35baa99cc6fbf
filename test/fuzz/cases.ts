/**
 * Fuzz cases: fast-check arbitraries for publish, delete, upload and token requests, and the
 * code that turns one case into real HTTP requests against a {@link FuzzTarget}.
 *
 * Cases are plain data, so a shrunk counterexample prints as the request it stands for. Parts
 * that depend on the catalog at the time (a fresh version key, a live version to delete, a
 * delta base) are symbolic and resolved when the case runs; the concrete requests and the
 * responses are in the message of a failing case.
 */
import fc from "fast-check";
import { digestOf } from "../support/api.js";
import {
  TOKEN_ROLES,
  describeExchanges,
  digestOfText,
  InvariantError,
  type Exchange,
  type FuzzTarget,
  type LiveVersion,
  type ProductKey,
} from "./harness.js";

// --- names ----------------------------------------------------------------------------------

/** Products whose names are valid, targets of valid publishes; lxdArch goes into metadata.yaml. */
export const VALID_PRODUCTS: (ProductKey & { lxdArch: string })[] = [
  { os: "fuzz", release: "1", arch: "amd64", variant: "default", lxdArch: "x86_64" },
  { os: "fuzz", release: "1", arch: "x86_64", variant: "default", lxdArch: "x86_64" },
  { os: "fuzz", release: "2", arch: "amd64", variant: "cloud", lxdArch: "x86_64" },
  { os: "fuzz", release: "2", arch: "arm64", variant: "default", lxdArch: "aarch64" },
  { os: "busybox", release: "1.36", arch: "amd64", variant: "default", lxdArch: "x86_64" },
];

const HOSTILE_SEGMENTS = [
  "",
  ".",
  "..",
  "/",
  "a/b",
  "../../etc",
  "%2F",
  "%2e%2e",
  "%",
  "%zz",
  "a b",
  " a",
  "a\u0000b",
  "\n",
  "a\tb",
  "\u007f",
  "\u0085",
  "é",
  "日本",
  "😀",
  "a\u202eb",
  "\\",
  "a:b",
  "a,b",
  "*",
  "-a",
  "_a",
  "a".repeat(64),
  "a".repeat(65),
  "a".repeat(300),
  "a".repeat(5000),
  "CON",
  "null",
  "undefined",
  "__proto__",
  "constructor",
];

const segmentArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("fuzz", "busybox", "1", "2", "1.36", "default", "cloud", "amd64") },
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,70}$/) },
);

const archArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom("amd64", "x86_64", "arm64", "aarch64", "i386", "riscv64", "s390x"),
  },
  { weight: 2, arbitrary: fc.constantFrom("x64", "amd64v3", "loong64", "AMD64", "generic_64", "amd64 ") },
  { weight: 2, arbitrary: segmentArb },
);

const versionLiteralArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "20240101_0000",
      "20240230_0000",
      "20241301",
      "2024010",
      "latest",
      "20240101_00:00",
      "20240101.1",
      "20240101 0000",
      "20240101/0000",
      "20240101%2F0000",
      "20240101_..",
      "..",
      "20240101\u0000",
      "20240101\n",
      "20240101é",
      "2024010１",
      "00000000",
      "99991231_2359",
      "20240101_" + "0".repeat(55),
      "20240101_" + "0".repeat(56),
      "20240101_" + "9".repeat(5000),
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 2, arbitrary: fc.stringMatching(/^20[0-9]{6}[0-9A-Za-z_.:-]{0,70}$/) },
);

/** How hostile path segments are put into the URL. */
export type Encoding = "component" | "raw" | "double";

export interface FuzzProduct {
  os: string;
  release: string;
  arch: string;
  variant: string;
  encoding: Encoding;
}

/** Either one of VALID_PRODUCTS (by index) or hostile names. */
export type ProductChoice = { valid: number } | { names: FuzzProduct };

const hostileProductArb: fc.Arbitrary<FuzzProduct> = fc.record({
  os: segmentArb,
  release: segmentArb,
  arch: archArb,
  variant: segmentArb,
  encoding: fc.constantFrom<Encoding>("component", "component", "raw", "double"),
});

const productChoiceArb: fc.Arbitrary<ProductChoice> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ valid: fc.nat({ max: VALID_PRODUCTS.length - 1 }) }) },
  { weight: 2, arbitrary: fc.record({ names: hostileProductArb }) },
);

/**
 * A version key: `fresh` is newer than any key so far, `older` older than every fresh one,
 * `live` one already published for the product (by index), or a literal.
 */
export type VersionChoice = "fresh" | "older" | { live: number } | { literal: string };

const versionChoiceArb: fc.Arbitrary<VersionChoice> = fc.oneof(
  { weight: 8, arbitrary: fc.constant<VersionChoice>("fresh") },
  { weight: 2, arbitrary: fc.constant<VersionChoice>("older") },
  { weight: 2, arbitrary: fc.record({ live: fc.nat({ max: 50 }) }) },
  { weight: 2, arbitrary: fc.record({ literal: versionLiteralArb }) },
);

// --- tokens ---------------------------------------------------------------------------------

/** A token by role (see TOKEN_ROLES), none, or a literal string. */
export type TokenChoice = string | { literal: string };

const tokenChoiceArb: fc.Arbitrary<TokenChoice> = fc.oneof(
  { weight: 8, arbitrary: fc.constant("admin") },
  {
    weight: 4,
    arbitrary: fc.constantFrom("pushAll", "pushFuzz", "pushBusybox", "deleteAll", "pushDeleteFuzz"),
  },
  { weight: 1, arbitrary: fc.constantFrom("revoked", "none") },
  {
    weight: 1,
    arbitrary: fc.record({
      literal: fc.oneof(
        fc.constantFrom("", "x", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzY29wZXMiOlsiYWRtaW4iXX0.", "Bearer"),
        fc.stringMatching(/^[\x21-\x7e]{1,300}$/),
      ),
    }),
  },
);

// --- publish bodies -------------------------------------------------------------------------

/** Which blob a file names: resolved when the case runs. */
export type DigestChoice =
  | "meta"
  | "squashfs"
  | "tar"
  | "delta"
  | "fixtureMeta"
  | "metaOfOtherVersion"
  | "unknown"
  | { literal: unknown };

/** The version a delta names as its base. */
export type BaseChoice = "newest" | "oldest" | "self" | "missing" | "newerThanSelf" | { literal: unknown };

export interface FileChoice {
  name: unknown;
  ftype: unknown;
  digest: DigestChoice;
  base?: BaseChoice;
  /** Extra fields in the file object. */
  extra?: Record<string, unknown>;
}

const metaFile: FileChoice = { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: "meta" };
const squashFile: FileChoice = { name: "rootfs.squashfs", ftype: "squashfs", digest: "squashfs" };
const tarFile: FileChoice = { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: "tar" };
const deltaFile = (base: BaseChoice, name = "delta-1.vcdiff"): FileChoice => ({
  name,
  ftype: "squashfs.vcdiff",
  digest: "delta",
  base,
});

const baseChoiceArb: fc.Arbitrary<BaseChoice> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<BaseChoice>("newest", "oldest") },
  { weight: 3, arbitrary: fc.constantFrom<BaseChoice>("self", "missing", "newerThanSelf") },
  {
    weight: 1,
    arbitrary: fc.record({
      literal: fc.oneof(versionLiteralArb, fc.constantFrom<unknown>(null, 1, [], {}, true)),
    }),
  },
);

const ftypeArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      "lxd.tar.xz",
      "incus.tar.xz",
      "squashfs",
      "root.tar.xz",
      "disk-kvm.img",
      "disk1.img",
      "uefi1.img",
      "squashfs.vcdiff",
      "disk-kvm.img.vcdiff",
    ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>("vmdk", "", "SQUASHFS", "lxd_combined.tar.gz", null, 5, []),
  },
);

const fileNameArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "lxd.tar.xz",
      "rootfs.squashfs",
      "rootfs.tar.xz",
      "disk.qcow2",
      "delta.vcdiff",
    ),
  },
  { weight: 2, arbitrary: segmentArb },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 7, {}, ["a"]) },
);

const digestChoiceArb: fc.Arbitrary<DigestChoice> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom<DigestChoice>(
      "meta",
      "squashfs",
      "tar",
      "delta",
      "fixtureMeta",
      "metaOfOtherVersion",
      "unknown",
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      literal: fc.oneof(
        fc.constantFrom<unknown>(
          "",
          "sha256:",
          "sha256:" + "A".repeat(64),
          "sha256:" + "0".repeat(63),
          "sha512:" + "0".repeat(128),
          "sha256:../../../etc/passwd",
          null,
          0,
        ),
        fc.string({ maxLength: 80 }),
      ),
    }),
  },
);

const randomFileArb: fc.Arbitrary<FileChoice> = fc.record(
  {
    name: fileNameArb,
    ftype: ftypeArb,
    digest: digestChoiceArb,
    base: baseChoiceArb,
    extra: fc.dictionary(fc.constantFrom("size", "sha256", "path", "combined_sha256", "x"), fc.jsonValue(), {
      maxKeys: 2,
    }),
  },
  { requiredKeys: ["name", "ftype", "digest"] },
);

/** Mostly-valid file lists with one twist, and random ones. */
const filesArb: fc.Arbitrary<FileChoice[]> = fc.oneof(
  { weight: 6, arbitrary: fc.constant<FileChoice[]>([metaFile, squashFile]) },
  { weight: 2, arbitrary: fc.constant<FileChoice[]>([metaFile, tarFile]) },
  { weight: 2, arbitrary: fc.constant<FileChoice[]>([metaFile, squashFile, tarFile]) },
  { weight: 4, arbitrary: baseChoiceArb.map((b) => [metaFile, squashFile, deltaFile(b)]) },
  { weight: 1, arbitrary: baseChoiceArb.map((b) => [metaFile, tarFile, deltaFile(b)]) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(baseChoiceArb, baseChoiceArb)
      .map(([a, b]) => [metaFile, squashFile, deltaFile(a), deltaFile(b, "delta-2.vcdiff")]),
  },
  { weight: 1, arbitrary: fc.constant<FileChoice[]>([metaFile]) },
  { weight: 1, arbitrary: fc.constant<FileChoice[]>([squashFile, tarFile]) },
  {
    weight: 1,
    arbitrary: fc.constant<FileChoice[]>([
      metaFile,
      { ...metaFile, name: "incus.tar.xz", ftype: "incus.tar.xz" },
      squashFile,
    ]),
  },
  {
    weight: 1,
    arbitrary: fc.constant<FileChoice[]>([metaFile, squashFile, { ...squashFile, name: "rootfs2.squashfs" }]),
  },
  { weight: 1, arbitrary: fc.constant<FileChoice[]>([metaFile, { ...squashFile, digest: "meta" as const }]) },
  {
    weight: 1,
    arbitrary: fc.constant<FileChoice[]>([{ ...metaFile, digest: "squashfs" as const }, squashFile]),
  },
  { weight: 1, arbitrary: fc.constant<FileChoice[]>([metaFile, squashFile, squashFile]) },
  { weight: 4, arbitrary: fc.array(randomFileArb, { maxLength: 5 }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.array(randomFileArb, { maxLength: 2 }), fc.boolean())
      .map(([extra, tar]) => [metaFile, tar ? tarFile : squashFile, ...extra]),
  },
);

/** Valid aliases the products compete for, `alias/<arch>` forms and ones outside most scopes included. */
const ALIASES = [
  "fuzz",
  "fuzz/1",
  "fuzz/1/amd64",
  "fuzz/1/x86_64",
  "fuzz/2",
  "fuzz/2/cloud",
  "busybox",
  "busybox/1.36",
  "busybox/1.36/amd64",
  "debian/12",
  "evil",
];

const aliasArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...ALIASES) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "",
      "a,b",
      "a b",
      " fuzz",
      "fuzz/",
      "/fuzz",
      "fuzz//1",
      "fuzz/../1",
      "a\u0000",
      "a\n",
      "ü",
      "😀",
      "a".repeat(128),
      "a".repeat(129),
      "a".repeat(10000),
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 1, true, {}, ["a"]) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  {
    weight: 1,
    arbitrary: fc.stringMatching(
      /^[A-Za-z0-9][A-Za-z0-9._:+-]{0,8}(\/[A-Za-z0-9][A-Za-z0-9._:+-]{0,8}){0,3}$/,
    ),
  },
);

const aliasesArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.array(aliasArb, { maxLength: 5 }) },
  { weight: 2, arbitrary: aliasArb.map((a) => [a, a]) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 33, max: 5000 })
      .map((n) => Array.from({ length: n }, (_, i) => `fuzz/a${i}`)),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 20000 }).map((n) => Array.from({ length: n }, () => "fuzz")),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>("fuzz", "fuzz,fuzz/1", null, 1, {}, { a: "b" }) },
);

const requirementKeyArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("secureboot", "cgroup", "nesting", "cdrom_agent", "a.b-c_d") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "bad key",
      "",
      "-x",
      "a\u0000",
      "a\n",
      "ü",
      "a=b",
      "a,b",
      "__proto__",
      "constructor",
      "a".repeat(64),
      "a".repeat(65),
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);

const requirementValueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("true", "false", "v2", "") },
  {
    weight: 2,
    arbitrary: fc.constantFrom("a\u0000", "a\nb", "\u0085", "x".repeat(256), "x".repeat(257), "😀"),
  },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(true, false, 1, 0, -1, null, [], ["a"], {}, { a: "b" }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
);

const requirementsArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.dictionary(requirementKeyArb, requirementValueArb, { maxKeys: 4 }) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 33, max: 3000 })
      .map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]))),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, "secureboot=false", 1, [], [["a", "b"]]) },
);

const releaseTitleArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("Fuzz 1", "Busybox 1.36", "Ünïcode 日本 😀") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "",
      " ",
      "a\u0000b",
      "line\nbreak",
      "tab\there",
      "\u001b[31mred",
      "\u007f",
      "\u0085",
      "\u2028",
      "x".repeat(256),
      "x".repeat(257),
      "x".repeat(100000),
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 1, true, [], {}) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 30 }) },
);

/** A publish body: structured (fields resolved when run), any JSON value, or raw text. */
export type BodyChoice =
  | {
      kind: "fields";
      files?: FileChoice[];
      aliases?: unknown;
      release_title?: unknown;
      requirements?: unknown;
      extra?: Record<string, unknown>;
    }
  | { kind: "json"; value: unknown }
  | { kind: "raw"; text: string }
  | { kind: "none" };

const extraFieldsArb = fc.dictionary(
  fc.constantFrom("version", "files ", "Files", "alias", "__proto__", "x", "move_aliases"),
  fc.jsonValue({ maxDepth: 2 }),
  { minKeys: 1, maxKeys: 2 },
);

/** Every field at random: hostile values mixed. */
const randomFieldsArb: fc.Arbitrary<BodyChoice> = fc
  .record(
    {
      files: filesArb,
      aliases: aliasesArb,
      release_title: releaseTitleArb,
      requirements: requirementsArb,
      extra: extraFieldsArb,
    },
    { requiredKeys: ["files"] },
  )
  .map((r) => ({ kind: "fields" as const, ...r }));

/** Valid optional fields (aliases may still clash with another product's). */
const validAliasesArb = fc.uniqueArray(fc.constantFrom(...ALIASES), { maxLength: 3 });

/** One hostile field on an otherwise valid body, so each rule is reached rather than hidden by an earlier one. */
const twistArb: fc.Arbitrary<Partial<Extract<BodyChoice, { kind: "fields" }>>> = fc.oneof(
  aliasesArb.map((aliases) => ({ aliases })),
  releaseTitleArb.map((release_title) => ({ release_title })),
  requirementsArb.map((requirements) => ({ requirements })),
  extraFieldsArb.map((extra) => ({ extra })),
  fc.constantFrom<unknown>(true, false, "yes", 1, null).map((move) => ({ extra: { move_aliases: move } })),
);

const twistedFieldsArb: fc.Arbitrary<BodyChoice> = fc
  .tuple(
    fc.record(
      {
        files: filesArb,
        aliases: validAliasesArb,
        release_title: fc.constantFrom("Fuzz 1", "Busybox 1.36", "Ünïcode 日本 😀"),
        requirements: fc.dictionary(
          fc.constantFrom("secureboot", "cgroup", "nesting"),
          fc.constantFrom("true", "false"),
          { maxKeys: 2 },
        ),
      },
      { requiredKeys: ["files"] },
    ),
    fc.option(twistArb, { freq: 2 }),
  )
  .map(([base, twist]) => ({ kind: "fields" as const, ...base, ...twist }));

const fieldsArb: fc.Arbitrary<BodyChoice> = fc.oneof(
  { weight: 3, arbitrary: twistedFieldsArb },
  { weight: 1, arbitrary: randomFieldsArb },
);

const rawBodyArb: fc.Arbitrary<BodyChoice> = fc
  .oneof(
    fc.constantFrom(
      '{"files": [',
      "",
      "nul",
      "{}}",
      '{"files": [{"name": "a"}]',
      "\u0000",
      "\ufeff{}",
      '{"files": [], "files": []}',
      "[".repeat(10000) + "]".repeat(10000),
      '{"a":' + "1".repeat(400) + "}",
      '{"files":"' + "x".repeat(1024 * 1024 + 10) + '"}',
    ),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 40 }),
  )
  .map((text) => ({ kind: "raw" as const, text }));

const bodyChoiceArb: fc.Arbitrary<BodyChoice> = fc.oneof(
  { weight: 12, arbitrary: fieldsArb },
  {
    weight: 12,
    arbitrary: filesArb.map((files) => ({ kind: "fields" as const, files })),
  },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.jsonValue({ maxDepth: 3 }),
        fc.constantFrom<unknown>([], null, 0, "files", { files: {} }, { files: null }),
      )
      .map((value) => ({ kind: "json" as const, value })),
  },
  { weight: 2, arbitrary: rawBodyArb },
  { weight: 1, arbitrary: fc.constant<BodyChoice>({ kind: "none" }) },
);

// --- cases ----------------------------------------------------------------------------------

export interface PublishCase {
  kind: "publish";
  product: ProductChoice;
  version: VersionChoice;
  token: TokenChoice;
  body: BodyChoice;
  contentType?: string;
}

export interface DeleteCase {
  kind: "delete";
  /** A live version (by index; `base` prefers one a delta names as base) or hostile names. */
  target:
    | { live: number; base: boolean }
    | { names: FuzzProduct; version: string }
    /** Every live version of VALID_PRODUCTS[valid], one DELETE each: the product is left without versions. */
    | { valid: number };
  token: TokenChoice;
}

/** Several identical (or nearly identical) publishes at once. */
export interface ConcurrentCase {
  kind: "concurrent";
  product: number;
  copies: number;
  /** `same`: one body n times; `files`: the same version with different roots; `versions`: one body under two versions. */
  mode: "same" | "files" | "versions";
}

export type RangeChoice = "exact" | "none" | "star" | { literal: string } | { shift: number };

export type UploadStep =
  | { op: "patch"; size: number; fill: number; range: RangeChoice }
  | { op: "commit"; digest: "exact" | "wrong" | "none" | { literal: string }; size?: number }
  /** A PATCH whose Content-Length is above the blob limit, with a few bytes sent: it must be answered, not waited on. */
  | { op: "declare"; length: string }
  | { op: "get" }
  | { op: "cancel" };

export interface UploadCase {
  kind: "upload";
  token: TokenChoice;
  /** `?prefix=` when opening: the fixture metadata digest, or a literal. */
  prefix?: "fixtureMeta" | { literal: string };
  steps: UploadStep[];
  /** Use another token than the opener for the steps. */
  stepToken?: TokenChoice;
}

export interface UnknownSessionCase {
  kind: "unknownSession";
  method: "GET" | "PATCH" | "PUT" | "DELETE";
  id: string;
  token: TokenChoice;
}

export interface TokenCase {
  kind: "token";
  token: TokenChoice;
  body:
    | BodyChoice
    | { kind: "token"; scopes?: unknown; ttl?: unknown; subject?: unknown; extra?: Record<string, unknown> };
}

export interface RevokeCase {
  kind: "revoke";
  id: string;
  token: TokenChoice;
}

export type FuzzCase =
  PublishCase | DeleteCase | ConcurrentCase | UploadCase | UnknownSessionCase | TokenCase | RevokeCase;

export const publishCaseArb: fc.Arbitrary<PublishCase> = fc.record(
  {
    kind: fc.constant("publish" as const),
    product: productChoiceArb,
    version: versionChoiceArb,
    token: tokenChoiceArb,
    body: bodyChoiceArb,
    contentType: fc.constantFrom(
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data",
      "",
    ),
  },
  { requiredKeys: ["kind", "product", "version", "token", "body"] },
);

export const deleteCaseArb: fc.Arbitrary<DeleteCase> = fc.record({
  kind: fc.constant("delete" as const),
  target: fc.oneof(
    { weight: 3, arbitrary: fc.record({ live: fc.nat({ max: 200 }), base: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ valid: fc.nat({ max: VALID_PRODUCTS.length - 1 }) }) },
    {
      weight: 1,
      arbitrary: fc.record({
        names: hostileProductArb,
        version: versionLiteralArb,
      }),
    },
  ),
  token: tokenChoiceArb,
});

export const concurrentCaseArb: fc.Arbitrary<ConcurrentCase> = fc.record({
  kind: fc.constant("concurrent" as const),
  product: fc.nat({ max: VALID_PRODUCTS.length - 1 }),
  copies: fc.integer({ min: 2, max: 6 }),
  mode: fc.constantFrom("same", "files", "versions"),
});

const rangeChoiceArb: fc.Arbitrary<RangeChoice> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<RangeChoice>("exact", "none", "star") },
  { weight: 2, arbitrary: fc.record({ shift: fc.integer({ min: -5, max: 5 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      literal: fc.oneof(
        fc.constantFrom(
          "bytes 0-0/1",
          "bytes 5-2/10",
          "bytes 0-9007199254740993/9007199254740994",
          "bytes 9007199254740993-9007199254740994/*",
          "bytes 99999999999999999999999-1/*",
          "bytes 0-99999999999999999999/*",
          "bytes -1-5/10",
          "bytes 0-4/2",
          "bytes */10",
          "bytes=0-4",
          "items 0-4/5",
          "bytes 0-4/5, bytes 5-9/10",
          "bytes 1e3-2e3/*",
          "bytes 0x0-0x4/5",
          "",
          " ",
        ),
        fc.stringMatching(/^bytes [0-9]{1,25}-[0-9]{1,25}\/([0-9]{1,25}|\*)$/),
        fc.stringMatching(/^[\x20-\x7e]{0,40}$/),
      ),
    }),
  },
);

const uploadStepArb: fc.Arbitrary<UploadStep> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("patch" as const),
      size: fc.oneof(fc.nat({ max: 64 }), fc.nat({ max: 70000 })),
      fill: fc.nat({ max: 255 }),
      range: rangeChoiceArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record(
      {
        op: fc.constant("commit" as const),
        digest: fc.oneof(
          { weight: 3, arbitrary: fc.constantFrom("exact" as const, "wrong" as const, "none" as const) },
          {
            weight: 1,
            arbitrary: fc.record({
              literal: fc.oneof(
                fc.constantFrom(
                  "sha256:" + "A".repeat(64),
                  "sha256:",
                  "sha256:" + "0".repeat(65),
                  "md5:" + "0".repeat(32),
                  "sha256%3A" + "0".repeat(64),
                  "../../x",
                ),
                fc.string({ maxLength: 70 }),
              ),
            }),
          },
        ),
        size: fc.nat({ max: 4096 }),
      },
      { requiredKeys: ["op", "digest"] },
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom<UploadStep>({ op: "get" }, { op: "cancel" }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("declare" as const),
      length: fc.constantFrom("70000000000", "9007199254740993", "99999999999999999999"),
    }),
  },
);

export const uploadCaseArb: fc.Arbitrary<UploadCase> = fc.record(
  {
    kind: fc.constant("upload" as const),
    token: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom("admin", "pushAll") },
      { weight: 1, arbitrary: tokenChoiceArb },
    ),
    prefix: fc.oneof(
      fc.constant("fixtureMeta" as const),
      fc.record({
        literal: fc.constantFrom("", "sha256:" + "0".repeat(64), "sha256:xyz", "x".repeat(300), "a\u0000"),
      }),
    ),
    steps: fc.array(uploadStepArb, { minLength: 1, maxLength: 5 }),
    stepToken: tokenChoiceArb,
  },
  { requiredKeys: ["kind", "token", "steps"] },
);

export const unknownSessionCaseArb: fc.Arbitrary<UnknownSessionCase> = fc.record({
  kind: fc.constant("unknownSession" as const),
  method: fc.constantFrom("GET", "PATCH", "PUT", "DELETE"),
  id: fc.oneof(
    fc.constantFrom(
      "00000000-0000-0000-0000-000000000000",
      "abcdefgh",
      "..",
      "%2e%2e",
      "..%2F..%2Fcatalog.sqlite",
      "%2F",
      "a\u0000",
      "x".repeat(65),
      "x".repeat(5000),
      "😀",
      "%",
    ),
    fc.string({ maxLength: 40 }),
  ),
  token: fc.oneof({ weight: 3, arbitrary: fc.constant("admin") }, { weight: 1, arbitrary: tokenChoiceArb }),
});

const scopeArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom("admin", "push:*", "delete:*", "push:fuzz/*", "push:fuzz/1/amd64/default"),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "",
      "root",
      "ADMIN",
      "push",
      "push:",
      "push: *",
      "pull:*",
      "push:**",
      "push:a b",
      "push:a\u0000",
      "push:(a|b)",
      "push:[",
      "push:\\",
      "push:" + "a".repeat(10000),
      "admin ",
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 1, [], {}, true) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
);

const ttlArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("30m", "1h", "12h", "30d", "1w", "3600s", "3600") },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      "99999999999d",
      "99999999999999999999",
      "9007199254740993",
      "100000w",
      "1e9",
      "0",
      "0s",
      "-1d",
      "1.5h",
      "1y",
      "1 d",
      " 1d ",
      "1D",
      "",
      "Infinity",
      "NaN",
      "1d\u0000",
      "١d",
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 0, 60, -1, 1e300, [], {}) },
  { weight: 1, arbitrary: fc.stringMatching(/^[0-9]{1,25}[smhdw]?$/) },
);

const subjectArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom("ci", "", "a\u0000", "a\nb", "x".repeat(128), "x".repeat(129), "😀"),
  fc.constantFrom<unknown>(null, 1, []),
  fc.string({ maxLength: 20 }),
);

const tokenTwistArb = fc.oneof(
  fc
    .oneof(
      { weight: 5, arbitrary: fc.array(scopeArb, { maxLength: 4 }) },
      {
        weight: 1,
        arbitrary: fc.integer({ min: 100, max: 20000 }).map((n) => Array.from({ length: n }, () => "push:*")),
      },
      { weight: 1, arbitrary: scopeArb },
    )
    .map((scopes) => ({ scopes })),
  ttlArb.map((ttl) => ({ ttl })),
  subjectArb.map((subject) => ({ subject })),
  fc
    .dictionary(fc.constantFrom("id", "expires_at", "admin", "x"), fc.jsonValue({ maxDepth: 1 }), {
      minKeys: 1,
      maxKeys: 2,
    })
    .map((extra) => ({ extra })),
);

/** A valid token request with one hostile field (or none), or every field hostile. */
const tokenFieldsArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.record(
          {
            scopes: fc.uniqueArray(fc.constantFrom("push:fuzz/*", "delete:fuzz/*", "push:*", "admin"), {
              minLength: 1,
              maxLength: 2,
            }),
            ttl: fc.constantFrom("1h", "30d", "3600"),
            subject: fc.constantFrom("ci", "fuzz"),
          },
          { requiredKeys: ["scopes"] },
        ),
        fc.option(tokenTwistArb, { freq: 4 }),
      )
      .map(([base, twist]) => ({ kind: "token" as const, ...base, ...twist })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record(
        { scopes: fc.array(scopeArb, { maxLength: 4 }), ttl: ttlArb, subject: subjectArb },
        { requiredKeys: [] },
      )
      .map((r) => ({ kind: "token" as const, ...r })),
  },
);

export const tokenCaseArb: fc.Arbitrary<TokenCase> = fc.record({
  kind: fc.constant("token" as const),
  token: fc.oneof({ weight: 5, arbitrary: fc.constant("admin") }, { weight: 1, arbitrary: tokenChoiceArb }),
  body: fc.oneof(
    { weight: 8, arbitrary: tokenFieldsArb },
    { weight: 1, arbitrary: rawBodyArb },
    {
      weight: 1,
      arbitrary: fc.jsonValue({ maxDepth: 2 }).map((value) => ({ kind: "json" as const, value })),
    },
  ),
});

export const revokeCaseArb: fc.Arbitrary<RevokeCase> = fc.record({
  kind: fc.constant("revoke" as const),
  id: fc.oneof(
    fc.constantFrom(
      "00000000-0000-0000-0000-000000000000",
      "..",
      "%2F",
      "a\u0000",
      "x".repeat(5000),
      "%",
      "",
    ),
    fc.string({ maxLength: 40 }),
  ),
  token: fc.oneof({ weight: 3, arbitrary: fc.constant("admin") }, { weight: 1, arbitrary: tokenChoiceArb }),
});

/** The catalog-changing mix: mostly publishes, some deletes and concurrent duplicates. */
export const catalogCaseArb: fc.Arbitrary<FuzzCase> = fc.oneof(
  { weight: 16, arbitrary: publishCaseArb },
  { weight: 2, arbitrary: deleteCaseArb },
  { weight: 1, arbitrary: concurrentCaseArb },
);

/** Uploads, unknown sessions, token creation and revocation. */
export const otherCaseArb: fc.Arbitrary<FuzzCase> = fc.oneof(
  { weight: 5, arbitrary: uploadCaseArb },
  { weight: 2, arbitrary: unknownSessionCaseArb },
  { weight: 4, arbitrary: tokenCaseArb },
  { weight: 1, arbitrary: revokeCaseArb },
);

// --- running a case -------------------------------------------------------------------------

/** Version keys handed out by `fresh` and `older` over the whole run (never reused). */
export class VersionClock {
  private fresh = 0;
  private older = 0;
  private readonly freshStart = Date.UTC(2030, 0, 1);
  private readonly olderStart = Date.UTC(2001, 0, 1);

  next(kind: "fresh" | "older"): string {
    const minutes = kind === "fresh" ? this.fresh++ : this.older++;
    const start = kind === "fresh" ? this.freshStart : this.olderStart;
    return serial(new Date(start + minutes * 60_000));
  }
}

function serial(d: Date): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}`;
}

function segment(value: string, encoding: Encoding): string {
  if (encoding === "raw") return value;
  if (encoding === "double") return encodeURIComponent(encodeURIComponent(value));
  return encodeURIComponent(value);
}

function keyOf(p: (typeof VALID_PRODUCTS)[number]): ProductKey {
  return { os: p.os, release: p.release, arch: p.arch, variant: p.variant };
}

function productOf(c: ProductChoice): { key: ProductKey; encoding: Encoding; lxdArch: string } {
  if ("valid" in c) {
    const p = VALID_PRODUCTS[c.valid]!;
    return { key: keyOf(p), encoding: "component", lxdArch: p.lxdArch };
  }
  const { encoding, ...key } = c.names;
  return { key, encoding, lxdArch: "x86_64" };
}

/** The metadata.yaml a product's "meta" file describes: its own names, or a valid product's. */
function describedBy(key: ProductKey): ProductKey {
  const valid = VALID_PRODUCTS.find((p) => sameProduct(keyOf(p), key));
  return valid ? key : keyOf(VALID_PRODUCTS[0]!);
}

function versionUrl(key: ProductKey, encoding: Encoding, version: string): string {
  const parts = [key.os, key.release, key.arch, key.variant].map((s) => segment(s, encoding));
  return `/api/v1/products/${parts.join("/")}/versions/${segment(version, encoding)}`;
}

function sameProduct(a: ProductKey, b: ProductKey): boolean {
  return a.os === b.os && a.release === b.release && a.arch === b.arch && a.variant === b.variant;
}

function tokenOf(t: FuzzTarget, c: TokenChoice | undefined): string | undefined {
  if (c === undefined || c === "none") return undefined;
  if (typeof c === "string") return t.tokens.get(c);
  return c.literal;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

interface Resolved {
  path: string;
  version: string;
  key: ProductKey;
  body: string | undefined;
}

/** Resolves a publish case against the catalog as it is now; uploads the metadata it needs. */
async function resolvePublish(
  t: FuzzTarget,
  clock: VersionClock,
  c: Pick<PublishCase, "product" | "version" | "body">,
): Promise<Resolved> {
  const { key, encoding, lxdArch } = productOf(c.product);
  const live = (await t.live()).filter((v) => sameProduct(v.product, key));
  const versions = live.map((v) => v.version).sort(byteOrder);
  let version: string;
  if (c.version === "fresh" || c.version === "older") version = clock.next(c.version);
  else if ("live" in c.version)
    version = versions.length ? versions[c.version.live % versions.length]! : clock.next("fresh");
  else version = c.version.literal;

  const body = await bodyText(t, c.body, key, version, lxdArch, versions);
  return { path: versionUrl(key, encoding, version), version, key, body };
}

async function bodyText(
  t: FuzzTarget,
  b: BodyChoice,
  key: ProductKey,
  version: string,
  lxdArch: string,
  liveVersions: string[],
): Promise<string | undefined> {
  switch (b.kind) {
    case "none":
      return undefined;
    case "raw":
      return b.text;
    case "json":
      return JSON.stringify(b.value) ?? "null";
    case "fields": {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(b.extra ?? {})) out[k] = v;
      if (b.files !== undefined) {
        out.files = [];
        for (const f of b.files) {
          (out.files as unknown[]).push(await fileJson(t, f, key, version, lxdArch, liveVersions));
        }
      }
      if ("aliases" in b) out.aliases = b.aliases;
      if ("release_title" in b) out.release_title = b.release_title;
      if ("requirements" in b) out.requirements = b.requirements;
      return JSON.stringify(out);
    }
  }
}

async function fileJson(
  t: FuzzTarget,
  f: FileChoice,
  key: ProductKey,
  version: string,
  lxdArch: string,
  liveVersions: string[],
): Promise<Record<string, unknown>> {
  const o: Record<string, unknown> = { ...f.extra, name: f.name, ftype: f.ftype };
  const d = f.digest;
  if (typeof d === "object") o.digest = d.literal;
  else if (d === "meta") o.digest = await t.metadataFor(key, version, lxdArch, describedBy(key));
  else if (d === "metaOfOtherVersion") o.digest = t.otherMetadata(key, version);
  else if (d === "squashfs") o.digest = t.roots.get("squashfs");
  else if (d === "tar") o.digest = t.roots.get("root.tar.xz");
  else if (d === "delta") o.digest = t.deltaDigest;
  else if (d === "fixtureMeta") o.digest = t.fixtureMeta;
  else o.digest = digestOfText(`never uploaded ${version}`);
  const b = f.base;
  if (b !== undefined) {
    if (typeof b === "object") o.delta_base = b.literal;
    else if (b === "newest") o.delta_base = liveVersions.at(-1) ?? "20240101_0000";
    else if (b === "oldest") o.delta_base = liveVersions[0] ?? "20240101_0000";
    else if (b === "self") o.delta_base = version;
    else if (b === "missing") o.delta_base = "20010101_0000";
    else o.delta_base = liveVersions.find((v) => byteOrder(v, version) > 0) ?? "99991231_2359";
  }
  return o;
}

/** Runs one case: its requests, then the invariant checks. Throws an InvariantError on a violation. */
export async function runCase(t: FuzzTarget, clock: VersionClock, c: FuzzCase): Promise<void> {
  const exchanges: Exchange[] = [];
  switch (c.kind) {
    case "publish": {
      const r = await resolvePublish(t, clock, c);
      const before = await t.observe();
      const headers: Record<string, string> = {};
      if (c.contentType !== undefined) headers["content-type"] = c.contentType;
      const res = await t.send(
        { method: "PUT", path: r.path, token: tokenOf(t, c.token), body: r.body, headers },
        exchanges,
      );
      const body = parsed(r.body);
      const admin = c.token === "admin";
      await t.check(before, exchanges, {
        uploads: false,
        aliasMovesAllowed: admin && body?.move_aliases === true,
      });
      if (res.status === 201) await expectServed(t, res.json, exchanges);
      if (res.status < 300 && typeof c.token === "string" && !admin) {
        // What the product holds now that it did not before must be inside the token's scope.
        const gained = aliasesOf(t.lastProducts(), r.key).filter(
          (a) => !aliasesOf(before.products, r.key).includes(a),
        );
        const outside = gained.filter((a) => !inPushScope(TOKEN_ROLES[c.token as string] ?? [], a));
        if (outside.length)
          throw violated(
            `a push token gave its product aliases outside its scope: ${JSON.stringify(outside)}`,
            exchanges,
          );
      }
      return;
    }
    case "delete": {
      let paths: string[];
      if ("valid" in c.target) {
        const key = productOf({ valid: c.target.valid }).key;
        const live = (await t.live()).filter((v) => sameProduct(v.product, key));
        paths = live.map((v) => versionUrl(key, "component", v.version));
        if (!paths.length) paths = [versionUrl(key, "component", "20240101_0000")];
      } else if ("live" in c.target) {
        const live = await t.live();
        const bases = new Set(live.flatMap((v) => v.deltaBases.map((b) => JSON.stringify([v.product, b]))));
        const pool = c.target.base
          ? live.filter((v) => bases.has(JSON.stringify([v.product, v.version])))
          : [];
        const from = pool.length ? pool : live;
        const v: LiveVersion | undefined = from[c.target.live % Math.max(1, from.length)];
        paths = [
          v
            ? versionUrl(v.product, "component", v.version)
            : versionUrl(productOf({ valid: 0 }).key, "component", "20240101_0000"),
        ];
      } else {
        paths = [versionUrl(c.target.names, c.target.names.encoding, c.target.version)];
      }
      const before = await t.observe();
      for (const path of paths)
        await t.send({ method: "DELETE", path, token: tokenOf(t, c.token) }, exchanges);
      await t.check(before, exchanges, { uploads: false });
      return;
    }
    case "concurrent": {
      const product: ProductChoice = { valid: c.product };
      const r = await resolvePublish(t, clock, {
        product,
        version: "fresh",
        body: { kind: "fields", files: [metaFile, squashFile] },
      });
      const requests = [];
      for (let i = 0; i < c.copies; i++) {
        let { path, body } = r;
        if (c.mode === "files" && i % 2 === 1) {
          body = await bodyText(
            t,
            { kind: "fields", files: [metaFile, tarFile] },
            r.key,
            r.version,
            productOf(product).lxdArch,
            [],
          );
        }
        if (c.mode === "versions" && i % 2 === 1) {
          path = versionUrl(r.key, "component", clock.next("fresh"));
        }
        requests.push({ method: "PUT", path, token: t.tokens.get("admin"), body });
      }
      const before = await t.observe();
      await Promise.all(requests.map((q) => t.send(q, exchanges)));
      await t.check(before, exchanges, { uploads: false });
      const created = exchanges.filter((x) => x.status === 201);
      if (created.length > 1 && c.mode !== "versions") {
        throw violated(
          `${created.length} concurrent publishes of one version were all answered 201`,
          exchanges,
        );
      }
      if (
        c.mode === "versions" &&
        created.length > 1 &&
        new Set(created.map((x) => x.request.path)).size > 1
      ) {
        throw violated("the same (metadata, root) pair was published under two versions at once", exchanges);
      }
      return;
    }
    case "upload":
      return runUpload(t, c);
    case "unknownSession": {
      const path = `/api/v1/uploads/${c.id.includes("%") ? c.id : encodeURIComponent(c.id)}`;
      const before = await t.observe();
      const q = c.method === "PUT" ? `?digest=${digestOf(Buffer.from("x"))}` : "";
      const body = c.method === "PATCH" ? "x" : undefined;
      const headers: Record<string, string> = c.method === "PATCH" ? { "content-range": "bytes 0-0/1" } : {};
      await t.send(
        { method: c.method, path: path + q, token: tokenOf(t, c.token), body, headers },
        exchanges,
      );
      await t.check(before, exchanges, { uploads: true, neverChanges: true });
      return;
    }
    case "token": {
      let body: string | undefined;
      if (c.body.kind === "token") {
        const o: Record<string, unknown> = { ...c.body.extra };
        for (const k of ["scopes", "ttl", "subject"] as const) if (k in c.body) o[k] = c.body[k];
        body = JSON.stringify(o);
      } else {
        body = await bodyText(
          t,
          c.body,
          { os: "x", release: "x", arch: "amd64", variant: "x" },
          "20240101",
          "x86_64",
          [],
        );
      }
      const before = await t.observe();
      const res = await t.send(
        { method: "POST", path: "/api/v1/tokens", token: tokenOf(t, c.token), body },
        exchanges,
      );
      await t.check(before, exchanges, { uploads: false, neverChanges: true });
      if (res.status === 201) {
        const expires = Date.parse(String(res.json?.expires_at));
        if (!Number.isFinite(expires) || expires <= Date.now()) {
          throw violated("a token was created with an expiry that is not a future date", exchanges);
        }
        const token = String(res.json?.token);
        // The new token works (or is refused) without a 5xx; this touches no state.
        await t.send(
          { method: "GET", path: "/api/v1/uploads/00000000-0000-0000-0000-000000000000", token },
          exchanges,
        );
        const last = exchanges.at(-1)!;
        if (last.status >= 500) throw violated("a newly created token fails with a 5xx", exchanges);
      }
      return;
    }
    case "revoke": {
      const before = await t.observe();
      const path = `/api/v1/tokens/${c.id.includes("%") ? c.id : encodeURIComponent(c.id)}`;
      await t.send({ method: "DELETE", path, token: tokenOf(t, c.token) }, exchanges);
      await t.check(before, exchanges, { uploads: false, neverChanges: true });
      return;
    }
  }
}

function parsed(body: string | undefined): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body ?? "");
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * Whether a `push:` pattern of these scopes covers an alias, matched as product paths are
 * (README, "Aliases are matched against push: patterns"): `*` is any run of characters.
 */
function inPushScope(scopes: string[], alias: string): boolean {
  return scopes.some((s) => {
    if (!s.startsWith("push:")) return false;
    const glob = s.slice("push:".length);
    const re = new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
    return re.test(alias);
  });
}

/** After a 201, the version is in images.json. */
async function expectServed(
  t: FuzzTarget,
  answer: Record<string, unknown> | null,
  exchanges: Exchange[],
): Promise<void> {
  // The names as the server read them from the URL (fetch drops tabs and newlines, for one).
  const [os = "", release = "", arch = "", variant = ""] = String(answer?.product).split(":");
  const key = { os, release, arch, variant };
  const live = await t.live();
  if (!live.some((v) => sameProduct(v.product, key) && v.version === answer?.version)) {
    throw violated("a publish answered 201 is not in /streams/v1/images.json", exchanges);
  }
}

/** The aliases a product holds in a GET /api/v1/products body. */
function aliasesOf(productsBody: string, key: ProductKey): string[] {
  const list =
    (JSON.parse(productsBody) as { products?: (ProductKey & { aliases?: unknown })[] }).products ?? [];
  const p = list.find((x) => sameProduct(x, key));
  return Array.isArray(p?.aliases) ? p.aliases.map(String) : [];
}

function rangeHeader(r: RangeChoice, offset: number, size: number): string | undefined {
  if (r === "none") return undefined;
  const end = offset + size - 1;
  if (r === "exact") return `bytes ${offset}-${end}/${offset + size}`;
  if (r === "star") return `bytes ${offset}-${end}/*`;
  if ("shift" in r) return `bytes ${offset + r.shift}-${end + r.shift}/*`;
  return r.literal;
}

async function runUpload(t: FuzzTarget, c: UploadCase): Promise<void> {
  const exchanges: Exchange[] = [];
  const before = await t.observe();
  const prefix =
    c.prefix === undefined
      ? ""
      : `?prefix=${encodeURIComponent(c.prefix === "fixtureMeta" ? t.fixtureMeta : c.prefix.literal)}`;
  const open = await t.send(
    { method: "POST", path: `/api/v1/uploads${prefix}`, token: tokenOf(t, c.token) },
    exchanges,
  );
  if (open.status === 201) {
    const location = String(open.json?.location);
    const token = tokenOf(t, c.stepToken ?? c.token);
    const sent: Buffer[] = [];
    for (const s of c.steps) {
      const offset = Buffer.concat(sent).length;
      if (s.op === "patch") {
        const bytes = Buffer.alloc(s.size, s.fill);
        const headers: Record<string, string> = {};
        const range = rangeHeader(s.range, offset, s.size);
        if (range !== undefined) headers["content-range"] = range;
        const r = await t.send(
          {
            method: "PATCH",
            path: location,
            token,
            headers,
            body: `<${s.size} bytes of ${s.fill}>`,
            rawBody: bytes,
          },
          exchanges,
        );
        if (r.status === 202) sent.push(bytes.subarray(0, Math.max(0, Number(r.json?.offset) - offset)));
      } else if (s.op === "commit") {
        const all = Buffer.concat(sent);
        const digest =
          s.digest === "exact"
            ? digestOf(all)
            : s.digest === "wrong"
              ? digestOfText(`wrong ${all.length}`)
              : s.digest === "none"
                ? undefined
                : s.digest.literal;
        const q = digest === undefined ? "" : `?digest=${encodeURIComponent(digest)}`;
        await t.send({ method: "PUT", path: location + q, token }, exchanges);
      } else if (s.op === "declare") {
        await t.sendDeclared(location, token, s.length, exchanges);
      } else if (s.op === "get") {
        await t.send({ method: "GET", path: location, token }, exchanges);
      } else {
        await t.send({ method: "DELETE", path: location, token }, exchanges);
      }
    }
    // Leave no session behind: cancel with the opener's token (a 404 when the case closed it).
    await t.send({ method: "DELETE", path: location, token: tokenOf(t, c.token) }, exchanges);
  }
  await t.check(before, exchanges, { uploads: true, neverChanges: true });
}

/** An invariant beyond the generic ones (a 2xx that does not hold up), with the case's exchanges. */
function violated(what: string, exchanges: readonly Exchange[]): InvariantError {
  return new InvariantError(`${what}\n${describeExchanges(exchanges)}`);
}

// --- known cases ----------------------------------------------------------------------------

/** A publish of fresh files to a valid product with the admin token; `body` adds fields. */
function publishOf(
  product: number,
  files: FileChoice[] = [metaFile, squashFile],
  body: Partial<Extract<BodyChoice, { kind: "fields" }>> = {},
  version: VersionChoice = "fresh",
): PublishCase {
  return {
    kind: "publish",
    product: { valid: product },
    version,
    token: "admin",
    body: { kind: "fields", files, ...body },
  };
}

/**
 * Cases that failed once (issue 6 and what this suite found), run first, in this order, before
 * the random ones: a sequence sets up the catalog state its last case needs.
 */
export const KNOWN_CATALOG_CASES: FuzzCase[] = [
  // requirement key "bad key" (the request in the issue)
  publishOf(0, [metaFile, squashFile], { requirements: { "bad key": "x" } }),
  // a control character in release_title
  publishOf(0, [metaFile, squashFile], { release_title: "a\u0000b" }),
  // an alias listed twice
  publishOf(2, [metaFile, squashFile], { aliases: ["fuzz/2", "fuzz/2"] }),
  // a delta whose base is newer than its version
  publishOf(0),
  publishOf(0, [metaFile, squashFile, deltaFile("newest")], {}, "older"),
  // a squashfs delta in a version without a squashfs
  publishOf(0),
  publishOf(0, [metaFile, tarFile, deltaFile("oldest")]),
  // a squashfs delta whose base version has no squashfs
  publishOf(3, [metaFile, tarFile]),
  publishOf(3, [metaFile, squashFile, deltaFile("newest")]),
  // an alias/<arch> that another product's alias already covers
  publishOf(4, [metaFile, squashFile], { aliases: ["fuzz/1"] }),
  publishOf(1, [metaFile, squashFile], { aliases: ["fuzz/1/amd64"] }),
  // deleting a version that a later delta names as its base
  publishOf(2),
  publishOf(2, [metaFile, squashFile, deltaFile("newest")]),
  { kind: "delete", target: { live: 0, base: true }, token: "admin" },
  // an alias of a product whose versions were all deleted, taken by another product without
  // move_aliases: both hold it, and the first can no longer publish (409 ALIAS_CONFLICT)
  publishOf(1, [metaFile, squashFile], { aliases: ["evil"] }),
  { kind: "delete", target: { valid: 1 }, token: "admin" },
  publishOf(2, [metaFile, squashFile], { aliases: ["evil"] }),
  // a path segment that is not valid percent-encoding
  {
    kind: "publish",
    product: { names: { os: "fuzz", release: "%", arch: "amd64", variant: "default", encoding: "raw" } },
    version: "fresh",
    token: "admin",
    body: { kind: "fields", files: [metaFile, squashFile] },
  },
  // an undecodable segment in a path no route documents (an empty variant makes `//`): 400
  // INVALID_NAME, where openapi.yaml allows only 404/405 for undocumented paths
  {
    kind: "publish",
    product: { names: { os: "%zz", release: "fuzz", arch: "amd64", variant: "", encoding: "raw" } },
    version: "fresh",
    token: "admin",
    body: { kind: "fields", files: [metaFile, squashFile] },
  },
  // concurrent duplicates
  { kind: "concurrent", product: 0, copies: 4, mode: "same" },
  { kind: "concurrent", product: 1, copies: 4, mode: "files" },
  { kind: "concurrent", product: 2, copies: 2, mode: "versions" },
];

export const KNOWN_OTHER_CASES: FuzzCase[] = [
  // Content-Range numbers past 2^53 and past Number's range, an end before the start
  ...["bytes 99999999999999999999999-1/*", "bytes 9007199254740993-9007199254740994/*", "bytes 5-2/10"].map(
    (literal): UploadCase => ({
      kind: "upload",
      token: "admin",
      steps: [{ op: "patch", size: 10, fill: 1, range: { literal } }],
    }),
  ),
  // a token TTL of 99999999999d
  { kind: "token", token: "admin", body: { kind: "token", scopes: ["push:*"], ttl: "99999999999d" } },
  // path segments that are not valid percent-encoding
  { kind: "revoke", id: "%", token: "admin" },
  { kind: "unknownSession", method: "GET", id: "%", token: "admin" },
  { kind: "unknownSession", method: "GET", id: "a/%zz", token: "admin" },
];
