import { readdir } from "node:fs/promises";
import path from "node:path";
import Database from "better-sqlite3";
import { api } from "./api.js";

async function walk(dir: string): Promise<string[]> {
  let out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    out = e.isDirectory() ? out.concat(await walk(p)) : out.concat([p]);
  }
  return out.sort();
}

/** Everything a failed request must leave as it was: blobs on disk, catalog rows, the served documents. */
export async function stateOf(s: { dataDir: string; httpUrl: string }): Promise<Record<string, unknown>> {
  const db = new Database(path.join(s.dataDir, "catalog.sqlite"), { readonly: true, fileMustExist: true });
  const counts: Record<string, number> = {};
  for (const t of ["products", "versions", "items", "blobs", "image_pairs"]) {
    counts[t] = (db.prepare(`select count(*) as n from ${t}`).get() as { n: number }).n;
  }
  db.close();
  const images = await api(s.httpUrl, "GET", "/streams/v1/images.json");
  const doc = JSON.parse(images.text) as Record<string, unknown>;
  delete doc.updated;
  return { blobs: await walk(path.join(s.dataDir, "blobs")), counts, products: doc.products };
}
