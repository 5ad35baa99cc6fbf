/**
 * Behaviour every catalog backend must show (storage/catalog/*.ts), registered as node:test
 * cases and run unchanged on SQLite (test/unit/storage/catalog-sqlite.test.ts) and PostgreSQL
 * (test/integration/catalog-pg.test.ts). `make` gives a fresh, empty catalog database and a way
 * to open it: `open()` twice gives two processes' view of the same records.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, it } from "node:test";

import type { Catalog, ItemRecord, StoredGeneration } from "../../storage/catalog/catalog.js";

export interface CatalogFixture {
  /** Open the fixture's database (migrating it on first open). */
  open(): Promise<Catalog>;
  cleanup(): Promise<void>;
}

const KEY = { os: "debian", release: "bookworm", arch: "amd64", variant: "default" };
const fields = { releaseTitle: "12", aliases: ["debian/12"], requirements: { secureboot: "false" } };

function digest(): string {
  return `sha256:${randomBytes(32).toString("hex")}`;
}

function items(): ItemRecord[] {
  return [
    { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: digest(), size: 1234, combined: {}, deltaBase: null },
    {
      name: "rootfs.squashfs",
      ftype: "squashfs",
      digest: digest(),
      size: 5_000_000_000,
      combined: {},
      deltaBase: null,
    },
  ];
}

function generation(serial: number, body: string): StoredGeneration {
  const doc = (path: string, text: string) => {
    const b = Buffer.from(text);
    return {
      path,
      sha256: createHash("sha256").update(b).digest("hex"),
      contentType: "application/json",
      body: b,
    };
  };
  return {
    serial,
    builtAt: new Date().toISOString(),
    problems: serial % 2 ? [] : ["a problem"],
    documents: [doc("streams/v1/index.json", `{"i":${serial}}`), doc("streams/v1/images.json", body)],
  };
}

async function publish(
  c: Catalog,
  name: string,
  by = "alice",
): Promise<{ productId: number; versionId: number }> {
  return c.transaction(async (tx) => {
    const productId = await c.images.upsertProduct(tx, { ...KEY, ...fields });
    const its = items();
    for (const i of its) await c.images.recordBlob(i.digest, i.size, tx);
    const versionId = await c.images.insertVersion(tx, {
      productId,
      name,
      createdBy: by,
      contentDigest: digest(),
      items: its,
    });
    return { productId, versionId };
  });
}

export function catalogConformance(name: string, make: () => Promise<CatalogFixture>): void {
  describe(`Catalog conformance: ${name}`, () => {
    let fx: CatalogFixture;
    let c: Catalog;
    const extra: Catalog[] = [];
    beforeEach(async () => {
      fx = await make();
      c = await fx.open();
    });
    afterEach(async () => {
      for (const x of extra.splice(0)) await x.close();
      await c.close();
      await fx.cleanup();
    });
    const second = async (): Promise<Catalog> => {
      const x = await fx.open();
      extra.push(x);
      return x;
    };

    it("records products, versions with their items (sizes past 2^32 intact) and reads them back", async () => {
      const { productId } = await publish(c, "20240101_0000");
      await publish(c, "20240102_0000");
      const p = await c.images.getProduct(KEY);
      assert.ok(p);
      assert.equal(p.id, productId);
      assert.deepEqual(p.aliases, ["debian/12"]);
      assert.deepEqual(p.requirements, { secureboot: "false" });
      const v = await c.images.getVersion(productId, "20240101_0000");
      assert.equal(v?.items.length, 2);
      assert.equal(v?.items.find((i) => i.ftype === "squashfs")?.size, 5_000_000_000);
      assert.deepEqual(
        (await c.images.listVersions(productId)).map((x) => x.name),
        ["20240101_0000", "20240102_0000"],
      );
      await c.transaction((tx) => c.images.markVersionDeleted(tx, v!.id, "bob"));
      assert.deepEqual(
        (await c.images.listVersions(productId)).map((x) => x.name),
        ["20240102_0000"],
      );
      assert.equal((await c.images.listVersions(productId, true)).length, 2);
      const snap = await c.images.snapshot();
      assert.equal(snap.length, 1);
      assert.equal(snap[0]!.versions.length, 2);
      assert.ok(snap[0]!.versions.find((x) => x.name === "20240101_0000")?.deletedAt);
      assert.deepEqual(
        (await c.images.listProducts()).map((x) => x.os),
        ["debian"],
      );
    });

    it("a failed transaction leaves nothing behind", async () => {
      await assert.rejects(
        c.transaction(async (tx) => {
          const productId = await c.images.upsertProduct(tx, { ...KEY, ...fields });
          await c.images.insertVersion(tx, {
            productId,
            name: "x",
            createdBy: "a",
            contentDigest: digest(),
            items: [],
          });
          await c.audit.record({ actor: "a", action: "version.publish", target: "x" }, tx);
          await c.counters.next("statement_serial", tx);
          throw new Error("boom");
        }),
        /boom/,
      );
      assert.equal(await c.images.getProduct(KEY), null);
      assert.deepEqual(await c.audit.recent(), []);
      assert.equal(await c.counters.get("statement_serial"), 0);
    });

    it("a (product, version) pair and an image fingerprint are unique", async () => {
      const { versionId } = await publish(c, "v1");
      await assert.rejects(publish(c, "v1"));
      const pair = {
        fingerprint: "ab".repeat(32),
        metaDigest: digest(),
        rootDigest: digest(),
        rootFtype: "squashfs",
      };
      await c.transaction((tx) => c.images.insertPairs(tx, versionId, [pair]));
      const found = await c.images.findPair(pair.fingerprint);
      assert.equal(found?.version, "v1");
      assert.deepEqual(found?.product, KEY);
      await assert.rejects(c.transaction((tx) => c.images.insertPairs(tx, versionId, [pair])));
      await c.transaction((tx) => c.images.markVersionDeleted(tx, versionId, "bob"));
      assert.equal(await c.images.findPair(pair.fingerprint), null);
    });

    it("blobs and combined hashes are recorded once", async () => {
      const d = digest();
      await c.images.recordBlob(d, 10);
      await c.images.recordBlob(d, 10);
      assert.deepEqual(await c.images.getBlob(d), { digest: d, size: 10 });
      await c.images.recordCombined(d, d, "f".repeat(64));
      await c.images.recordCombined(d, d, "e".repeat(64));
      assert.equal(await c.images.getCombined(d, d), "f".repeat(64));
      assert.equal(await c.images.getCombined(d, digest()), null);
    });

    it("upload sessions: owner, expiry, touch and delete", async () => {
      const t0 = new Date("2030-01-01T00:00:00Z");
      const later = new Date(t0.getTime() + 3600_000).toISOString();
      await c.uploads.create({
        id: "sess-aaaa",
        createdAt: t0.toISOString(),
        createdBy: "alice",
        expiresAt: later,
      });
      await c.uploads.create({
        id: "sess-bbbb",
        createdAt: t0.toISOString(),
        createdBy: "bob",
        expiresAt: t0.toISOString(),
      });
      assert.equal((await c.uploads.get("sess-aaaa"))?.createdBy, "alice");
      assert.deepEqual(await c.uploads.openOf("alice", t0), ["sess-aaaa"]);
      assert.deepEqual(await c.uploads.openOf("bob", t0), []);
      assert.deepEqual(await c.uploads.expired(new Date(t0.getTime() + 1)), ["sess-bbbb"]);
      await c.uploads.touch("sess-bbbb", later);
      assert.deepEqual(await c.uploads.expired(new Date(t0.getTime() + 1)), []);
      assert.equal((await c.uploads.get("sess-aaaa"))?.prefixState, null);
      await c.uploads.savePrefixState("sess-aaaa", '{"bytes":3}');
      assert.equal((await c.uploads.get("sess-aaaa"))?.prefixState, '{"bytes":3}');
      await c.uploads.delete("sess-aaaa");
      assert.equal(await c.uploads.get("sess-aaaa"), null);
    });

    it("tokens: insert, read, revoke once", async () => {
      const t = {
        id: "tok1",
        subject: "ci",
        scopes: ["push:debian/*"],
        createdAt: new Date().toISOString(),
        expiresAt: new Date(Date.now() + 1000).toISOString(),
        revokedAt: null,
      };
      await c.tokens.insert(t);
      assert.deepEqual(await c.tokens.get("tok1"), t);
      assert.equal(await c.tokens.revoke("tok1"), true);
      assert.equal(await c.tokens.revoke("tok1"), false);
      assert.ok((await c.tokens.get("tok1"))?.revokedAt);
      assert.equal(await c.tokens.get("nope"), null);
    });

    it("the audit log keeps entries newest first", async () => {
      await c.audit.record({ actor: "a", action: "one", target: "t" });
      await c.audit.record({ actor: "b", action: "two", target: "t", detail: { n: 1 } });
      const log = await c.audit.recent();
      assert.deepEqual(
        log.map((e) => [e.actor, e.action, e.detail]),
        [
          ["b", "two", { n: 1 }],
          ["a", "one", {}],
        ],
      );
    });

    it("counters never hand out a value twice, even to two processes at once", async () => {
      const other = await second();
      const got = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? c : other).counters.next("statement_serial")),
      );
      assert.deepEqual(
        [...got].sort((a, b) => a - b),
        Array.from({ length: 40 }, (_, i) => i + 1),
      );
      assert.equal(await c.counters.get("statement_serial"), 40);
    });

    it("generations: the pointer moves with the transaction; old ones and their documents go", async () => {
      assert.equal(await c.generations.currentSerial(), 0);
      assert.equal(await c.generations.current(), null);
      const shared = '{"products":{}}';
      for (let s = 1; s <= 5; s++) {
        await c.transaction((tx) => c.generations.save(tx, generation(s, s < 5 ? shared : `{"s":${s}}`), 3));
      }
      const cur = await c.generations.current();
      assert.equal(cur?.serial, 5);
      assert.deepEqual(
        cur?.documents.map((d) => [d.path, d.body.toString()]),
        [
          ["streams/v1/images.json", '{"s":5}'],
          ["streams/v1/index.json", '{"i":5}'],
        ],
      );
      assert.deepEqual(cur?.problems, []);
      const rows = (await c.db("generations").select("serial")) as { serial: number | string }[];
      assert.deepEqual(rows.map((r) => Number(r.serial)).sort(), [3, 4, 5]);
      // Documents only pruned generations named are gone; shared ones stay.
      const docs = (await c.db("documents").count({ n: "*" }).first()) as { n: number | string };
      assert.equal(Number(docs.n), 5); // index 3,4,5 + shared images + images 5
      await assert.rejects(
        c.transaction(async (tx) => {
          await c.generations.save(tx, generation(6, "{}"), 3);
          throw new Error("rolled back");
        }),
      );
      assert.equal(await c.generations.currentSerial(), 5);
      assert.equal((await (await second()).generations.current())?.serial, 5);
    });

    it("secrets: the first writer of a name wins; listed by prefix", async () => {
      const other = await second();
      const [a, b] = await Promise.all([
        c.secrets.putIfAbsent("signing-key:x", "one"),
        other.secrets.putIfAbsent("signing-key:x", "two"),
      ]);
      assert.equal(a, b);
      await c.secrets.putIfAbsent("signing-key:y", "three");
      await c.secrets.putIfAbsent("token-secret", "s");
      assert.deepEqual((await other.secrets.list("signing-key:")).map((r) => r.name).sort(), [
        "signing-key:x",
        "signing-key:y",
      ]);
      assert.equal(await c.secrets.delete("signing-key:y"), true);
      assert.equal(await c.secrets.delete("signing-key:y"), false);
      assert.equal(await other.secrets.get("token-secret"), "s");
    });

    it("locks: one holder at a time; tryLock does not wait", async () => {
      let inside = 0;
      let most = 0;
      const order: number[] = [];
      const locked = async (cat: Catalog, i: number) =>
        cat.locks.withLock("test:lock", async () => {
          inside++;
          most = Math.max(most, inside);
          await new Promise((r) => setTimeout(r, 5));
          order.push(i);
          inside--;
        });
      const others = c.shared ? [c, await second()] : [c];
      await Promise.all(Array.from({ length: 10 }, (_, i) => locked(others[i % others.length]!, i)));
      assert.equal(most, 1);
      assert.equal(order.length, 10);
      let release = (): void => {};
      const held = c.locks.withLock("test:try", () => new Promise<void>((r) => (release = r)));
      await new Promise((r) => setTimeout(r, 20));
      const tryFrom = others[others.length - 1]!;
      assert.deepEqual(await tryFrom.locks.tryLock("test:try", async () => 1), { held: true });
      release();
      await held;
      assert.deepEqual(await tryFrom.locks.tryLock("test:try", async () => 2), { held: false, value: 2 });
    });
  });
}
