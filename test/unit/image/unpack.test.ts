import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  createReadStream,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
} from "node:fs";
import { chmod, chown, link, lutimes, mkdir, mkdtemp, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { pack as tarPack, type Header } from "tar-stream";
import { ImageFormatError, type ImageFormatReason } from "../../../image/errors.js";
import {
  removeTree,
  TarUnpacker,
  UnpackError,
  unpackTar,
  unpackTarball,
  type UnpackedEntry,
  type UnpackErrorReason,
  type UnpackOptions,
} from "../../../image/unpack.js";

const ROOT = process.getuid?.() === 0;
const MY_UID = process.getuid?.() ?? 0;
const MY_GID = process.getgid?.() ?? 0;
const T0 = new Date("2024-01-02T03:04:05Z");
const T1 = new Date("2023-06-07T08:09:10Z");
const T2 = new Date("2022-11-12T13:14:15Z");
const secs = (d: Date | number) => Math.floor((typeof d === "number" ? d : d.getTime()) / 1000);

type Item = Partial<Header> & { name: string; body?: string | Buffer };

/** A tar archive written by tar-stream; files get `body` (default empty), other types none. */
async function tarOf(items: Item[]): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const { body, ...rest } of items) {
    const header = { mode: rest.type === "directory" ? 0o755 : 0o644, mtime: T0, ...rest };
    const type = header.type ?? "file";
    if (type === "file" || type === "contiguous-file") {
      await new Promise<void>((res, rej) =>
        pack.entry(header, body ?? "", (err) => (err ? rej(err) : res())),
      );
    } else {
      pack.entry(header);
    }
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** The bytes in odd-sized chunks, so headers and data straddle chunk boundaries. */
function feed(buf: Buffer, size = 4093): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    })(),
  );
}

function compress(command: string, args: string[], data: Buffer): Buffer {
  const r = spawnSync(command, args, { input: data, maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, `${command} failed: ${r.stderr?.toString()}`);
  return r.stdout;
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * Everything under `dir`: type, mode, owner, size, content hash or link target, file mtimes.
 * Directory mtimes are left out: creating and removing the staging directory touches the parent's.
 */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(dir, rel) : dir;
    const st = lstatSync(abs);
    const base = `${rel || "."} mode=${(st.mode & 0o7777).toString(8)} owner=${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out.push(`${base} dir`);
      for (const name of readdirSync(abs).sort()) walk(rel ? `${rel}/${name}` : name);
    } else if (st.isSymbolicLink()) out.push(`${base} symlink -> ${readlinkSync(abs)}`);
    else if (st.isFile()) out.push(`${base} file ${st.size} ${sha(readFileSync(abs))} ${st.mtimeMs}`);
    else out.push(`${base} other rdev=${st.rdev}`);
  };
  walk("");
  return out;
}

interface Workspace {
  base: string;
  /** Holds dest and the staging directories. */
  parent: string;
  dest: string;
  /** Outside the destination: must never change. */
  sentinel: string;
}

let scratch: string;
let wsCount = 0;

/** `<base>/parent/dest` (absent, or an empty directory) and `<base>/sentinel/keep`. */
async function workspace(destExists = false): Promise<Workspace> {
  const base = join(scratch, `ws-${wsCount++}`);
  const parent = join(base, "parent");
  const sentinel = join(base, "sentinel");
  await mkdir(parent, { recursive: true });
  await mkdir(sentinel);
  await writeFile(join(sentinel, "keep"), "precious\n");
  const dest = join(parent, "dest");
  if (destExists) await mkdir(dest);
  return { base, parent, dest, sentinel };
}

function isRefusal(err: unknown, reason: UnpackErrorReason | ImageFormatReason, mentions?: string): true {
  assert.ok(
    err instanceof UnpackError || err instanceof ImageFormatError,
    `expected an UnpackError or ImageFormatError, got ${String(err)}`,
  );
  assert.equal(err.reason, reason, err.message);
  if (mentions !== undefined)
    assert.ok(err.message.includes(mentions), `"${err.message}" should name ${mentions}`);
  return true;
}

/**
 * Unpacks `archive` and expects it refused with `reason` (the message naming `mentions`), with
 * the whole workspace (sentinel, parent listing, destination) exactly as before.
 */
async function expectRefused(
  archive: Buffer | ((ws: Workspace) => Promise<Buffer>),
  reason: UnpackErrorReason | ImageFormatReason,
  mentions?: string,
  opts: UnpackOptions & { compressed?: boolean; destExists?: boolean } = {},
): Promise<Error> {
  const ws = await workspace(opts.destExists);
  const bytes = typeof archive === "function" ? await archive(ws) : archive;
  const before = snapshot(ws.base);
  const unpack = opts.compressed ? unpackTarball : unpackTar;
  const err = await unpack(feed(bytes), ws.dest, opts).then(
    () => assert.fail("the archive was accepted"),
    (e: unknown) => e,
  );
  isRefusal(err, reason, mentions);
  assert.deepEqual(snapshot(ws.base), before, "nothing may change outside (or at) the destination");
  return err as Error;
}

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "lxhub-unpack-"));
  // Non-root runs need to reach the sentinel through the scratch directory.
  await chmod(scratch, 0o755);
});
after(async () => {
  // removeTree, not rm: as non-root the read-only directories of the trees would block rm.
  await removeTree(scratch);
});

describe("unpackTar: a normal tree", () => {
  const big = randomBytes(3 * 1024 * 1024 + 17); // above SYNC_WRITE_MAX: the streaming path
  const items: Item[] = [
    { name: "./", type: "directory", mode: 0o751, mtime: T2 },
    { name: "./etc/", type: "directory", mode: 0o755, mtime: T1, uid: 0, gid: 0 },
    { name: "./etc/hostname", body: "lxhub\n", mode: 0o644, mtime: T1 },
    { name: "./etc/shadow", body: "root:*:19000::::::\n", mode: 0o640, uid: 0, gid: 42, mtime: T2 },
    { name: "./etc/empty", body: "", mode: 0o600 },
    { name: "./etc/secret/", type: "directory", mode: 0o700, uid: 1234, gid: 2345, mtime: T2 },
    { name: "./etc/secret/key", body: "k", mode: 0o400, uid: 1234, gid: 2345, mtime: T0 },
    // A read-only directory that still receives a file after it (modes are applied last).
    { name: "./ro/", type: "directory", mode: 0o555, mtime: T1 },
    { name: "./ro/inside", body: "written after its read-only parent\n", mode: 0o444 },
    { name: "./usr/bin/passwd", body: "#!/bin/true\n", mode: 0o4755, uid: 0, gid: 0, mtime: T1 },
    { name: "./usr/bin/wall", body: "#!/bin/true\n", mode: 0o2755, uid: 0, gid: 5, mtime: T1 },
    { name: "./tmp/", type: "directory", mode: 0o1777, mtime: T1 },
    { name: "./usr/bin/newgrp", type: "link", linkname: "./usr/bin/passwd" },
    { name: "./usr/lib/os-release", body: "ID=lxhub\n" },
    { name: "./etc/os-release", type: "symlink", linkname: "../usr/lib/os-release", mtime: T2 },
    { name: "./bin", type: "symlink", linkname: "usr/bin" },
    { name: "./dangling", type: "symlink", linkname: "/nonexistent/target" },
    { name: "./data/big.bin", body: big, mode: 0o644, uid: 7, gid: 8, mtime: T2 },
    { name: "./data/big-link", type: "link", linkname: "data/big.bin" },
  ];

  let ws: Workspace;
  let seen: UnpackedEntry[];
  let stats: Awaited<ReturnType<typeof unpackTar>>;

  before(async () => {
    ws = await workspace();
    seen = [];
    stats = await unpackTar(feed(await tarOf(items)), ws.dest, { onEntry: (e) => seen.push(e) });
  });

  it("moves the tree into place and leaves nothing else beside it", () => {
    assert.deepEqual(readdirSync(ws.parent), ["dest"]);
    assert.deepEqual(
      readdirSync(ws.dest).sort(),
      ["bin", "dangling", "data", "etc", "ro", "tmp", "usr"].sort(),
    );
  });

  it("counts what it unpacked and reports each entry with its normalised path", () => {
    assert.deepEqual(
      { ...stats, archiveBytes: 0 },
      {
        entries: items.length,
        files: 9,
        dirs: 5,
        symlinks: 3,
        hardlinks: 2,
        devices: 0,
        bytes: items.reduce((n, i) => n + (i.body === undefined ? 0 : Buffer.byteLength(i.body)), 0),
        archiveBytes: 0,
      },
    );
    assert.ok(stats.archiveBytes > big.length);
    assert.equal(seen.length, items.length);
    assert.deepEqual(seen[0], { path: ".", type: "directory", size: 0 });
    assert.deepEqual(seen[2], { path: "etc/hostname", type: "file", size: 6 });
    assert.deepEqual(seen[12], { path: "usr/bin/newgrp", type: "hardlink", size: 0 });
  });

  it("writes file contents, small and large", () => {
    assert.equal(readFileSync(join(ws.dest, "etc/hostname"), "utf8"), "lxhub\n");
    assert.equal(readFileSync(join(ws.dest, "etc/empty")).length, 0);
    assert.equal(readFileSync(join(ws.dest, "ro/inside"), "utf8"), "written after its read-only parent\n");
    assert.equal(sha(readFileSync(join(ws.dest, "data/big.bin"))), sha(big));
  });

  it("restores permission bits exactly; special bits only when owners are restored", () => {
    const mode = (p: string) => lstatSync(join(ws.dest, p)).mode & 0o7777;
    const special = ROOT ? 0o7777 : 0o777;
    assert.equal(mode("."), 0o751);
    assert.equal(mode("etc/shadow"), 0o640);
    assert.equal(mode("etc/secret"), 0o700);
    assert.equal(mode("etc/secret/key"), 0o400);
    assert.equal(mode("ro"), 0o555);
    assert.equal(mode("ro/inside"), 0o444);
    assert.equal(mode("usr/bin/passwd"), 0o4755 & special);
    assert.equal(mode("usr/bin/wall"), 0o2755 & special);
    assert.equal(mode("tmp"), 0o1777 & special);
    // Implicit parents (no entry of their own) get 0755.
    assert.equal(mode("usr"), 0o755);
    assert.equal(mode("usr/lib"), 0o755);
  });

  it("restores owners numerically as root, ignores them otherwise", () => {
    const owner = (p: string) => {
      const st = lstatSync(join(ws.dest, p));
      return [st.uid, st.gid];
    };
    const want = (uid: number, gid: number) => (ROOT ? [uid, gid] : [MY_UID, MY_GID]);
    assert.deepEqual(owner("etc/shadow"), want(0, 42));
    assert.deepEqual(owner("etc/secret"), want(1234, 2345));
    assert.deepEqual(owner("etc/secret/key"), want(1234, 2345));
    assert.deepEqual(owner("data/big.bin"), want(7, 8));
    assert.deepEqual(owner("usr/bin/wall"), want(0, 5));
  });

  it("restores mtimes of files, symlinks and directories (after their contents)", () => {
    const mtime = (p: string) => secs(lstatSync(join(ws.dest, p)).mtimeMs);
    assert.equal(mtime("."), secs(T2));
    assert.equal(mtime("etc"), secs(T1));
    assert.equal(mtime("etc/secret"), secs(T2));
    assert.equal(mtime("etc/secret/key"), secs(T0));
    assert.equal(mtime("ro"), secs(T1));
    assert.equal(mtime("data/big.bin"), secs(T2));
    assert.equal(mtime("etc/os-release"), secs(T2));
  });

  it("stores symlinks as written and makes hard links share the inode", () => {
    assert.equal(readlinkSync(join(ws.dest, "etc/os-release")), "../usr/lib/os-release");
    assert.equal(readlinkSync(join(ws.dest, "dangling")), "/nonexistent/target");
    assert.equal(readlinkSync(join(ws.dest, "bin")), "usr/bin");
    assert.equal(readFileSync(join(ws.dest, "etc/os-release"), "utf8"), "ID=lxhub\n");
    const ino = (p: string) => lstatSync(join(ws.dest, p)).ino;
    assert.equal(ino("usr/bin/newgrp"), ino("usr/bin/passwd"));
    assert.equal(ino("data/big-link"), ino("data/big.bin"));
    assert.equal(lstatSync(join(ws.dest, "data/big.bin")).nlink, 2);
  });

  it("as root with preserveOwnership: false, ignores owners and strips setuid/setgid/sticky", async (t) => {
    if (!ROOT) return t.skip("needs root (the non-root default already covers this)");
    const w = await workspace();
    await unpackTar(feed(await tarOf(items)), w.dest, { preserveOwnership: false });
    const st = lstatSync(join(w.dest, "usr/bin/passwd"));
    assert.equal(st.mode & 0o7777, 0o755);
    assert.equal(lstatSync(join(w.dest, "tmp")).mode & 0o7777, 0o777);
    assert.deepEqual([lstatSync(join(w.dest, "etc/secret")).uid, st.gid], [0, 0]);
  });
});

describe("unpackTar: names and replacement", () => {
  it("normalises ./ prefixes, repeated and trailing slashes", async () => {
    const ws = await workspace();
    const seen: string[] = [];
    await unpackTar(
      feed(
        await tarOf([
          { name: ".//a//b/", type: "directory" },
          { name: "./a/./b//c.txt", body: "c" },
        ]),
      ),
      ws.dest,
      { onEntry: (e) => seen.push(e.path) },
    );
    assert.deepEqual(seen, ["a/b", "a/b/c.txt"]);
    assert.equal(readFileSync(join(ws.dest, "a/b/c.txt"), "utf8"), "c");
  });

  it("a later entry replaces an earlier one; a symlink in the way is replaced, never followed", async () => {
    const ws = await workspace();
    const archive = await tarOf([
      { name: "a", body: "one" },
      { name: "a", body: "two" },
      { name: "s", type: "symlink", linkname: join(ws.sentinel, "keep") },
      { name: "s", body: "replaced the link" },
      { name: "d", type: "symlink", linkname: ws.sentinel },
      { name: "d", type: "directory", mode: 0o750 },
      { name: "d/x", body: "inside" },
      { name: "dir", type: "directory", mode: 0o700 },
      { name: "dir", type: "directory", mode: 0o711 },
    ]);
    const sentinelBefore = snapshot(ws.sentinel);
    await unpackTar(feed(archive), ws.dest);
    assert.equal(readFileSync(join(ws.dest, "a"), "utf8"), "two");
    assert.ok(lstatSync(join(ws.dest, "s")).isFile());
    assert.equal(readFileSync(join(ws.dest, "s"), "utf8"), "replaced the link");
    assert.ok(lstatSync(join(ws.dest, "d")).isDirectory());
    assert.equal(readFileSync(join(ws.dest, "d/x"), "utf8"), "inside");
    assert.equal(lstatSync(join(ws.dest, "dir")).mode & 0o777, 0o711);
    assert.deepEqual(snapshot(ws.sentinel), sentinelBefore);
  });

  it("handles long and non-ASCII names (GNU long names and pax headers)", async () => {
    const ws = await workspace();
    const long = `${"deep/".repeat(30)}${"n".repeat(150)}.txt`;
    const unicode = "ünïcødé/文件.txt";
    await unpackTar(
      feed(
        await tarOf([
          { name: long, body: "long" },
          { name: unicode, body: "uni" },
          { name: "l", type: "symlink", linkname: "x".repeat(300) },
        ]),
      ),
      ws.dest,
    );
    assert.equal(readFileSync(join(ws.dest, long), "utf8"), "long");
    assert.equal(readFileSync(join(ws.dest, unicode), "utf8"), "uni");
    assert.equal(readlinkSync(join(ws.dest, "l")), "x".repeat(300));
  });
});

/** A copy of the tar-stream header block at `offset` with another type flag and a fixed checksum. */
function retype(tar: Buffer, offset: number, flag: string): Buffer {
  const out = Buffer.from(tar);
  out[offset + 156] = flag.charCodeAt(0);
  out.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += out[offset + i] as number;
  out.write(`${sum.toString(8).padStart(6, "0")}\0 `, offset + 148, "latin1");
  return out;
}

describe("unpackTar: hostile archives are refused, and nothing is written outside", () => {
  it("refuses ../evil", async () => {
    await expectRefused(await tarOf([{ name: "../evil", body: "x" }]), "UNSAFE_PATH", "../evil");
  });

  it("refuses absolute names (/etc/evil, and one aimed at the sentinel)", async () => {
    await expectRefused(await tarOf([{ name: "/etc/evil", body: "x" }]), "UNSAFE_PATH", "/etc/evil");
    assert.equal(existsSync("/etc/evil"), false);
    await expectRefused(
      async (ws) => tarOf([{ name: join(ws.sentinel, "evil"), body: "x" }]),
      "UNSAFE_PATH",
      "evil",
    );
  });

  it("refuses a/../../evil, and .. even when it would stay inside", async () => {
    await expectRefused(
      await tarOf([
        { name: "a/", type: "directory" },
        { name: "a/../../evil", body: "x" },
      ]),
      "UNSAFE_PATH",
      "a/../../evil",
    );
    await expectRefused(await tarOf([{ name: "a/../b", body: "x" }]), "UNSAFE_PATH", "a/../b");
  });

  it("refuses a NUL byte in a name (pax path)", async () => {
    await expectRefused(await tarOf([{ name: "a\0b", body: "x", pax: {} }]), "UNSAFE_PATH", "NUL");
  });

  it("refuses a file written through a symlink to outside: link -> sentinel, then link/evil", async () => {
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "link", type: "symlink", linkname: ws.sentinel },
          { name: "link/evil", body: "x" },
        ]),
      "THROUGH_SYMLINK",
      "link/evil",
    );
  });

  it("refuses link -> .. then link/evil", async () => {
    await expectRefused(
      await tarOf([
        { name: "link", type: "symlink", linkname: ".." },
        { name: "link/evil", body: "x" },
      ]),
      "THROUGH_SYMLINK",
      "link/evil",
    );
  });

  it("refuses a symlink deeper in the path, and a directory made through a symlink", async () => {
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "a/b/", type: "directory" },
          { name: "a/b/link", type: "symlink", linkname: ws.sentinel },
          { name: "a/b/link/sub/evil", body: "x" },
        ]),
      "THROUGH_SYMLINK",
      "a/b/link/sub/evil",
    );
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "link", type: "symlink", linkname: ws.sentinel },
          { name: "link/sub/", type: "directory" },
        ]),
      "THROUGH_SYMLINK",
      "link/sub",
    );
  });

  it("refuses hard links through a symlink (as the link's path or its target's)", async () => {
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "file", body: "x" },
          { name: "link", type: "symlink", linkname: ws.sentinel },
          { name: "link/evil", type: "link", linkname: "file" },
        ]),
      "THROUGH_SYMLINK",
      "link/evil",
    );
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "link", type: "symlink", linkname: ws.sentinel },
          { name: "stolen", type: "link", linkname: "link/keep" },
        ]),
      "THROUGH_SYMLINK",
      "stolen",
    );
  });

  it("refuses hard links to /etc/passwd, ../x, missing files, directories and symlinks", async () => {
    await expectRefused(
      await tarOf([{ name: "pw", type: "link", linkname: "/etc/passwd" }]),
      "UNSAFE_HARDLINK",
      '"/etc/passwd" is absolute',
    );
    await expectRefused(
      await tarOf([{ name: "x", type: "link", linkname: "../x" }]),
      "UNSAFE_HARDLINK",
      '"../x" has a ".." component',
    );
    await expectRefused(
      await tarOf([{ name: "h", type: "link", linkname: "nothere" }]),
      "UNSAFE_HARDLINK",
      "does not exist",
    );
    await expectRefused(
      await tarOf([
        { name: "d/", type: "directory" },
        { name: "h", type: "link", linkname: "d" },
      ]),
      "UNSAFE_HARDLINK",
      "not a regular file",
    );
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "s", type: "symlink", linkname: join(ws.sentinel, "keep") },
          { name: "h", type: "link", linkname: "s" },
        ]),
      "UNSAFE_HARDLINK",
      "not a regular file",
    );
  });

  it("refuses a file under a file, and a non-directory replacing a directory", async () => {
    await expectRefused(
      await tarOf([
        { name: "f", body: "x" },
        { name: "f/g", body: "y" },
      ]),
      "NOT_A_DIRECTORY",
      "f/g",
    );
    await expectRefused(
      async (ws) =>
        tarOf([
          { name: "d/", type: "directory" },
          { name: "d/file", body: "x" },
          { name: "d", type: "symlink", linkname: ws.sentinel },
        ]),
      "REPLACES_DIRECTORY",
      '"d"',
    );
  });

  it("device nodes and FIFOs: refused unless root (see the next test for root)", async () => {
    const devices: Item[] = [
      { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 },
      { name: "dev/loop99", type: "block-device", devmajor: 7, devminor: 99, mode: 0o660 },
      { name: "run/fifo", type: "fifo", mode: 0o620 },
    ];
    for (const item of devices) {
      await expectRefused(await tarOf([item]), "SPECIAL_FILE", item.name, { specialFiles: "refuse" });
      if (!ROOT) await expectRefused(await tarOf([item]), "SPECIAL_FILE", item.name);
    }
  });

  it("as root, creates device nodes and FIFOs faithfully", async (t) => {
    if (!ROOT) return t.skip("needs root");
    const ws = await workspace();
    const stats = await unpackTar(
      feed(
        await tarOf([
          { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666, mtime: T1 },
          { name: "dev/loop99", type: "block-device", devmajor: 7, devminor: 99, mode: 0o660, gid: 6 },
          { name: "run/fifo", type: "fifo", mode: 0o620, uid: 33, gid: 33 },
        ]),
      ),
      ws.dest,
    );
    assert.equal(stats.devices, 3);
    const nul = lstatSync(join(ws.dest, "dev/null"));
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, statSync("/dev/null").rdev);
    assert.equal(nul.mode & 0o7777, 0o666);
    assert.equal(secs(nul.mtimeMs), secs(T1));
    const loop = lstatSync(join(ws.dest, "dev/loop99"));
    assert.ok(loop.isBlockDevice());
    assert.equal(loop.rdev, (7 << 8) | 99); // makedev(7, 99)
    assert.equal(loop.gid, 6);
    const fifo = lstatSync(join(ws.dest, "run/fifo"));
    assert.ok(fifo.isFIFO());
    assert.equal(fifo.mode & 0o7777, 0o620);
    assert.deepEqual([fifo.uid, fifo.gid], [33, 33]);
  });

  it("stops an entry whose data runs past its declared size (hand-crafted header)", async () => {
    const one = await tarOf([{ name: "big", body: "0123456789" }]);
    // The header says 10 bytes; 2 KiB of data follow where the next header should be.
    const crafted = Buffer.concat([one.subarray(0, 512), Buffer.alloc(2048, "A"), Buffer.alloc(1024)]);
    await expectRefused(crafted, "NOT_TAR", '"big"');
  });

  it("refuses sparse files and unknown entry types", async () => {
    const tar = await tarOf([{ name: "odd", body: "x".repeat(600) }]);
    await expectRefused(retype(tar, 0, "S"), "UNSUPPORTED_ENTRY", '"odd"'); // old GNU sparse
    await expectRefused(retype(tar, 0, "V"), "UNSUPPORTED_ENTRY", "not supported"); // volume label
    await expectRefused(
      await tarOf([{ name: "s", body: "x", pax: { "GNU.sparse.major": "1", "GNU.sparse.minor": "0" } }]),
      "UNSUPPORTED_ENTRY",
      "sparse files",
    );
  });

  it("stops a highly compressible stream bigger than maxBytes (a gzip of zeros)", async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
    assert.ok(bomb.length < 100 * 1024);
    await expectRefused(bomb, "TOO_LARGE", "1048576", { compressed: true, maxBytes: 1024 * 1024 });
  });

  it("refuses an entry declaring more than maxBytes before writing it, and a sum of small ones", async () => {
    const huge = gzipSync(await tarOf([{ name: "huge", body: Buffer.alloc(8 * 1024 * 1024) }]));
    await expectRefused(huge, "TOO_LARGE", '"huge"', { compressed: true, maxBytes: 1024 * 1024 });
    const many = await tarOf(
      Array.from({ length: 40 }, (_, i) => ({ name: `f${i}`, body: Buffer.alloc(40 * 1024, i) })),
    );
    await expectRefused(many, "TOO_LARGE", undefined, { maxBytes: 1024 * 1024 });
  });

  it("refuses more entries than maxEntries", async () => {
    const tar = await tarOf(Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, body: "x" })));
    await expectRefused(tar, "TOO_MANY_ENTRIES", '"f10"', { maxEntries: 10 });
  });

  it("leaves an existing empty destination untouched when the gzip stream breaks midway", async () => {
    const text = Buffer.from(
      Array.from({ length: 120_000 }, (_, i) => `line ${i} of a long text file\n`).join(""),
    );
    const gz = gzipSync(
      await tarOf([
        { name: "text", body: text },
        { name: "after", body: "x" },
      ]),
    );
    const corrupt = Buffer.from(gz);
    corrupt.fill(0xff, gz.length >> 1, (gz.length >> 1) + 64);
    await expectRefused(corrupt, "CORRUPT_COMPRESSION", "gzip", { compressed: true, destExists: true });
    const truncated = gz.subarray(0, Math.floor(gz.length * 0.6));
    await expectRefused(truncated, "CORRUPT_COMPRESSION", "gzip", { compressed: true, destExists: true });
  });

  it("refuses corrupt xz data, a truncated or garbage tar, and an empty stream", async () => {
    const tar = await tarOf([{ name: "a", body: randomBytes(200_000) }]);
    const xz = compress("xz", ["-c", "-0", "-T1"], tar);
    const badXz = Buffer.from(xz);
    badXz.fill(0, 4096, 8192);
    await expectRefused(badXz, "CORRUPT_COMPRESSION", "xz", { compressed: true });
    await expectRefused(tar.subarray(0, 100_000), "NOT_TAR", "truncated");
    await expectRefused(randomBytes(4096), "NOT_TAR");
    await expectRefused(Buffer.alloc(0), "EMPTY");
  });
});

describe("unpackTar: the destination", () => {
  it("refuses a non-empty destination or a file before reading anything", async () => {
    const ws = await workspace(true);
    await writeFile(join(ws.dest, "mine"), "mine");
    let read = false;
    const source = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    await assert.rejects(unpackTar(source, ws.dest), (e) => isRefusal(e, "DEST_EXISTS", ws.dest));
    assert.equal(read, false);
    assert.deepEqual(readdirSync(ws.parent), ["dest"]);
    const file = join(ws.parent, "file");
    await writeFile(file, "f");
    await assert.rejects(unpackTar(feed(await tarOf([{ name: "a" }])), file), (e) =>
      isRefusal(e, "DEST_EXISTS"),
    );
    assert.equal(readFileSync(file, "utf8"), "f");
  });

  it("fills an existing empty destination directory", async () => {
    const ws = await workspace(true);
    await unpackTar(feed(await tarOf([{ name: "a", body: "a" }])), ws.dest);
    assert.equal(readFileSync(join(ws.dest, "a"), "utf8"), "a");
    assert.deepEqual(readdirSync(ws.parent), ["dest"]);
  });

  it("passes the source's own error through and cleans up", async () => {
    const ws = await workspace();
    const tar = await tarOf([{ name: "a", body: randomBytes(100_000) }]);
    const source = Readable.from(
      (async function* () {
        yield tar.subarray(0, 50_000);
        throw new Error("connection reset");
      })(),
    );
    await assert.rejects(unpackTar(source, ws.dest), /connection reset/);
    assert.deepEqual(readdirSync(ws.parent), []);
  });
});

/** Whole-second times on everything (tar keeps seconds): files T0, symlinks T1, directories T2. */
async function settle(dir: string): Promise<void> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await settle(p);
    else if (e.isSymbolicLink()) await lutimes(p, T1, T1);
    else await utimes(p, T0, T0);
  }
  await utimes(dir, T2, T2);
}

describe("unpackTarball", () => {
  it("round-trips trees written by GNU tar (gnu and posix formats; none, gzip, xz, zstd)", async () => {
    const src = join(scratch, "gnu-src");
    await mkdir(join(src, "etc/ssh"), { recursive: true });
    await mkdir(join(src, "usr/share/doc"), { recursive: true });
    await writeFile(join(src, "etc/hostname"), "gnu\n");
    await writeFile(join(src, "etc/ssh/sshd_config"), "PermitRootLogin no\n");
    await chmod(join(src, "etc/ssh/sshd_config"), 0o600);
    await writeFile(join(src, "usr/share/doc/big"), randomBytes(2 * 1024 * 1024));
    const longDir = join(src, "usr/share/doc", "d".repeat(90), "e".repeat(90));
    await mkdir(longDir, { recursive: true });
    await writeFile(join(longDir, `${"f".repeat(120)}-ünï.txt`), "long\n");
    await writeFile(join(src, "usr/sbin-tool"), "#!/bin/sh\n");
    await chmod(join(src, "usr/sbin-tool"), 0o4755);
    await link(join(src, "usr/sbin-tool"), join(src, "usr/tool-link"));
    await symlink("../usr/share/doc", join(src, "etc/docs"));
    await symlink("/absolute/elsewhere", join(src, "etc/abs"));
    if (ROOT) await chown(join(src, "etc/ssh/sshd_config"), 1234, 2345);
    await chmod(src, 0o755);
    await settle(src);
    const want = snapshot(src);

    const archives: [string, string[]][] = [
      ["gnu", ["--format=gnu"]],
      ["posix", ["--format=posix"]],
      ["gzip", ["-z"]],
      ["xz", ["-J"]],
      ["zstd", ["--zstd"]],
    ];
    for (const [label, flags] of archives) {
      const r = spawnSync("tar", ["--numeric-owner", ...flags, "-C", src, "-cf", "-", "."], {
        maxBuffer: 1 << 30,
      });
      assert.equal(r.status, 0, r.stderr?.toString());
      const ws = await workspace();
      const stats = await unpackTarball(feed(r.stdout, 65536), ws.dest);
      assert.equal(stats.hardlinks, 1, label);
      const got = snapshot(ws.dest);
      const expected = ROOT
        ? want
        : want.map((l) => l.replace(/ owner=\d+:\d+/, ` owner=${MY_UID}:${MY_GID}`));
      const strip = (l: string) => (ROOT ? l : l.replace(" mode=4755 ", " mode=755 "));
      assert.deepEqual(got, expected.map(strip), label);
      const ino = (p: string) => lstatSync(join(ws.dest, p)).ino;
      assert.equal(ino("usr/tool-link"), ino("usr/sbin-tool"), label);
      assert.equal(secs(lstatSync(join(ws.dest, "etc/docs")).mtimeMs), secs(T1), label);
      assert.equal(secs(lstatSync(join(ws.dest, "etc")).mtimeMs), secs(T2), label);
      assert.equal(secs(lstatSync(ws.dest).mtimeMs), secs(T2), label);
    }
  });

  it("keeps memory flat while streaming a large file", async (t) => {
    const size = 256 * 1024 * 1024;
    const block = Buffer.alloc(1024 * 1024, "lxhub ");
    const pack = tarPack();
    const produce = (async () => {
      const sink = pack.entry({ name: "huge.bin", size, mode: 0o644 });
      for (let i = 0; i < size; i += block.length) {
        if (!sink.write(block)) await new Promise<void>((res) => sink.once("drain", () => res()));
      }
      sink.end(undefined);
      pack.finalize();
    })();
    const ws = await workspace();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    const started = Date.now();
    try {
      const stats = await unpackTar(Readable.from(pack), ws.dest);
      assert.equal(stats.bytes, size);
    } finally {
      clearInterval(timer);
    }
    await produce;
    const growth = peak - baseline;
    t.diagnostic(`256 MiB in ${Date.now() - started} ms, RSS grew ${(growth / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(growth < 96 * 1024 * 1024, `RSS grew by ${growth} bytes`);
    assert.equal(lstatSync(join(ws.dest, "huge.bin")).size, size);
    const hash = createHash("sha256");
    await pipeline(createReadStream(join(ws.dest, "huge.bin"), { highWaterMark: 1 << 20 }), hash);
    const expected = createHash("sha256");
    for (let i = 0; i < size; i += block.length) expected.update(block);
    assert.equal(hash.digest("hex"), expected.digest("hex"));
  });

  it("unpacks many small files", async (t) => {
    const n = 2000;
    const tar = await tarOf(
      Array.from({ length: n }, (_, i) => ({ name: `d${i % 50}/f${i}`, body: `file ${i}\n` })),
    );
    const ws = await workspace();
    const started = process.hrtime.bigint();
    const stats = await unpackTar(feed(tar, 1 << 20), ws.dest);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    t.diagnostic(`${n} files in ${ms.toFixed(0)} ms (${Math.round((n / ms) * 1000)} files/s)`);
    assert.equal(stats.files, n);
    assert.equal(stats.dirs, 0);
    assert.equal(readdirSync(join(ws.dest, "d7")).length, n / 50);
    assert.equal(readFileSync(join(ws.dest, `d49/f${n - 1}`), "utf8"), `file ${n - 1}\n`);
  });
});

describe("TarUnpacker", () => {
  const sample = () =>
    tarOf([
      { name: "ro/", type: "directory", mode: 0o555 },
      { name: "ro/f", body: "f", mode: 0o444 },
      { name: "x", body: "x" },
    ]);

  it("unpacks into a caller-given staging directory, then commits into place", async () => {
    const ws = await workspace(true);
    const staging = join(ws.parent, "staging");
    const unpacker = new TarUnpacker(staging, { compression: "auto" });
    await pipeline(feed(gzipSync(await sample())), unpacker.writable());
    const stats = await unpacker.finish();
    assert.equal(stats.files, 2);
    assert.equal(readFileSync(join(staging, "x"), "utf8"), "x");
    assert.deepEqual(readdirSync(ws.dest), [], "nothing is visible before commit");
    await unpacker.commit(ws.dest);
    assert.deepEqual(readdirSync(ws.parent), ["dest"]);
    assert.equal(readFileSync(join(ws.dest, "ro/f"), "utf8"), "f");
    await unpacker.abort(); // after commit: does nothing
    assert.equal(readFileSync(join(ws.dest, "x"), "utf8"), "x");
  });

  it("abort() after a finished unpack removes the tree, read-only directories included", async () => {
    const ws = await workspace();
    const unpacker = TarUnpacker.beside(ws.dest);
    assert.ok(unpacker.staging.startsWith(`${ws.dest}.lxhub-partial-`));
    await pipeline(feed(await sample()), unpacker.writable());
    await unpacker.finish();
    await unpacker.abort();
    assert.deepEqual(readdirSync(ws.parent), []);
    await assert.rejects(unpacker.commit(ws.dest), /finished unpack/);
  });

  it("abort() in the middle stops the stream and removes the staging directory", async () => {
    const ws = await workspace();
    const unpacker = TarUnpacker.beside(ws.dest);
    const tar = await tarOf([{ name: "big", body: randomBytes(4 * 1024 * 1024) }]);
    const w = unpacker.writable();
    await new Promise<void>((res) => w.write(tar.subarray(0, 2 * 1024 * 1024), () => res()));
    await unpacker.abort();
    assert.deepEqual(readdirSync(ws.parent), []);
    assert.ok(w.destroyed);
    await assert.rejects(unpacker.finish(), (e) => isRefusal(e, "ABORTED"));
  });

  it("commit() refuses a non-empty destination and keeps the staging directory for abort()", async () => {
    const ws = await workspace(true);
    await writeFile(join(ws.dest, "mine"), "mine");
    const unpacker = TarUnpacker.beside(ws.dest);
    await pipeline(feed(await sample()), unpacker.writable());
    await unpacker.finish();
    await assert.rejects(unpacker.commit(ws.dest), (e) => isRefusal(e, "DEST_EXISTS"));
    assert.ok(existsSync(unpacker.staging));
    await unpacker.abort();
    assert.deepEqual(readdirSync(ws.parent), ["dest"]);
    assert.deepEqual(readdirSync(ws.dest), ["mine"]);
  });

  it("removes the staging directory itself when the archive is refused", async () => {
    const ws = await workspace();
    const staging = join(ws.parent, "staging");
    const unpacker = new TarUnpacker(staging);
    const tar = await tarOf([
      { name: "ok", body: "fine" },
      { name: "../evil", body: "x" },
    ]);
    await assert.rejects(pipeline(feed(tar), unpacker.writable()), (e) =>
      isRefusal(e, "UNSAFE_PATH", "../evil"),
    );
    await assert.rejects(unpacker.finish(), (e) => isRefusal(e, "UNSAFE_PATH"));
    assert.deepEqual(readdirSync(ws.parent), []);
  });

  it("refuses a staging directory that is not empty", async () => {
    const ws = await workspace(true);
    await writeFile(join(ws.dest, "mine"), "mine");
    assert.throws(
      () => new TarUnpacker(ws.dest),
      (e) => isRefusal(e, "DEST_EXISTS"),
    );
    assert.deepEqual(readdirSync(ws.dest), ["mine"]);
  });
});

describe("unpackTar: times and owners the fast paths must not lose", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lxhub-unpack-extra-"));
  });
  after(async () => {
    await removeTree(dir);
  });

  it("restores a pax mtime's fraction of a second, as GNU tar does", async () => {
    const dest = join(dir, "pax");
    await unpackTar(feed(await tarOf([{ name: "f", body: "x", pax: { mtime: "1700000000.25" } }])), dest);
    assert.equal(lstatSync(join(dest, "f")).mtimeMs, 1700000000250);
  });

  it(
    "as root, gives files the archive's group even below a setgid folder of another group",
    { skip: !ROOT },
    async () => {
      const parent = join(dir, "sgid");
      await mkdir(parent);
      await chown(parent, 0, 4242);
      await chmod(parent, 0o2775);
      // A staging folder made inside a setgid folder inherits the bit and the group (Linux).
      const unpacker = new TarUnpacker(join(parent, "staging"));
      await pipeline(feed(await tarOf([{ name: "f", body: "x", uid: 0, gid: 0 }])), unpacker.writable());
      await unpacker.finish();
      const dest = join(parent, "dest");
      await unpacker.commit(dest);
      const st = lstatSync(join(dest, "f"));
      assert.equal(st.uid, 0);
      assert.equal(st.gid, 0);
    },
  );
});
