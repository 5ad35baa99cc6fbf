import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { chmod, chown, link, lutimes, mkdir, mkdtemp, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UnsquashfsError, unsquashfs, type UnsquashfsFailure } from "../../../image/squashfs.js";
import { removeTree, UnpackError } from "../../../image/unpack.js";

const ROOT = process.getuid?.() === 0;
const MY_UID = process.getuid?.() ?? 0;
const MY_GID = process.getgid?.() ?? 0;
const T0 = new Date("2024-01-02T03:04:05Z");
const T1 = new Date("2023-06-07T08:09:10Z");
const T2 = new Date("2022-11-12T13:14:15Z");

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Everything under `dir` that an unpack must reproduce (directory mtimes included). */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(dir, rel) : dir;
    const st = lstatSync(abs);
    const base = `${rel || "."} mode=${(st.mode & 0o7777).toString(8)} owner=${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out.push(`${base} dir ${st.mtimeMs}`);
      for (const name of readdirSync(abs).sort()) walk(rel ? `${rel}/${name}` : name);
    } else if (st.isSymbolicLink()) out.push(`${base} symlink -> ${readlinkSync(abs)}`);
    else if (st.isFile()) out.push(`${base} file nlink=${st.nlink} ${sha(readFileSync(abs))} ${st.mtimeMs}`);
    else out.push(`${base} special rdev=${st.rdev}`);
  };
  walk("");
  return out;
}

/** Whole-second times everywhere: files T0, symlinks T1, directories T2 (after their contents). */
async function settle(dir: string): Promise<void> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await settle(p);
    else if (e.isSymbolicLink()) await lutimes(p, T1, T1);
    else await utimes(p, T0, T0);
  }
  await utimes(dir, T2, T2);
}

function mksquashfs(src: string, image: string, extra: string[] = []): void {
  const r = spawnSync("mksquashfs", [src, image, "-noappend", "-quiet", "-no-progress", ...extra], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
}

function isFailure(reason: UnsquashfsFailure, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof UnsquashfsError, `expected an UnsquashfsError, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

describe("unsquashfs", () => {
  let scratch: string;
  let src: string;
  let image: string;
  let n = 0;
  /** A fresh parent directory; the destination inside it is `dest`. */
  const parent = async () => {
    const p = join(scratch, `p${n++}`);
    await mkdir(p);
    return { parent: p, dest: join(p, "dest") };
  };

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "lxhub-squashfs-"));
    await chmod(scratch, 0o755);
    src = join(scratch, "src");
    await mkdir(join(src, "etc/ssh"), { recursive: true });
    await mkdir(join(src, "usr/bin"), { recursive: true });
    await mkdir(join(src, "tmp"));
    await writeFile(join(src, "etc/hostname"), "squash\n");
    await writeFile(join(src, "etc/ssh/key"), "secret");
    await chmod(join(src, "etc/ssh/key"), 0o600);
    await chmod(join(src, "etc/ssh"), 0o700);
    await writeFile(join(src, "usr/bin/passwd"), "#!/bin/true\n");
    await chmod(join(src, "usr/bin/passwd"), 0o4755);
    await link(join(src, "usr/bin/passwd"), join(src, "usr/bin/chfn"));
    await writeFile(join(src, "usr/bin/big"), randomBytes(1024 * 1024 + 5));
    await chmod(join(src, "tmp"), 0o1777);
    await symlink("usr/bin", join(src, "bin"));
    await symlink("/absolute/elsewhere", join(src, "etc/abs"));
    if (ROOT) await chown(join(src, "etc/ssh/key"), 1234, 2345);
    await chmod(src, 0o755);
    await settle(src);
    image = join(scratch, "rootfs.squashfs");
    mksquashfs(src, image);
  });
  after(async () => {
    await removeTree(scratch);
  });

  it("round-trips a tree made with mksquashfs", async () => {
    const { parent: p, dest } = await parent();
    await unsquashfs(image, dest);
    assert.deepEqual(readdirSync(p), ["dest"], "no staging directory is left beside dest");
    const want = snapshot(src).map((line) =>
      ROOT
        ? line
        : line
            .replace(/ owner=\d+:\d+/, ` owner=${MY_UID}:${MY_GID}`)
            .replace(" mode=4755 ", " mode=755 ")
            .replace(" mode=1777 ", " mode=777 "),
    );
    assert.deepEqual(snapshot(dest), want);
    assert.equal(lstatSync(join(dest, "usr/bin/chfn")).ino, lstatSync(join(dest, "usr/bin/passwd")).ino);
  });

  it("fills an existing empty directory; refuses a non-empty one without touching it", async () => {
    const { parent: p, dest } = await parent();
    await mkdir(dest);
    await unsquashfs(image, dest);
    assert.ok(existsSync(join(dest, "etc/hostname")));
    const other = join(p, "other");
    await mkdir(other);
    await writeFile(join(other, "mine"), "mine");
    await assert.rejects(
      unsquashfs(image, other),
      (e) => e instanceof UnpackError && e.reason === "DEST_EXISTS",
    );
    assert.deepEqual(readdirSync(other), ["mine"]);
    assert.deepEqual(readdirSync(p).sort(), ["dest", "other"]);
  });

  it("fails on a corrupt image and leaves nothing behind", async () => {
    const { parent: p, dest } = await parent();
    const bytes = readFileSync(image);
    const truncated = join(scratch, "truncated.squashfs");
    await writeFile(truncated, bytes.subarray(0, bytes.length >> 1));
    await assert.rejects(unsquashfs(truncated, dest), isFailure("FAILED", /exit status 1/));
    const garbage = join(scratch, "garbage.squashfs");
    await writeFile(garbage, randomBytes(8192));
    await assert.rejects(unsquashfs(garbage, dest), isFailure("FAILED", /superblock/i));
    assert.deepEqual(readdirSync(p), []);
  });

  it("says what to install when unsquashfs is missing, and when the image is unreadable", async () => {
    const { parent: p, dest } = await parent();
    await assert.rejects(
      unsquashfs(image, dest, { command: join(scratch, "no-such-unsquashfs") }),
      isFailure("NOT_INSTALLED", /^unsquashfs not found: apt-get install squashfs-tools$/),
    );
    await assert.rejects(
      unsquashfs(join(scratch, "absent.squashfs"), dest),
      isFailure("UNREADABLE", /absent/),
    );
    assert.deepEqual(readdirSync(p), []);
  });

  it("device nodes and FIFOs: created as root, a failure otherwise", async () => {
    const withDevices = join(scratch, "devices.squashfs");
    const empty = join(scratch, "empty-src");
    await mkdir(empty, { recursive: true });
    mksquashfs(empty, withDevices, [
      "-p",
      "dev d 755 0 0",
      "-p",
      "dev/null c 666 0 0 1 3",
      "-p",
      "run d 755 0 0",
      "-p",
      "run/fifo i 620 0 0 f",
    ]);
    const { parent: p, dest } = await parent();
    if (ROOT) {
      await unsquashfs(withDevices, dest);
      const nul = lstatSync(join(dest, "dev/null"));
      assert.ok(nul.isCharacterDevice());
      assert.equal(nul.rdev, lstatSync("/dev/null").rdev);
      assert.ok(lstatSync(join(dest, "run/fifo")).isFIFO());
    } else {
      await assert.rejects(unsquashfs(withDevices, dest), isFailure("FAILED", /only be created as root/));
      assert.deepEqual(readdirSync(p), []);
    }
  });

  it("stops when aborted and leaves nothing behind", async () => {
    const { parent: p, dest } = await parent();
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(unsquashfs(image, dest, { signal: controller.signal }), isFailure("ABORTED"));
    assert.deepEqual(readdirSync(p), []);
  });
});
