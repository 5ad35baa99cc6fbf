/**
 * A registry opened in-process on a fresh temporary data folder (SQLite catalog, blobs in the
 * folder), for unit tests of the registry's services; `close()` closes it and removes the folder.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { openRegistry, type Registry } from "../../registry/registry.js";

export interface ScratchRegistry {
  dir: string;
  reg: Registry;
  close(): Promise<void>;
}

export async function openScratchRegistry(prefix = "lxhub-reg-"): Promise<ScratchRegistry> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const reg = await openRegistry({
    dataDir: dir,
    statementTtlSeconds: 3600,
    uploadTtlSeconds: 60,
    maxBlobBytes: 1024,
    issuer: "test",
  });
  return {
    dir,
    reg,
    close: async () => {
      await reg.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
