/**
 * A metadata tarball that decompresses to far more than it weighs: `lxd.tar.xz` whose first member
 * is `zeros` bytes of zeros and whose metadata.yaml comes after it. The zeros are one xz stream of
 * 64 MiB repeated (xz decompresses concatenated streams as one), so 3 GiB weigh about half a MB
 * and take a second to build.
 */
import { spawnSync } from "node:child_process";
import { pack as tarPack } from "tar-stream";

const CHUNK = 64 * 1024 * 1024;

function xz(input: Buffer): Buffer {
  const r = spawnSync("xz", ["-1", "-T1", "-c"], { input, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`xz failed: ${String(r.stderr)}`);
  return r.stdout;
}

/** A ustar header of a regular file (POSIX.1-1988), enough for GNU tar and tar-stream. */
function ustarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (text: string, at: number) => h.write(text, at, "ascii");
  const octal = (n: number, width: number) => n.toString(8).padStart(width - 1, "0");
  put(name, 0);
  put(octal(0o644, 8), 100);
  put(octal(0, 8), 108);
  put(octal(0, 8), 116);
  put(octal(size, 12), 124);
  put(octal(1704067200, 12), 136);
  put("        ", 148); // checksum field counts as spaces while summing
  put("0", 156);
  put("ustar\u000000", 257);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${octal(sum, 7)}\u0000`, 148);
  return h;
}

async function tail(metadataYaml: string): Promise<Buffer> {
  const p = tarPack();
  p.entry({ name: "metadata.yaml", mtime: new Date(1704067200_000) }, metadataYaml);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** `zeros` must be a multiple of 64 MiB, or smaller than it and a multiple of 512. */
export async function metadataBomb(zeros: number, metadataYaml: string): Promise<Buffer> {
  const parts = [xz(ustarHeader("zeros", zeros))];
  if (zeros >= CHUNK) {
    if (zeros % CHUNK !== 0) throw new Error("zeros must be a multiple of 64 MiB");
    const chunk = xz(Buffer.alloc(CHUNK));
    for (let n = 0; n < zeros; n += CHUNK) parts.push(chunk);
  } else {
    if (zeros % 512 !== 0) throw new Error("zeros must be a multiple of 512");
    parts.push(xz(Buffer.alloc(zeros)));
  }
  parts.push(xz(await tail(metadataYaml)));
  return Buffer.concat(parts);
}

export const TINY_METADATA_YAML = [
  "architecture: x86_64",
  "creation_date: 1704067200",
  "properties:",
  "  os: bomb",
  '  release: "1"',
  "  variant: default",
  "  architecture: amd64",
  "",
].join("\n");
