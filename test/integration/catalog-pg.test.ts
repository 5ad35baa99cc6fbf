/**
 * The catalog conformance suite on a real PostgreSQL (test/support/postgres.ts), plus what only a
 * shared catalog does: notices to other replicas and locks that die with their holder.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pg from "pg";
import { Catalog } from "../../storage/catalog/catalog.js";
import { catalogConformance } from "../storage/catalog-conformance.js";
import { createDatabase } from "../support/postgres.js";

catalogConformance("postgresql", async () => {
  const url = await createDatabase("catalog");
  return {
    open: () => Catalog.open({ client: "pg", connection: url }),
    cleanup: async () => undefined,
  };
});

describe("PostgreSQL catalog shared by replicas", () => {
  it("two replicas migrating at once both open the catalog", async () => {
    const url = await createDatabase("migrate");
    const [a, b] = await Promise.all([
      Catalog.open({ client: "pg", connection: url }),
      Catalog.open({ client: "pg", connection: url }),
    ]);
    assert.equal(await a.counters.next("x"), 1);
    assert.equal(await b.counters.next("x"), 2);
    await a.close();
    await b.close();
  });

  it("a generation committed by one replica is announced to the others, and only once committed", async () => {
    const url = await createDatabase("notify");
    const a = await Catalog.open({ client: "pg", connection: url });
    const b = await Catalog.open({ client: "pg", connection: url });
    try {
      const heard: (number | null)[] = [];
      b.onGeneration((s) => heard.push(s));
      const deadline = Date.now() + 5000;
      while (!heard.includes(null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await assert.rejects(
        a.transaction(async (tx) => {
          await a.notifyGeneration(tx, 7);
          throw new Error("rolled back");
        }),
      );
      await a.transaction((tx) => a.notifyGeneration(tx, 8));
      while (!heard.includes(8) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        heard.filter((s) => s !== null),
        [8],
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("locks taken many times reuse pooled connections without piling up listeners", async () => {
    const url = await createDatabase("reuse");
    const c = await Catalog.open({ client: "pg", connection: url });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w.name);
    };
    process.on("warning", onWarning);
    try {
      for (let i = 0; i < 40; i++) {
        assert.deepEqual(await c.locks.tryLock("upload:x", async () => i), { held: false, value: i });
        assert.equal(await c.locks.withLock("upload:x", async () => i), i);
      }
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off("warning", onWarning);
      await c.close();
    }
  });

  it("a lock held by a replica that dies is released by the server", async () => {
    const url = await createDatabase("locks");
    const a = await Catalog.open({ client: "pg", connection: url });
    const b = await Catalog.open({ client: "pg", connection: url });
    try {
      // A raw session takes the lock the way PgLocks does, then its connection is cut.
      const raw = new pg.Client({ connectionString: url });
      await raw.connect();
      await raw.query("select pg_advisory_lock(hashtextextended('lxhub:index', 0))");
      assert.deepEqual(await b.locks.tryLock("lxhub:index", async () => 1), { held: true });
      const pid = (await raw.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      raw.on("error", () => undefined);
      await a.db.raw("select pg_terminate_backend(?)", [pid]);
      const got = await b.locks.withLock("lxhub:index", async () => "mine");
      assert.equal(got, "mine");
    } finally {
      await a.close();
      await b.close();
    }
  });
});
