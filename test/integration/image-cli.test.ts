/**
 * The client commands of issue 11 against a real `lxhub serve` on loopback, with tiny images of
 * several products and architectures: `lxhub image list|info|delete`, `--version`, the `--json`
 * output of `verify`, `pull`, `push` and `remote list` (shapes of docs/cli-json.md) and bash
 * completion.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { ImageRecord as ImageJson } from "../../client/image-list.js";
import { hostArch } from "../../simplestreams/index.js";
import { run } from "../support/process.js";
import { CLI_MAIN, createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { buildTinyImage, publishTinyImage } from "../support/tiny-image.js";
import { pullEnv } from "./pull-support.js";

/** The keys of an image object, docs/cli-json.md. */
const IMAGE_KEYS = [
  "aliases",
  "architecture",
  "created_at",
  "description",
  "expires_at",
  "filename",
  "files",
  "fingerprint",
  "product",
  "properties",
  "public",
  "size",
  "type",
  "uploaded_at",
  "version",
];

function checkImageShape(img: ImageJson): void {
  assert.deepEqual(Object.keys(img).sort(), IMAGE_KEYS);
  assert.match(img.fingerprint, /^[0-9a-f]{64}$/);
  assert.ok(Array.isArray(img.aliases) && img.aliases.every((a) => typeof a === "string"));
  assert.ok(["container", "virtual-machine"].includes(img.type));
  assert.equal(img.public, true);
  assert.equal(typeof img.size, "number");
  assert.ok(!Number.isNaN(Date.parse(img.created_at)) && !Number.isNaN(Date.parse(img.uploaded_at)));
  assert.ok(img.expires_at === null || !Number.isNaN(Date.parse(img.expires_at)));
  for (const v of Object.values(img.properties)) assert.equal(typeof v, "string");
  assert.equal(
    img.size,
    img.files.slice(0, 2).reduce((n, f) => n + f.size, 0),
  );
  for (const f of img.files) {
    assert.deepEqual(Object.keys(f).sort(), ["ftype", "name", "path", "sha256", "size"]);
    assert.match(f.sha256, /^[0-9a-f]{64}$/);
  }
}

function parseJson<T>(stdout: string): T {
  return JSON.parse(stdout) as T;
}

/** RFC 4180 records, as the CLI writes them (no quoted line breaks in these fields). */
function csvRecords(text: string): string[][] {
  assert.ok(text === "" || text.endsWith("\r\n"), "every record ends with CRLF");
  return text
    .split("\r\n")
    .slice(0, -1)
    .map((line) => line.match(/("([^"]|"")*"|[^,]*)(,|$)/g)!.slice(0, -1))
    .map((cells) =>
      cells.map((c) =>
        c
          .replace(/,$/, "")
          .replace(/^"(.*)"$/, "$1")
          .replace(/""/g, '"'),
      ),
    );
}

describe("lxhub image, --json and completion against a real server", { timeout: 5 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let admin: string;
  let env: NodeJS.ProcessEnv;
  const host = hostArch();

  const cli = (args: string[]) => lxhubCli(args, { env });

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-imagecli-"));
    server = await startServer();
    admin = await createToken(server.dataDir, "admin");
    const base = server.httpUrl;
    await publishTinyImage(base, admin, path.join(work, "a1"), "20240101_0000", {
      distinct: true,
      aliases: ["tiny/1"],
    });
    await publishTinyImage(base, admin, path.join(work, "a2"), "20240201_0000", {
      distinct: true,
      aliases: ["tiny/1"],
    });
    await publishTinyImage(base, admin, path.join(work, "arm"), "20240201_0000", {
      arch: "arm64",
      distinct: true,
      aliases: ["tiny/1"],
    });
    await publishTinyImage(base, admin, path.join(work, "r2"), "20240301_0000", {
      release: "2",
      distinct: true,
      aliases: ["tiny/2"],
    });
    ({ env } = await pullEnv(work));
    const add = await cli([
      "remote",
      "add",
      "hub",
      server.httpsUrl,
      "--trust-on-first-use",
      "--ca",
      server.certFile,
    ]);
    assert.equal(add.code, 0, add.stderr);
  });

  after(async () => {
    await server?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("--version prints the package's version", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    const r = await cli(["--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  it("image list: a table with incus' columns, every image of every architecture", async () => {
    const r = await cli(["image", "list", "hub"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(
      lines[1]!,
      /^\| ALIAS +\| FINGERPRINT +\| PUBLIC +\| DESCRIPTION +\| ARCHITECTURE +\| TYPE +\| SIZE +\| UPLOAD DATE +\|$/,
    );
    const rows = lines.filter((l) => l.startsWith("|")).slice(1);
    assert.equal(rows.length, 4, r.stdout);
    for (const row of rows) {
      const cells = row.split("|").map((c) => c.trim());
      assert.match(cells[2]!, /^[0-9a-f]{12}$/);
      assert.equal(cells[3], "yes");
      assert.equal(cells[6], "CONTAINER");
      assert.match(cells[7]!, /^\d+\.\d\dMiB$/);
      assert.match(cells[8]!, /^[A-Z][a-z]{2} \d+, \d{4} at \d+:\d\d[ap]m \(UTC\)$/);
    }
    assert.ok(rows.some((row) => row.includes("| aarch64 ")));
    assert.ok(rows.some((row) => row.includes("| x86_64 ")));
  });

  it("image list --format json: an array of image objects of the documented shape", async () => {
    const r = await cli(["image", "list", "hub", "--format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const images = parseJson<ImageJson[]>(r.stdout);
    assert.equal(images.length, 4);
    for (const img of images) checkImageShape(img);
    const newest = images.find((i) => i.product === "tiny:1:amd64:default" && i.version === "20240201_0000")!;
    assert.equal(newest.architecture, "x86_64");
    assert.equal(newest.properties.os, "tiny");
    assert.equal(newest.properties.architecture, "amd64");
    assert.equal(newest.properties.serial, "20240201_0000");
    assert.equal(newest.properties.type, "root.tar.xz");
    assert.deepEqual(
      newest.files.map((f) => f.ftype),
      ["lxd.tar.xz", "root.tar.xz"],
    );
    // The newest version takes the aliases (§4.3); short ones shown only for this host's arch (§4.2).
    assert.ok(newest.aliases.includes("tiny/1/amd64"));
    assert.equal(newest.aliases.includes("tiny/1"), host === "x86_64");
    const older = images.find((i) => i.version === "20240101_0000")!;
    assert.deepEqual(older.aliases, []);
    const arm = images.find((i) => i.architecture === "aarch64")!;
    assert.ok(arm.aliases.includes("tiny/1/arm64"));
  });

  it("image list --format csv: RFC 4180 records, one per image, incus' columns", async () => {
    const r = await cli(["image", "list", "hub", "--format", "csv"]);
    assert.equal(r.code, 0, r.stderr);
    const records = csvRecords(r.stdout);
    assert.equal(records.length, 4);
    for (const rec of records) {
      assert.equal(rec.length, 8);
      assert.match(rec[1]!, /^[0-9a-f]{12}$/);
    }
    // The upload date holds a comma, so it is quoted.
    assert.match(r.stdout, /,"[A-Z][a-z]{2} \d+, \d{4} at [^"]+"\r\n/);
  });

  it("image list filters as incus: substrings, KEY=VALUE on properties and fields, all must match", async () => {
    const fingerprints = async (...filters: string[]): Promise<string[]> => {
      const r = await cli(["image", "list", "hub", ...filters, "--format", "json"]);
      assert.equal(r.code, 0, r.stderr);
      return parseJson<ImageJson[]>(r.stdout).map((i) => `${i.product} ${i.version}`);
    };
    assert.deepEqual(await fingerprints("architecture=aarch64"), ["tiny:1:arm64:default 20240201_0000"]);
    assert.deepEqual(await fingerprints("arch=arm64"), ["tiny:1:arm64:default 20240201_0000"]);
    assert.deepEqual(await fingerprints("release=2"), ["tiny:2:amd64:default 20240301_0000"]);
    assert.deepEqual(await fingerprints("tiny/2/"), ["tiny:2:amd64:default 20240301_0000"]);
    assert.deepEqual(await fingerprints("serial=202402.*", "architecture=x86_64"), [
      "tiny:1:amd64:default 20240201_0000",
    ]);
    assert.equal((await fingerprints("type=container")).length, 4);
    assert.deepEqual(await fingerprints("type=virtual-machine"), []);
    assert.deepEqual(await fingerprints("os=debian"), []);
    const all = parseJson<ImageJson[]>((await cli(["image", "list", "hub", "--format", "json"])).stdout);
    const one = all[0]!;
    assert.deepEqual(await fingerprints(one.fingerprint.slice(0, 10)), [`${one.product} ${one.version}`]);
  });

  it("image list: a URL needs a key or --no-signature, as lxhub pull", async () => {
    const refused = await cli(["image", "list", server.httpUrl]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no pinned key/);
    const plain = await cli(["image", "list", server.httpUrl, "--no-signature", "--format", "json"]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(parseJson<ImageJson[]>(plain.stdout).length, 4);
    assert.match(plain.stderr, /not checking signatures/);
  });

  it("image info: resolves like pull, prints incus' fields and the files; --format json", async () => {
    const r = await cli(["image", "info", "hub", "tiny/1", "--arch", "amd64"]);
    assert.equal(r.code, 0, r.stderr);
    for (const field of [
      /^Fingerprint: [0-9a-f]{64}$/m,
      /^Size: \d+\.\d\dMiB$/m,
      /^Architecture: x86_64$/m,
      /^Type: container$/m,
      /^Public: yes$/m,
      /^ {4}Created: 2024\/02\/01 00:00 UTC$/m,
      /^ {4}Expires: never$/m,
      /^ {4}serial: 20240201_0000$/m,
      /^ {4}- tiny\/1\/amd64$/m,
      /^ {4}- rootfs\.tar\.xz \(root\.tar\.xz\): \d+ bytes, sha256 [0-9a-f]{64}$/m,
    ]) {
      assert.match(r.stdout, field);
    }
    const j = await cli(["image", "info", "hub", "tiny/1", "--arch", "arm64", "--format", "json"]);
    assert.equal(j.code, 0, j.stderr);
    const img = parseJson<ImageJson>(j.stdout);
    checkImageShape(img);
    assert.equal(img.architecture, "aarch64");
    const byPrefix = await cli(["image", "info", "hub", img.fingerprint.slice(0, 12), "--format", "json"]);
    assert.equal(byPrefix.code, 0, byPrefix.stderr);
    assert.deepEqual(parseJson<ImageJson>(byPrefix.stdout), img);
  });

  it("image info of an unknown alias: exit 1, and with --format json an error object", async () => {
    const r = await cli(["image", "info", "hub", "nope/1", "--format", "json"]);
    assert.equal(r.code, 1);
    const err = parseJson<{ error: { message: string } }>(r.stdout);
    assert.deepEqual(Object.keys(err), ["error"]);
    assert.match(err.error.message, /has no container image "nope\/1"/);
    assert.match(r.stderr, /^lxhub: .*nope\/1/m);
  });

  it("image delete: 403 without a delete: scope covering the product, then deleted, then 404", async () => {
    const product = "tiny/2/amd64/default";
    const wrong = await createToken(server.dataDir, "delete:other/*");
    const pushOnly = await createToken(server.dataDir, "push:*");
    const right = await createToken(server.dataDir, "delete:tiny/*");
    const del = (token: string, ...more: string[]) =>
      cli([
        "image",
        "delete",
        server.httpsUrl,
        product,
        "20240301_0000",
        "--ca",
        server.certFile,
        ...more,
        "--token",
        token,
      ]);

    for (const token of [wrong, pushOnly]) {
      const r = await del(token);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the token may not delete tiny\/2\/amd64\/default: it needs a delete: scope/);
    }
    const j = await del(wrong, "--json");
    assert.equal(j.code, 1);
    assert.equal(parseJson<{ error: { status: number } }>(j.stdout).error.status, 403);

    const ok = await del(right, "--json");
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(parseJson(ok.stdout), { deleted: true, product, version: "20240301_0000" });

    const again = await del(right);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /has no live version 20240301_0000 of tiny\/2\/amd64\/default/);

    const bad = await cli(["image", "delete", server.httpsUrl, "tiny/2", "x", "--token", right]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /PRODUCT must be os\/release\/arch\/variant/);

    const list = await cli(["image", "list", "hub", "release=2", "--format", "json"]);
    assert.deepEqual(parseJson(list.stdout), []);
  });

  it("remote list --json", async () => {
    const r = await cli(["remote", "list", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const remotes = parseJson<Record<string, unknown>[]>(r.stdout);
    assert.equal(remotes.length, 1);
    const hub = remotes[0]!;
    assert.deepEqual(Object.keys(hub).sort(), ["added_at", "ca", "keys", "name", "signed", "url"]);
    assert.equal(hub.name, "hub");
    assert.equal(hub.signed, true);
    assert.ok(Array.isArray(hub.keys) && hub.keys.length >= 1);
    assert.equal(typeof hub.ca, "string");
  });

  it("verify --json: the report; a failed check exits 1 with ok false", async () => {
    const r = await cli(["verify", "hub", "tiny/1", "--arch", "amd64", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const rep = parseJson<{
      ok: boolean;
      remote: string;
      url: string;
      alias: string;
      steps: { what: string; ok: boolean; detail: string }[];
      image: ImageJson;
    }>(r.stdout);
    assert.deepEqual(Object.keys(rep).sort(), ["alias", "image", "ok", "remote", "steps", "url"]);
    assert.equal(rep.ok, true);
    assert.equal(rep.alias, "tiny/1");
    assert.ok(rep.steps.every((s) => s.ok));
    assert.deepEqual(rep.steps.at(-1), { what: "fingerprint", ok: true, detail: rep.image.fingerprint });
    checkImageShape(rep.image);

    const failed = await cli(["verify", "hub", "nope/1", "--json"]);
    assert.equal(failed.code, 1);
    const bad = parseJson<{ ok: boolean; steps: { ok: boolean }[]; image: null }>(failed.stdout);
    assert.equal(bad.ok, false);
    assert.equal(bad.steps.at(-1)!.ok, false);
    assert.equal(bad.image, null);

    const usage = await cli(["verify", "nowhere", "--json"]);
    assert.equal(usage.code, 1);
    assert.match(parseJson<{ error: { message: string } }>(usage.stdout).error.message, /no remote named/);
  });

  it("pull --json: the result on stdout", async () => {
    const dest = path.join(work, "pulled");
    const r = await cli(["pull", "hub", "tiny/1", dest, "--arch", "amd64", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const res = parseJson<Record<string, unknown> & { image: ImageJson; files: Record<string, unknown>[] }>(
      r.stdout,
    );
    assert.deepEqual(Object.keys(res).sort(), [
      "alias",
      "bytes_downloaded",
      "delta",
      "dest",
      "files",
      "fingerprint",
      "format",
      "image",
      "method",
      "remote",
      "statement",
    ]);
    assert.equal(res.dest, dest);
    assert.equal(res.fingerprint, res.image.fingerprint);
    assert.equal(res.delta, null);
    checkImageShape(res.image);
    assert.deepEqual(Object.keys(res.files[0]!).sort(), [
      "cached",
      "downloaded",
      "ftype",
      "name",
      "resumed_from",
      "sha256",
      "size",
    ]);
    const again = await cli(["pull", "hub", "tiny/1", dest, "--arch", "amd64", "--json"]);
    assert.equal(again.code, 1);
    assert.equal(typeof parseJson<{ error: { message: string } }>(again.stdout).error.message, "string");
  });

  it("push --json: the result on stdout", async () => {
    const img = await buildTinyImage(path.join(work, "push3"), { release: "3" });
    const r = await cli([
      "push",
      server.httpsUrl,
      img.dir,
      "--token",
      admin,
      "--ca",
      server.certFile,
      "--version",
      "20240401_0000",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const res = parseJson<Record<string, unknown>>(r.stdout);
    assert.deepEqual(Object.keys(res).sort(), [
      "aliases",
      "bytes_skipped",
      "bytes_uploaded",
      "created",
      "files",
      "fingerprints",
      "product",
      "version",
      "vm",
    ]);
    assert.equal(res.created, true);
    assert.equal(res.version, "20240401_0000");
    assert.deepEqual(res.product, { os: "tiny", release: "3", arch: "amd64", variant: "default" });
    const noToken = await lxhubCli(["push", server.httpsUrl, img.dir, "--json"], {
      env: { ...env, LXHUB_TOKEN: "" },
    });
    assert.equal(noToken.code, 1);
    assert.match(parseJson<{ error: { message: string } }>(noToken.stdout).error.message, /no token/);
  });

  it("completion bash: registers _lxhub, completes commands, subcommands, flags and remote names", async () => {
    const complete = async (line: string): Promise<string[]> => {
      const words = line.split(" ");
      const script = [
        `lxhub() { "${process.execPath}" "${CLI_MAIN}" "$@"; }`,
        "source <(lxhub completion bash)",
        `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})`,
        `COMP_CWORD=${words.length - 1}`,
        `COMP_LINE='${line}'`,
        `COMP_POINT=${line.length}`,
        "_lxhub lxhub",
        'printf "%s\\n" "${COMPREPLY[@]}"',
      ].join("\n");
      const r = await run("bash", ["-c", script], { env: { ...process.env, ...env } });
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split("\n").filter(Boolean).sort();
    };
    const reg = await run(
      "bash",
      [
        "-c",
        `lxhub() { "${process.execPath}" "${CLI_MAIN}" "$@"; }\nsource <(lxhub completion bash); complete -p lxhub`,
      ],
      { env: { ...process.env, ...env } },
    );
    assert.equal(reg.code, 0, reg.stderr);
    assert.match(reg.stdout, /^complete .*-F _lxhub lxhub$/m);
    assert.deepEqual(await complete("lxhub im"), ["image"]);
    assert.deepEqual(await complete("lxhub image "), ["delete", "info", "list"]);
    assert.deepEqual(await complete("lxhub image list --fo"), ["--format"]);
    assert.deepEqual(await complete("lxhub image list h"), ["hub"]);
    assert.deepEqual(await complete("lxhub pull --arch amd64 h"), ["hub"]);
    assert.deepEqual(await complete("lxhub remote list --j"), ["--json"]);
  });
});
