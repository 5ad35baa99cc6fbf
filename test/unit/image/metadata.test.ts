import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { pack as tarPack, type Header } from "tar-stream";
import { CodecUnavailableError } from "../../../image/codec.js";
import { ImageFormatError, type ImageFormatReason } from "../../../image/errors.js";
import { METADATA_MAX_BYTES, readImageMetadata } from "../../../image/metadata.js";

interface TarEntry {
  name: string;
  body?: string | Buffer;
  type?: Header["type"];
  linkname?: string;
}

/** A real tarball written by tar-stream. */
async function tarball(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarPack();
  for (const e of entries) {
    const header = { name: e.name, type: e.type ?? "file", linkname: e.linkname, mode: 0o644 };
    if (e.type === "directory" || e.type === "symlink") pack.entry(header);
    else pack.entry(header, e.body ?? "");
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Compresses with the real command-line tool. */
function compress(command: string, args: string[], data: Buffer): Buffer {
  const r = spawnSync(command, args, { input: data, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `${command} failed: ${r.stderr?.toString()}`);
  return r.stdout;
}
const xz = (data: Buffer) => compress("xz", ["-c", "-T1"], data);

const METADATA_YAML = `architecture: x86_64
creation_date: 1704067200
expiry_date: 1706659200
properties:
  architecture: amd64
  description: Debian bookworm amd64 (20240101_0000)
  os: debian
  release: 12
  version: 12.10
  serial: "20240101_0000"
  variant: default
  empty:
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create]
    template: hosts.tpl
    create_only: true
`;

const EXPECTED = {
  architecture: "x86_64",
  creationDate: 1704067200,
  expiryDate: 1706659200,
  properties: {
    architecture: "amd64",
    description: "Debian bookworm amd64 (20240101_0000)",
    os: "debian",
    release: "12",
    version: "12.10",
    serial: "20240101_0000",
    variant: "default",
    empty: "",
  },
  templates: ["/etc/hostname", "/etc/hosts"],
};

const IMAGE_ENTRIES: TarEntry[] = [
  { name: "metadata.yaml", body: METADATA_YAML },
  { name: "templates/", type: "directory" },
  { name: "templates/hostname.tpl", body: "{{ container.name }}\n" },
  { name: "templates/hosts.tpl", body: "127.0.0.1 localhost\n" },
];

function refused(reason: ImageFormatReason, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ImageFormatError, `expected an ImageFormatError, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

/** Names of this process's live child processes (the test runner gives each file its own process). */
function childCommands(): string[] {
  const r = spawnSync("ps", ["-o", "comm=", "--ppid", String(process.pid)], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && l !== "ps");
}

describe("readImageMetadata", () => {
  let dir: string;
  let n = 0;
  const file = async (bytes: Buffer): Promise<string> => {
    const path = join(dir, `image-${n++}`);
    await writeFile(path, bytes);
    return path;
  };
  const metadataTar = (yaml: string | Buffer, name = "metadata.yaml") => tarball([{ name, body: yaml }]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lxhub-metadata-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads an xz metadata tarball", async () => {
    assert.deepEqual(await readImageMetadata(await file(xz(await tarball(IMAGE_ENTRIES)))), EXPECTED);
  });

  it("reads gzip, zstd, bzip2 and uncompressed tarballs alike", async () => {
    const tar = await tarball(IMAGE_ENTRIES);
    for (const bytes of [
      tar,
      gzipSync(tar),
      compress("gzip", ["-c"], tar),
      compress("zstd", ["-c", "-q"], tar),
      compress("bzip2", ["-c"], tar),
    ]) {
      assert.deepEqual(await readImageMetadata(await file(bytes)), EXPECTED);
    }
  });

  it("reads a stream as well as a path", async () => {
    const bytes = xz(await tarball(IMAGE_ENTRIES));
    // Tiny chunks: the magic bytes arrive split across reads.
    const chunks = function* () {
      for (let i = 0; i < bytes.length; i += 3) yield bytes.subarray(i, i + 3);
    };
    assert.deepEqual(await readImageMetadata(Readable.from(chunks())), EXPECTED);
  });

  it("accepts ./metadata.yaml, as GNU tar writes it for `tar -C dir -cJf out .`", async () => {
    const tree = join(dir, "tree");
    await mkdir(join(tree, "templates"), { recursive: true });
    await writeFile(join(tree, "metadata.yaml"), METADATA_YAML);
    await writeFile(join(tree, "templates", "hostname.tpl"), "{{ container.name }}\n");
    const out = join(dir, "gnu.tar.xz");
    const r = spawnSync("tar", ["-C", tree, "-cJf", out, "."], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const listing = spawnSync("tar", ["-tJf", out], { encoding: "utf8" }).stdout;
    assert.match(listing, /^\.\/metadata\.yaml$/m);
    assert.deepEqual(await readImageMetadata(out), EXPECTED);

    assert.deepEqual(
      await readImageMetadata(await file(xz(await metadataTar(METADATA_YAML, "./metadata.yaml")))),
      EXPECTED,
    );
  });

  it("finds metadata.yaml after other members", async () => {
    const tar = await tarball([
      { name: "templates/", type: "directory" },
      { name: "templates/big.tpl", body: randomBytes(300 * 1024) },
      { name: "rootfs/metadata.yaml", body: "architecture: wrong\n" },
      { name: "metadata.yaml", body: METADATA_YAML },
    ]);
    assert.deepEqual(await readImageMetadata(await file(xz(tar))), EXPECTED);
  });

  it("stops reading as soon as metadata.yaml is parsed, destroying an endless source", async () => {
    const tar = await metadataTar(METADATA_YAML);
    let pulled = 0;
    const endless = new Readable({
      read() {
        const chunk = pulled === 0 ? tar : Buffer.alloc(64 * 1024); // zero blocks, forever
        pulled += chunk.length;
        this.push(chunk);
      },
    });
    assert.deepEqual(await readImageMetadata(endless), EXPECTED);
    assert.equal(endless.destroyed, true);
    assert.ok(pulled < 8 << 20, `read ${pulled} bytes of an endless stream`);
  });

  it("stops xz when it is done with an endless xz stream", async () => {
    // xz decodes concatenated streams: the tarball, then compressed zero blocks without end.
    const head = xz(await metadataTar(METADATA_YAML));
    const zeros = xz(Buffer.alloc(1 << 20));
    let pulled = 0;
    const endless = new Readable({
      read() {
        const chunk = pulled === 0 ? head : zeros;
        pulled += chunk.length;
        this.push(chunk);
      },
    });
    assert.deepEqual(await readImageMetadata(endless), EXPECTED);
    assert.equal(endless.destroyed, true);
    let left = childCommands();
    for (let i = 0; i < 40 && left.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      left = childCommands();
    }
    assert.deepEqual(left, [], "no decompressor process is left running");
  });

  it("refuses a tarball without metadata.yaml at the top level", async () => {
    const tar = await tarball([
      { name: "templates/", type: "directory" },
      { name: "templates/hostname.tpl", body: "x" },
      { name: "rootfs/metadata.yaml", body: METADATA_YAML },
    ]);
    await assert.rejects(readImageMetadata(await file(xz(tar))), refused("NO_METADATA", /metadata\.yaml/));
  });

  it("refuses a metadata.yaml larger than 1 MiB, and accepts one just below", async () => {
    const padding = (size: number) => `${METADATA_YAML}# ${"x".repeat(size - METADATA_YAML.length - 3)}\n`;
    const big = padding(METADATA_MAX_BYTES + 1);
    assert.equal(Buffer.byteLength(big), METADATA_MAX_BYTES + 1);
    await assert.rejects(
      readImageMetadata(await file(xz(await metadataTar(big)))),
      refused("METADATA_TOO_LARGE", /1 MiB/),
    );
    const fits = padding(METADATA_MAX_BYTES);
    assert.deepEqual(await readImageMetadata(await file(xz(await metadataTar(fits)))), EXPECTED);
  });

  it("refuses metadata.yaml that is a symlink", async () => {
    const tar = await tarball([
      { name: "metadata.yaml", type: "symlink", linkname: "/etc/shadow" },
      { name: "real.yaml", body: METADATA_YAML },
    ]);
    await assert.rejects(readImageMetadata(await file(tar)), refused("INVALID_METADATA", /symlink/));
  });

  it("refuses bytes that are not a tarball", async () => {
    await assert.rejects(
      readImageMetadata(await file(randomBytes(4096))),
      refused("NOT_TAR", /not a tar archive/),
    );
    await assert.rejects(
      readImageMetadata(await file(Buffer.from("hello\n"))),
      refused("NOT_TAR", /not a tar archive/),
    );
    await assert.rejects(
      readImageMetadata(await file(xz(randomBytes(4096)))),
      refused("NOT_TAR", /not a tar archive \(after xz decompression\)/),
    );
  });

  it("refuses an empty file", async () => {
    await assert.rejects(readImageMetadata(await file(Buffer.alloc(0))), refused("EMPTY", /empty/));
  });

  it("refuses a truncated tarball", async () => {
    const tar = await tarball(IMAGE_ENTRIES);
    await assert.rejects(
      readImageMetadata(await file(tar.subarray(0, 700))),
      refused("NOT_TAR", /truncated/),
    );
  });

  it("refuses truncated or corrupt xz and gzip, saying which", async () => {
    // Incompressible data ahead of metadata.yaml, so the cut falls before it.
    const tar = await tarball([{ name: "templates/noise", body: randomBytes(256 * 1024) }, ...IMAGE_ENTRIES]);
    const x = xz(tar);
    await assert.rejects(
      readImageMetadata(await file(x.subarray(0, x.length >> 1))),
      refused("CORRUPT_COMPRESSION", /corrupt or truncated xz data: xz failed .*Unexpected end of input/),
    );
    // Damage in the stream header: xz refuses before it writes a byte.
    const flipped = Buffer.from(x);
    flipped[9] = flipped[9]! ^ 0xff;
    await assert.rejects(
      readImageMetadata(await file(flipped)),
      refused("CORRUPT_COMPRESSION", /xz failed .*Compressed data is corrupt/),
    );
    const gz = gzipSync(tar);
    await assert.rejects(
      readImageMetadata(await file(gz.subarray(0, gz.length >> 1))),
      refused("CORRUPT_COMPRESSION", /gzip/),
    );
  });

  it("refuses invalid YAML", async () => {
    const bad = "architecture: x86_64\ncreation_date: [1, 2\n";
    await assert.rejects(
      readImageMetadata(await file(await metadataTar(bad))),
      refused("INVALID_METADATA", /YAML/),
    );
    const dup = "architecture: x86_64\narchitecture: aarch64\ncreation_date: 1\n";
    await assert.rejects(readImageMetadata(await file(await metadataTar(dup))), refused("INVALID_METADATA"));
    await assert.rejects(
      readImageMetadata(await file(await metadataTar("- a list\n- not a mapping\n"))),
      refused("INVALID_METADATA", /mapping/),
    );
    await assert.rejects(
      readImageMetadata(await file(await metadataTar(Buffer.from([0x61, 0x3a, 0x20, 0xff, 0xfe, 0x0a])))),
      refused("INVALID_METADATA", /UTF-8/),
    );
  });

  it("refuses metadata with missing or ill-typed fields, naming the field", async () => {
    const cases: [string, RegExp][] = [
      ["creation_date: 1704067200\n", /architecture is missing/],
      ['architecture: ""\ncreation_date: 1704067200\n', /architecture is empty/],
      ["architecture: {a: b}\ncreation_date: 1704067200\n", /architecture must be a string/],
      ["architecture: x86_64\n", /creation_date is missing/],
      [
        'architecture: x86_64\ncreation_date: "1704067200"\n',
        /creation_date must be an integer .*string "1704067200"/,
      ],
      ["architecture: x86_64\ncreation_date: 2024-01-01\n", /creation_date must be an integer/],
      ["architecture: x86_64\ncreation_date: 1704067200.5\n", /creation_date must be an integer/],
      ["architecture: x86_64\ncreation_date: 0\n", /creation_date must be positive/],
      ["architecture: x86_64\ncreation_date: 1\nexpiry_date: soon\n", /expiry_date must be an integer/],
      ["architecture: x86_64\ncreation_date: 1\nproperties: [a, b]\n", /properties must be a mapping/],
      [
        "architecture: x86_64\ncreation_date: 1\nproperties:\n  os: {name: debian}\n",
        /properties\.os must be a string/,
      ],
      ["architecture: x86_64\ncreation_date: 1\ntemplates: [a]\n", /templates must be a mapping/],
      ["architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hosts: hosts.tpl\n", /templates\./],
    ];
    for (const [yaml, pattern] of cases) {
      await assert.rejects(
        readImageMetadata(await file(await metadataTar(yaml))),
        refused("INVALID_METADATA", pattern),
        yaml,
      );
    }
  });

  it("takes properties as LXD does: scalars by their text, absent sections as empty", async () => {
    const yaml =
      "architecture: aarch64\ncreation_date: 1\nproperties:\n  stable: true\n  build: 007\n  ratio: 1.50\n";
    assert.deepEqual(await readImageMetadata(await file(await metadataTar(yaml))), {
      architecture: "aarch64",
      creationDate: 1,
      properties: { stable: "true", build: "007", ratio: "1.50" },
      templates: [],
    });
  });

  it("passes on the source's own error, and a missing decompressor's", async () => {
    await assert.rejects(readImageMetadata(join(dir, "does-not-exist")), { code: "ENOENT" });

    const path = await file(xz(await tarball(IMAGE_ENTRIES)));
    const saved = process.env.PATH;
    process.env.PATH = "/nonexistent-lxhub-test";
    try {
      await assert.rejects(readImageMetadata(path), CodecUnavailableError);
    } finally {
      process.env.PATH = saved;
    }
  });
});
