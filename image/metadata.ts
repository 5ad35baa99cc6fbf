/**
 * Reading `metadata.yaml` out of an image's metadata tarball (`lxd.tar.xz`/`incus.tar.xz`, or a
 * unified tarball), as LXD does (simplestreams.md §3.6): any compression LXD detects, the file at
 * the top level as `metadata.yaml` or `./metadata.yaml`, at most 1 MiB.
 */
import { createReadStream } from "node:fs";
import { Readable, Transform, type Duplex } from "node:stream";
import { extract as tarExtract, type Extract } from "tar-stream";
import { isAlias, isMap, isScalar, parseDocument, type Document, type Node as YamlNode } from "yaml";
import type { ImageMetadata } from "../simplestreams/types.js";
import {
  CodecUnavailableError,
  decompressStream,
  detectCompression,
  MAGIC_LENGTH,
  type Compression,
} from "./codec.js";
import { ImageFormatError } from "./errors.js";

/** The cap LXD applies when it reads metadata.yaml itself (simplestreams.md §3.6). */
export const METADATA_MAX_BYTES = 1024 * 1024;

/**
 * Default cap on the tarball's bytes after decompression while metadata.yaml is looked for. A
 * metadata tarball is a few KiB of YAML and templates; a small xz file can inflate to many GiB
 * (a 580 KB one to 3 GiB), and reading it all would hold a publish for many seconds.
 */
export const METADATA_SCAN_MAX_BYTES = 64 * 1024 * 1024;

const METADATA_NAMES = new Set(["metadata.yaml", "./metadata.yaml"]);

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === "string") return Buffer.from(chunk);
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError("the image stream must give bytes");
}

/**
 * Reads the first bytes (to detect the compression) and gives back a stream of every byte,
 * those first ones included. Destroying the returned stream ends the iteration of `source`,
 * which destroys it.
 */
async function peek(source: Readable): Promise<{ head: Buffer; body: Readable }> {
  const it = source[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < MAGIC_LENGTH) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    const chunk = toBuffer(r.value);
    first.push(chunk);
    length += chunk.length;
  }
  async function* all(): AsyncGenerator<Buffer> {
    try {
      yield* first;
      if (ended) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield toBuffer(r.value);
      }
    } finally {
      await it.return?.();
    }
  }
  return { head: Buffer.concat(first), body: Readable.from(all(), { objectMode: false }) };
}

/** One member of the tarball as tar-stream gives it (its type is not exported by name). */
type Entry = Extract extends AsyncIterable<infer E> ? E : never;

type Stage = "source" | "codec" | "tar";

/** Which part of the chain failed first; later errors are only echoes of the first. */
interface Failure {
  stage: Stage;
  error: Error;
}

function classify(failure: Failure, kind: Compression, sawEntry: boolean): Error {
  const { stage, error } = failure;
  if (error instanceof ImageFormatError) return error;
  if (stage === "source" || error instanceof CodecUnavailableError) return error;
  if (stage === "codec") {
    return new ImageFormatError(
      "CORRUPT_COMPRESSION",
      `corrupt or truncated ${kind} data: ${error.message}`,
      {
        cause: error,
      },
    );
  }
  const after = kind === "none" ? "" : ` (after ${kind} decompression)`;
  const ended = /unexpected end/i.test(error.message);
  const message = !ended
    ? `not a tar archive${after}: ${error.message}`
    : sawEntry
      ? `truncated tar archive${after}: ${error.message}`
      : `not a tar archive${after}: the data ends before the first complete tar header`;
  return new ImageFormatError("NOT_TAR", message, { cause: error });
}

async function readCapped(entry: Entry): Promise<Buffer> {
  const declared = entry.header.size ?? 0;
  const tooLarge = (size: number) =>
    new ImageFormatError(
      "METADATA_TOO_LARGE",
      `metadata.yaml is ${size} bytes; the limit is ${METADATA_MAX_BYTES} bytes (1 MiB)`,
    );
  if (declared > METADATA_MAX_BYTES) throw tooLarge(declared);
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const data of entry) {
    const chunk = toBuffer(data);
    length += chunk.length;
    if (length > METADATA_MAX_BYTES) throw tooLarge(length);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads `metadata.yaml` from a metadata (or unified) image tarball and validates it.
 *
 * The source is streamed: compression is detected from the magic bytes, decompressed on the fly,
 * and reading stops (the source is destroyed, a decompressor process killed) as soon as
 * metadata.yaml has been read; a caller-given stream is destroyed as well. Whatever lies after
 * metadata.yaml is not read, so corruption there goes unnoticed here; the file's sha256 is what
 * vouches for the whole of it.
 *
 * At most `maxScanBytes` (default METADATA_SCAN_MAX_BYTES) decompressed bytes are read while
 * metadata.yaml is looked for; past them the tarball is refused (`DECOMPRESSED_TOO_LARGE`, the
 * message names the limit) without decompressing the rest.
 *
 * Throws `ImageFormatError` for anything wrong with the bytes (empty, corrupt compression, not a
 * tar, no metadata.yaml, larger than 1 MiB, past `maxScanBytes`, invalid YAML or fields);
 * `CodecUnavailableError` when the decompressor is not installed; the source's own error (e.g.
 * ENOENT) otherwise.
 */
export async function readImageMetadata(
  source: string | Readable,
  opts: { maxScanBytes?: number } = {},
): Promise<ImageMetadata> {
  const maxScanBytes = opts.maxScanBytes ?? METADATA_SCAN_MAX_BYTES;
  const input = typeof source === "string" ? createReadStream(source, { highWaterMark: 256 * 1024 }) : source;
  let body: Readable | undefined;
  let codec: Duplex | undefined;
  let limiter: Transform | undefined;
  const extract = tarExtract();
  try {
    const peeked = await peek(input);
    body = peeked.body;
    if (peeked.head.length === 0) throw new ImageFormatError("EMPTY", "the image file is empty");
    const kind = detectCompression(peeked.head);
    codec = decompressStream(kind);

    let scanned = 0;
    limiter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        scanned += chunk.length;
        if (scanned <= maxScanBytes) return cb(null, chunk);
        cb(
          new ImageFormatError(
            "DECOMPRESSED_TOO_LARGE",
            `metadata.yaml is not within the first ${maxScanBytes} bytes of the tarball` +
              `${kind === "none" ? "" : ` after ${kind} decompression`}, the limit while it is looked for ` +
              "(a metadata tarball is small; this one may be a decompression bomb)",
          ),
        );
      },
    });

    let failure: Failure | undefined;
    const parts: Readable[] = [body, codec, limiter];
    const fail = (stage: Stage) => (error: Error) => {
      failure ??= { stage, error };
      for (const part of parts) part.destroy();
      extract.destroy(error);
    };
    body.on("error", fail("source"));
    codec.on("error", fail("codec"));
    limiter.on("error", fail("codec"));
    extract.on("error", fail("tar"));
    body.pipe(codec).pipe(limiter).pipe(extract);

    let metadata: Buffer | undefined;
    let sawEntry = false;
    try {
      for await (const entry of extract) {
        sawEntry = true;
        if (!METADATA_NAMES.has(entry.header.name)) {
          entry.resume();
          continue;
        }
        const type = entry.header.type ?? "file";
        if (type !== "file" && type !== "contiguous-file") {
          throw new ImageFormatError("INVALID_METADATA", `metadata.yaml is a ${type}, not a regular file`);
        }
        metadata = await readCapped(entry);
        break;
      }
    } catch (err) {
      if (failure) throw classify(failure, kind, sawEntry);
      throw err;
    }
    // The iteration can also end quietly after a failure tore the chain down.
    if (failure) throw classify(failure, kind, sawEntry);
    if (metadata === undefined) {
      throw new ImageFormatError("NO_METADATA", "the tarball has no metadata.yaml at its top level");
    }
    return parseImageMetadata(metadata);
  } finally {
    extract.destroy();
    limiter?.destroy();
    codec?.destroy();
    body?.destroy();
    input.destroy();
  }
}

/** LXD decodes these fields as Go strings, which take a scalar's text as written (`12` → "12"). */
function scalarText(node: unknown, doc: Document, what: string): string {
  const resolved = isAlias(node) ? node.resolve(doc) : node;
  if (!isScalar(resolved)) throw invalid(`${what} must be a string, not a ${describe(resolved)}`);
  const value = resolved.value;
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return resolved.source ?? String(value);
  }
  throw invalid(`${what} must be a string`);
}

function describe(node: unknown): string {
  if (isMap(node)) return "mapping";
  if (node && typeof node === "object" && "items" in node) return "list";
  return "value of another kind";
}

function invalid(message: string): ImageFormatError {
  return new ImageFormatError("INVALID_METADATA", `metadata.yaml: ${message}`);
}

function integerField(node: unknown, doc: Document, name: string): number | undefined {
  const resolved = isAlias(node) ? node.resolve(doc) : node;
  if (resolved === undefined) return undefined;
  if (!isScalar(resolved))
    throw invalid(`${name} must be an integer (unix seconds), not a ${describe(resolved)}`);
  const value = resolved.value;
  if (value === null) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    const shown = typeof value === "string" ? `the string ${JSON.stringify(value)}` : String(value);
    throw invalid(`${name} must be an integer (unix seconds), got ${shown}`);
  }
  return value;
}

function mapPairs(node: unknown, doc: Document, name: string): { key: unknown; value: unknown }[] {
  const resolved = isAlias(node) ? node.resolve(doc) : node;
  if (resolved === undefined) return [];
  if (isScalar(resolved) && resolved.value === null) return [];
  if (!isMap(resolved)) throw invalid(`${name} must be a mapping, not a ${describe(resolved)}`);
  return resolved.items;
}

/**
 * Validates metadata.yaml's bytes (simplestreams.md §3.6): `architecture` a non-empty string,
 * `creation_date` a positive integer, `expiry_date` a non-negative integer when present,
 * `properties` a mapping of scalars (taken as strings, as LXD does), `templates` a mapping of
 * template name → mapping. Other keys are ignored, as LXD ignores them.
 */
export function parseImageMetadata(bytes: Buffer): ImageMetadata {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalid("not UTF-8 text");
  }
  // Only the syntax tree is used (never toJS), and each alias is resolved one level where a
  // scalar or mapping is expected, so alias bombs cannot expand.
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const [firstError] = doc.errors;
  if (firstError) throw invalid(`not valid YAML: ${firstError.message}`);
  const root: YamlNode | null = doc.contents;
  if (!isMap(root)) throw invalid("the document must be a mapping of keys to values");
  const field = (key: string): unknown => root.get(key, true);

  if (field("architecture") === undefined) throw invalid("architecture is missing");
  const architecture = scalarText(field("architecture"), doc, "architecture");
  if (architecture.trim() === "") throw invalid("architecture is empty");

  const creationDate = integerField(field("creation_date"), doc, "creation_date");
  if (creationDate === undefined) throw invalid("creation_date is missing");
  if (creationDate <= 0) throw invalid(`creation_date must be positive, got ${creationDate}`);

  const expiryDate = integerField(field("expiry_date"), doc, "expiry_date");
  if (expiryDate !== undefined && expiryDate < 0) throw invalid(`expiry_date must not be negative`);

  const properties: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const { key, value } of mapPairs(field("properties"), doc, "properties")) {
    const name = scalarText(key, doc, "a properties key");
    properties[name] = scalarText(value, doc, `properties.${name}`);
  }

  const templates: string[] = [];
  for (const { key, value } of mapPairs(field("templates"), doc, "templates")) {
    const name = scalarText(key, doc, "a templates key");
    if (name === "") throw invalid("a template has an empty name");
    const entry = isAlias(value) ? value.resolve(doc) : value;
    if (!isMap(entry)) throw invalid(`templates.${name} must be a mapping (when, template, …)`);
    templates.push(name);
  }

  const result: ImageMetadata = { architecture, creationDate, properties: { ...properties }, templates };
  if (expiryDate !== undefined) result.expiryDate = expiryDate;
  return result;
}
