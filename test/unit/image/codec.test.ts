import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import {
  CodecError,
  CodecUnavailableError,
  type Compression,
  decompressStream,
  detectCompression,
} from "../../../image/codec.js";

/** Compresses with the real command-line tool. */
function compress(command: string, args: string[], data: Buffer): Buffer {
  const r = spawnSync(command, args, { input: data, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `${command} failed: ${r.stderr?.toString()}`);
  return r.stdout;
}

// Half incompressible, half repetitive: several pipe buffers of input and of output.
const PLAIN = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(3 << 20, "lxhub ")]);
const COMPRESSED: Record<Exclude<Compression, "none">, Buffer> = {
  xz: compress("xz", ["-c", "-0", "-T1"], PLAIN),
  gzip: gzipSync(PLAIN, { level: 1 }),
  zstd: compress("zstd", ["-c", "-1", "-q"], PLAIN),
  bzip2: compress("bzip2", ["-c", "-1"], PLAIN),
};

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Feeds `data` in 64 KiB chunks through a decompressor; returns the sha256 and length of the output. */
async function decompress(kind: Compression, data: Buffer): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  const chunks = function* () {
    for (let i = 0; i < data.length; i += 65536) yield data.subarray(i, i + 65536);
  };
  await pipeline(
    Readable.from(chunks()),
    decompressStream(kind),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        // A slow consumer, so the decoder's output must wait for us.
        setImmediate(cb);
      },
    }),
  );
  return { sha256: hash.digest("hex"), size };
}

describe("detectCompression", () => {
  it("recognises each format by the magic bytes the real tools write", () => {
    for (const [kind, bytes] of Object.entries(COMPRESSED)) {
      assert.equal(detectCompression(bytes.subarray(0, 6)), kind);
      assert.equal(detectCompression(bytes), kind);
    }
  });

  it("calls everything else none: tar bytes, text, short or empty input, 'BZh' without a level", () => {
    const tarHeader = Buffer.alloc(512);
    tarHeader.write("metadata.yaml");
    tarHeader.write("ustar", 257);
    for (const bytes of [
      tarHeader,
      Buffer.from("architecture: x86_64\n"),
      Buffer.from([0xfd, 0x37]),
      Buffer.alloc(0),
    ]) {
      assert.equal(detectCompression(bytes), "none");
    }
    assert.equal(detectCompression(Buffer.from("BZh hello")), "none");
    assert.equal(detectCompression(Buffer.from("BZh9")), "bzip2");
  });
});

describe("decompressStream", () => {
  for (const kind of ["xz", "gzip", "zstd", "bzip2"] as const) {
    it(`gives back the original bytes for ${kind}`, async () => {
      assert.deepEqual(await decompress(kind, COMPRESSED[kind]), {
        sha256: sha256(PLAIN),
        size: PLAIN.length,
      });
    });
  }

  it("passes bytes through unchanged for none", async () => {
    assert.deepEqual(await decompress("none", PLAIN), { sha256: sha256(PLAIN), size: PLAIN.length });
  });

  for (const kind of ["xz", "zstd", "bzip2"] as const) {
    it(`fails with the tool's own message on truncated ${kind} data, never ending cleanly`, async () => {
      const truncated = COMPRESSED[kind].subarray(0, Math.floor(COMPRESSED[kind].length / 2));
      await assert.rejects(decompress(kind, truncated), (err: unknown) => {
        assert.ok(err instanceof CodecError, String(err));
        assert.equal(err.kind, kind);
        assert.notEqual(err.exitCode, 0);
        assert.match(err.message, new RegExp(`^${kind} failed \\(exit status \\d+\\): \\S`));
        assert.ok((err.stderr ?? "").length > 0);
        return true;
      });
    });
  }

  it("reports xz's reason for bytes that are not xz at all", async () => {
    await assert.rejects(decompress("xz", Buffer.from("this is not xz data at all\n")), /xz failed.*format/i);
  });

  it("fails on truncated gzip data", async () => {
    await assert.rejects(decompress("gzip", COMPRESSED.gzip.subarray(0, 1000)), /unexpected end of file/);
  });

  it("says which package to install when the tool is missing", async () => {
    const saved = process.env.PATH;
    process.env.PATH = "/nonexistent-lxhub-test";
    try {
      for (const [kind, pkg] of [
        ["xz", "xz-utils"],
        ["zstd", "zstd"],
        ["bzip2", "bzip2"],
      ] as const) {
        await assert.rejects(decompress(kind, COMPRESSED[kind]), (err: unknown) => {
          assert.ok(err instanceof CodecUnavailableError, String(err));
          assert.equal(err.message, `${kind} is not installed: apt-get install ${pkg}`);
          return true;
        });
      }
    } finally {
      process.env.PATH = saved;
    }
  });

  it("stops the tool when the stream is destroyed early, without an error", async () => {
    const dec = decompressStream("xz");
    let errored: unknown;
    dec.on("error", (err) => (errored = err));
    dec.write(COMPRESSED.xz.subarray(0, 1 << 20));
    await new Promise<void>((resolve) => dec.once("readable", () => resolve()));
    dec.destroy();
    await new Promise((resolve) => dec.once("close", resolve));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(errored, undefined);
    assert.deepEqual(childCommands(), []);
  });
});

/** Names of this process's live child processes (the test runner gives each file its own process). */
function childCommands(): string[] {
  const r = spawnSync("ps", ["-o", "comm=", "--ppid", String(process.pid)], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && l !== "ps");
}
