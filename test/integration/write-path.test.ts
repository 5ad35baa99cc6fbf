/**
 * The write path as one pipeline (validate → build → commit → swap): every request that would
 * make documents a real client refuses is answered with the rule's code and changes nothing, the
 * server keeps publishing and restarts on the same data, aliases are authority, deletes keep the
 * documents buildable, and a catalog row that breaks a rule never stops start-up or signing.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { startServer, createToken, type RunningServer } from "../support/server.js";
import { buildBusyboxImage } from "../support/image-fixture.js";
import { api, digestOf, errorCode, uploadBlob, uploadFile, versionPath } from "../support/api.js";
import { stateOf } from "../support/state.js";

type Product = { os: string; release: string; arch: string; variant: string };
const busybox: Product = { os: "busybox", release: "1.36", arch: "amd64", variant: "default" };
const other: Product = { os: "other", release: "1", arch: "amd64", variant: "default" };

interface Digests {
  meta: string;
  squashfs: string;
  tarxz: string;
}

describe("one write path that no request can break", () => {
  let s: RunningServer;
  let work: string;
  let admin: string;
  const img: Digests[] = [];
  let deltaBlob: string;

  const files = (d: Digests, extra: object[] = []) => [
    { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: d.meta },
    { name: "rootfs.squashfs", ftype: "squashfs", digest: d.squashfs },
    ...extra,
  ];
  const put = async (p: Product, version: string, body: object, token = admin) => {
    const r = await api(s.httpUrl, "PUT", versionPath(p, version), { token, body: JSON.stringify(body) });
    return { status: r.status, code: errorCode(r), text: r.text };
  };
  /** A request that breaks a rule: the status and code named, and nothing changed. */
  const refused = async (p: Product, version: string, body: object, status: number, code: string) => {
    const before = await stateOf(s);
    const r = await put(p, version, body);
    assert.equal(r.status, status, r.text);
    assert.equal(r.code, code, r.text);
    assert.deepEqual(await stateOf(s), before);
    return r;
  };
  const restart = async () => {
    await s.stop();
    s = await startServer({ dataDir: s.dataDir, keepData: true });
  };

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-write-path-"));
    s = await startServer({ keepData: true });
    admin = await createToken(s.dataDir, "admin");
    for (let i = 0; i < 7; i++) {
      const serial = `2024010${i + 1}_0000`;
      const b = await buildBusyboxImage(path.join(work, `v${i}`), {
        serial,
        marker: `image ${i}`,
        formats: ["squashfs", "tar.xz"],
      });
      img.push({
        meta: await uploadFile(s.httpUrl, admin, b.files["lxd.tar.xz"]!),
        squashfs: await uploadFile(s.httpUrl, admin, b.files["rootfs.squashfs"]!),
        tarxz: await uploadFile(s.httpUrl, admin, b.files["rootfs.tar.xz"]!),
      });
    }
    const delta = Buffer.from("a delta's bytes: the server does not read them");
    assert.equal((await uploadBlob(s.httpUrl, admin, delta)).status, 201);
    deltaBlob = digestOf(delta);
  });
  after(async () => {
    await s?.stop();
    await rm(s.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("refuses a requirement key the documents cannot carry (400 naming the rule), keeps publishing, restarts", async () => {
    const r = await refused(
      busybox,
      "20240105_0000",
      { files: files(img[0]!), requirements: { "bad key": "x" } },
      400,
      "INVALID_REQUIREMENT",
    );
    assert.match(JSON.parse(r.text).error.message as string, /key "bad key": requirement key must be/);
    const ok = await put(busybox, "20240101_0000", {
      files: files(img[0]!),
      aliases: ["busybox/1.36"],
      requirements: { secureboot: "false" },
    });
    assert.equal(ok.status, 201, ok.text);
    const before = await stateOf(s);
    await restart();
    assert.deepEqual(await stateOf(s), before);
  });

  it("refuses control characters, repeated aliases and another product's alias/<arch>", async () => {
    await refused(
      busybox,
      "20240102_0000",
      { files: files(img[1]!), release_title: "Busybox\u0007 1.36" },
      400,
      "INVALID_TEXT",
    );
    await refused(
      busybox,
      "20240102_0000",
      { files: files(img[1]!), aliases: ["bb", "bb"] },
      400,
      "INVALID_ALIAS",
    );
    // busybox holds "busybox/1.36", so LXD also registers "busybox/1.36/amd64" for it.
    const r = await refused(
      other,
      "20240102_0000",
      { files: files(img[1]!), aliases: ["busybox/1.36/amd64"] },
      409,
      "ALIAS_CONFLICT",
    );
    assert.match(
      JSON.parse(r.text).error.message as string,
      /already belongs to product "busybox:1\.36:amd64:default"/,
    );
  });

  it("refuses deltas whose base is newer or missing, and deltas without the file they rebuild", async () => {
    const delta = (base: string) => ({
      name: "root.vcdiff",
      ftype: "squashfs.vcdiff",
      digest: deltaBlob,
      delta_base: base,
    });
    await refused(
      busybox,
      "20240102_0000",
      { files: files(img[1]!, [delta("20240301_0000")]) },
      400,
      "INVALID_DELTA",
    );
    await refused(
      busybox,
      "20240102_0000",
      { files: files(img[1]!, [delta("20231231_0000")]) },
      400,
      "INVALID_DELTA",
    );
    await refused(
      busybox,
      "20240102_0000",
      {
        files: [
          { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: img[1]!.meta },
          { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: img[1]!.tarxz },
          delta("20240101_0000"),
        ],
      },
      400,
      "INVALID_DELTA",
    );
  });

  it("deletes a delta's base: the delta leaves the documents, the newer version stays whole", async () => {
    const delta = {
      name: "root.vcdiff",
      ftype: "squashfs.vcdiff",
      digest: deltaBlob,
      delta_base: "20240101_0000",
    };
    const ok = await put(busybox, "20240102_0000", { files: files(img[1]!, [delta]) });
    assert.equal(ok.status, 201, ok.text);
    const items = async () => {
      const doc = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as {
        products: Record<string, { versions: Record<string, { items: Record<string, unknown> }> }>;
      };
      return doc.products["busybox:1.36:amd64:default"]?.versions;
    };
    assert.ok((await items())?.["20240102_0000"]?.items["root.20240101_0000.vcdiff"]);
    const del = await api(s.httpUrl, "DELETE", versionPath(busybox, "20240101_0000"), { token: admin });
    assert.equal(del.status, 204, del.text);
    const versions = await items();
    assert.equal(versions?.["20240101_0000"], undefined);
    assert.deepEqual(Object.keys(versions?.["20240102_0000"]?.items ?? {}).sort(), [
      "incus.tar.xz",
      "lxd.tar.xz",
      "root.squashfs",
    ]);
    const again = await put(busybox, "20240103_0000", { files: files(img[2]!) });
    assert.equal(again.status, 201, again.text);
    const before = await stateOf(s);
    await restart();
    assert.deepEqual(await stateOf(s), before);
  });

  it("aliases are authority: a token claims only aliases inside its scope", async () => {
    const evil = await createToken(s.dataDir, "push:other/*");
    const before = await stateOf(s);
    const r = await put(other, "20240104_0000", { files: files(img[3]!), aliases: ["busybox/1.36"] }, evil);
    assert.equal(r.status, 403, r.text);
    assert.equal(r.code, "ALIAS_FORBIDDEN");
    assert.deepEqual(await stateOf(s), before);
    const mine = await put(other, "20240104_0000", { files: files(img[3]!), aliases: ["other/1"] }, evil);
    assert.equal(mine.status, 201, mine.text);
    // The alias still resolves to the product that holds it.
    const doc = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as {
      products: Record<string, { aliases?: string }>;
    };
    assert.equal(doc.products["busybox:1.36:amd64:default"]?.aliases, "busybox/1.36");
    assert.equal(doc.products["other:1:amd64:default"]?.aliases, "other/1");
  });

  it("only an admin moves an alias, and only when it asks to", async () => {
    const third: Product = { os: "third", release: "1", arch: "amd64", variant: "default" };
    const pusher = await createToken(s.dataDir, "push:*");
    const body = { files: files(img[5]!), aliases: ["other/1"] };
    const before = await stateOf(s);
    const notAdmin = await put(third, "20240106_0000", { ...body, move_aliases: true }, pusher);
    assert.equal(notAdmin.status, 403, notAdmin.text);
    assert.equal(notAdmin.code, "FORBIDDEN");
    const notAsked = await put(third, "20240106_0000", body);
    assert.equal(notAsked.status, 409, notAsked.text);
    assert.equal(notAsked.code, "ALIAS_CONFLICT");
    assert.deepEqual(await stateOf(s), before);
    const moved = await put(third, "20240106_0000", { ...body, move_aliases: true });
    assert.equal(moved.status, 201, moved.text);
    const doc = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as {
      products: Record<string, { aliases?: string }>;
    };
    assert.equal(doc.products["other:1:amd64:default"]?.aliases, undefined);
    assert.equal(doc.products["third:1:amd64:default"]?.aliases, "other/1");
    const db = new Database(path.join(s.dataDir, "catalog.sqlite"), { readonly: true });
    const audit = db.prepare("select actor, target, detail from audit_log where action = 'alias.move'").all();
    db.close();
    assert.equal(audit.length, 1);
    // An alias keeps its owner while the owner has no live version: it does not fall to another.
    const gone = await api(s.httpUrl, "DELETE", versionPath(third, "20240106_0000"), { token: admin });
    assert.equal(gone.status, 204, gone.text);
    const back = await api(s.httpUrl, "PUT", versionPath(other, "20240107_0000"), {
      token: admin,
      body: JSON.stringify({ files: files(img[6]!), aliases: ["other/1"] }),
    });
    assert.equal(back.status, 409, back.text);
    assert.equal(errorCode(back), "ALIAS_CONFLICT");
  });

  it("a catalog row that breaks a rule does not stop start-up or re-signing", async () => {
    await s.stop();
    const db = new Database(path.join(s.dataDir, "catalog.sqlite"));
    db.prepare("update products set requirements = ? where os = 'other'").run(
      JSON.stringify({ "bad key": "x" }),
    );
    db.prepare("update products set aliases = ? where os = 'busybox'").run("not json");
    db.close();
    s = await startServer({ dataDir: s.dataDir, keepData: true });
    const ready = await api(s.httpUrl, "GET", "/readyz");
    assert.equal(ready.status, 200, ready.text);
    const problems = (ready.json?.problems ?? []) as string[];
    assert.ok(
      problems.some((p) => p.includes('requirement key "bad key"')),
      ready.text,
    );
    assert.ok(
      problems.some((p) => p.includes("aliases must be an array")),
      ready.text,
    );
    assert.ok(s.logs.some((l) => l.includes('"event":"catalog-problem"')));
    const doc = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as {
      products: Record<string, unknown>;
    };
    assert.deepEqual(Object.keys(doc.products), []);
    // Re-signing and publishing go on; a push that repairs the product brings it back.
    const serial = async () => Number((await api(s.httpUrl, "GET", "/readyz")).json?.serial);
    const first = await serial();
    const fixed = await put(busybox, "20240105_0000", { files: files(img[4]!), aliases: ["busybox/1.36"] });
    assert.equal(fixed.status, 201, fixed.text);
    assert.ok((await serial()) > first);
    const after = JSON.parse((await api(s.httpUrl, "GET", "/streams/v1/images.json")).text) as {
      products: Record<string, unknown>;
    };
    assert.deepEqual(Object.keys(after.products), ["busybox:1.36:amd64:default"]);
  });
});
