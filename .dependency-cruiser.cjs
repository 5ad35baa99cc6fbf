/**
 * The floors of docs/architecture.md, checked on the resolved import graph (`npm run lint`):
 * arrows point down only, client/ never reaches into server/, registry/ or storage/, the two
 * halves of storage/ do not know each other, and no module imports itself round a cycle.
 */
const FLOORS = {
  simplestreams: ["signing", "image", "storage", "registry", "server", "client", "cli"],
  signing: ["image", "storage", "registry", "server", "client", "cli"],
  image: ["signing", "storage", "registry", "server", "client", "cli"],
  storage: ["signing", "image", "registry", "server", "client", "cli"],
  registry: ["server", "client", "cli"],
  server: ["client", "cli"],
  client: ["server", "registry", "storage", "cli"],
};

module.exports = {
  forbidden: [
    ...Object.entries(FLOORS).map(([room, banned]) => ({
      name: `floor-${room}`,
      comment: `docs/architecture.md: ${room}/ must not import ${banned.join(", ")} (arrows point down only)`,
      severity: "error",
      from: { path: `^${room}/` },
      to: { path: `^(${banned.join("|")})/` },
    })),
    {
      name: "blobs-know-no-catalog",
      comment: "storage/blobs/ keeps bytes and knows nothing of the catalog's records",
      severity: "error",
      from: { path: "^storage/blobs/" },
      to: { path: "^storage/catalog/" },
    },
    {
      name: "catalog-knows-no-blobs",
      comment: "storage/catalog/ keeps records and never touches blob bytes",
      severity: "error",
      from: { path: "^storage/catalog/" },
      to: { path: "^storage/blobs/" },
    },
    {
      name: "product-code-not-tests",
      comment: "only tests and benchmarks import test/ and bench/",
      severity: "error",
      from: { path: "^(simplestreams|signing|image|storage|registry|server|client|cli)/" },
      to: { path: "^(test|bench)/" },
    },
    {
      name: "no-circular",
      comment: "a cycle makes the floors meaningless",
      severity: "error",
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(dist|node_modules)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
