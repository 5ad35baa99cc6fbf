/**
 * Compression of image files: recognising it by magic bytes and undoing it as a stream.
 *
 * gzip runs in-process (node:zlib). xz, zstd and bzip2 run as child processes (`xz -dc -T0`,
 * `zstd -dc`, `bzip2 -dc`) fed through pipes: the CLIs are the fastest decoders on the machine
 * and use a second core (decisions.md: xz, zstd). They come from the Debian packages
 * `xz-utils`, `zstd` and `bzip2`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { Duplex, PassThrough } from "node:stream";
import { createGunzip } from "node:zlib";

export type Compression = "xz" | "gzip" | "zstd" | "bzip2" | "none";

const MAGIC: readonly (readonly [Exclude<Compression, "none">, Buffer])[] = [
  ["xz", Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ["gzip", Buffer.from([0x1f, 0x8b])],
  ["zstd", Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ["bzip2", Buffer.from("BZh", "latin1")],
];

/** Bytes `detectCompression` needs to tell every format apart. */
export const MAGIC_LENGTH = 6;

/**
 * The compression of a file from its first bytes (at least `MAGIC_LENGTH` of them where the file
 * is that long). Anything unrecognised is `none`: whether it is then a valid tar is the reader's
 * question.
 */
export function detectCompression(firstBytes: Buffer): Compression {
  for (const [kind, magic] of MAGIC) {
    if (firstBytes.length < magic.length || !firstBytes.subarray(0, magic.length).equals(magic)) continue;
    if (kind === "bzip2") {
      // "BZh" is followed by the block size digit 1–9; "BZh" alone could be the start of text.
      const level = firstBytes[3];
      if (level === undefined || level < 0x31 || level > 0x39) continue;
    }
    return kind;
  }
  return "none";
}

interface Tool {
  command: string;
  args: string[];
  debianPackage: string;
}

const TOOLS: Record<"xz" | "zstd" | "bzip2", Tool> = {
  xz: { command: "xz", args: ["-dc", "-T0"], debianPackage: "xz-utils" },
  zstd: { command: "zstd", args: ["-dc"], debianPackage: "zstd" },
  bzip2: { command: "bzip2", args: ["-dc"], debianPackage: "bzip2" },
};

/** The decompressor failed: the data is corrupt or truncated, or the tool could not run. */
export class CodecError extends Error {
  override name = "CodecError";
  constructor(
    readonly kind: Compression,
    message: string,
    /** The tool's exit code, when it exited. */
    readonly exitCode?: number | null,
    /** What the tool wrote to stderr (capped). */
    readonly stderr?: string,
  ) {
    super(message);
  }
}

/** The decompressor's program is not on this machine; the message names the package to install. */
export class CodecUnavailableError extends Error {
  override name = "CodecUnavailableError";
  constructor(
    readonly command: string,
    readonly debianPackage: string,
  ) {
    super(`${command} is not installed: apt-get install ${debianPackage}`);
  }
}

const STDERR_CAP = 16 * 1024;
const PIPE_CHUNK = 1024 * 1024;

/**
 * A child process as a Duplex: writes go to its stdin, reads come from its stdout. The readable
 * side ends only after the process exited with status 0, so a consumer that saw `end` saw every
 * byte of a complete, valid stream; a non-zero exit becomes a `CodecError` carrying the tool's
 * stderr. Destroying the stream kills the process.
 */
class ProcessDecoder extends Duplex {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #kind: Compression;
  readonly #tool: Tool;
  #stderr = "";
  #exited = false;
  #pendingWrite: ((err?: Error | null) => void) | null = null;

  constructor(kind: Compression, tool: Tool) {
    super({ readableHighWaterMark: PIPE_CHUNK, writableHighWaterMark: PIPE_CHUNK });
    this.#kind = kind;
    this.#tool = tool;
    const child = spawn(tool.command, tool.args, { stdio: ["pipe", "pipe", "pipe"] });
    this.#child = child;

    child.on("error", (err: NodeJS.ErrnoException) => {
      this.#exited = true;
      this.#releaseWrite();
      if (this.destroyed) return;
      this.destroy(
        err.code === "ENOENT"
          ? new CodecUnavailableError(tool.command, tool.debianPackage)
          : new CodecError(kind, `${tool.command} could not be started: ${err.message}`),
      );
    });
    // EPIPE when the tool stops reading early (corrupt input): its exit status tells why.
    child.stdin.on("error", () => this.#releaseWrite());
    child.stdin.on("drain", () => this.#releaseWrite());
    child.stdout.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) child.stdout.pause();
    });
    child.stdout.on("error", () => undefined);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (this.#stderr.length < STDERR_CAP) this.#stderr += text.slice(0, STDERR_CAP - this.#stderr.length);
    });
    child.stderr.on("error", () => undefined);
    // 'close' comes after stdout has ended, so every byte has been pushed by now.
    child.on("close", (code: number | null, signal: NodeJS.Signals | null) => {
      this.#exited = true;
      this.#releaseWrite();
      if (this.destroyed) return;
      if (code === 0) {
        this.push(null);
        return;
      }
      const how = code !== null ? `exit status ${code}` : `signal ${signal ?? "unknown"}`;
      const said = this.#stderr.trim() || "no message";
      this.destroy(
        new CodecError(this.#kind, `${this.#tool.command} failed (${how}): ${said}`, code, this.#stderr),
      );
    });
  }

  #releaseWrite(): void {
    const cb = this.#pendingWrite;
    this.#pendingWrite = null;
    cb?.();
  }

  override _read(): void {
    this.#child.stdout.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const stdin = this.#child.stdin;
    // The tool is gone: drop the bytes; its exit status (handled in 'close') decides the outcome.
    if (this.#exited || stdin.destroyed) return callback();
    if (stdin.write(chunk)) callback();
    else this.#pendingWrite = callback;
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.#exited && !this.#child.stdin.destroyed) this.#child.stdin.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.#exited) this.#child.kill("SIGTERM");
    this.#releaseWrite();
    callback(err);
  }
}

/**
 * A stream that takes `kind`-compressed bytes and gives the decompressed bytes. Errors: a
 * `CodecUnavailableError` when the tool is missing; for corrupt or truncated data a `CodecError`
 * (xz, zstd, bzip2, with the tool's message) or a zlib error (gzip). `none` passes bytes through.
 */
export function decompressStream(kind: Compression): Duplex {
  switch (kind) {
    case "none":
      return new PassThrough();
    case "gzip":
      return createGunzip({ chunkSize: 256 * 1024 });
    case "xz":
    case "zstd":
    case "bzip2":
      return new ProcessDecoder(kind, TOOLS[kind]);
  }
}
