import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Catalog } from "../../../storage/catalog/catalog.js";
import { catalogConformance } from "../../storage/catalog-conformance.js";

catalogConformance("sqlite", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "lxhub-catalog-"));
  const filename = path.join(dir, "catalog.sqlite");
  return {
    open: () => Catalog.open({ client: "sqlite", filename }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
