import { it } from "node:test";
import assert from "node:assert/strict";
import { DEFAULTS, loadConfig, printableConfig } from "../../../server/config.js";
import { catalogConfigFromUrl, describeCatalogUrl } from "../../../storage/catalog/catalog.js";

it("the limits have defaults, come from the environment, and flags win over it", () => {
  const d = loadConfig({}, {});
  assert.equal(d.allowInsecureWrites, false);
  assert.equal(d.headersTimeoutSeconds, DEFAULTS.headersTimeoutSeconds);
  assert.equal(d.maxUploadsPerToken, DEFAULTS.maxUploadsPerToken);
  const env = {
    LXHUB_ALLOW_INSECURE_WRITES: "1",
    LXHUB_HEADERS_TIMEOUT: "2.5",
    LXHUB_REQUEST_TIMEOUT: "10",
    LXHUB_IDLE_TIMEOUT: "3",
    LXHUB_MAX_UPLOADS_PER_TOKEN: "4",
    LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN: "1000",
  };
  const c = loadConfig({}, env);
  assert.deepEqual(
    [
      c.allowInsecureWrites,
      c.headersTimeoutSeconds,
      c.requestTimeoutSeconds,
      c.idleTimeoutSeconds,
      c.maxUploadsPerToken,
      c.maxUploadBytesPerToken,
    ],
    [true, 2.5, 10, 3, 4, 1000],
  );
  const f = loadConfig({ allowInsecureWrites: false, maxUploadsPerToken: "9" }, env);
  assert.equal(f.allowInsecureWrites, false);
  assert.equal(f.maxUploadsPerToken, 9);
  assert.equal(loadConfig({}, { LXHUB_ALLOW_INSECURE_WRITES: "" }).allowInsecureWrites, false);
});

it("a wrong limit stops start-up with the setting's name", () => {
  assert.throws(
    () => loadConfig({}, { LXHUB_ALLOW_INSECURE_WRITES: "maybe" }),
    /LXHUB_ALLOW_INSECURE_WRITES/,
  );
  assert.throws(() => loadConfig({}, { LXHUB_IDLE_TIMEOUT: "0" }), /idleTimeoutSeconds/);
  assert.throws(() => loadConfig({}, { LXHUB_HEADERS_TIMEOUT: "soon" }), /headersTimeoutSeconds/);
  assert.throws(() => loadConfig({}, { LXHUB_MAX_UPLOADS_PER_TOKEN: "1.5" }), /maxUploadsPerToken/);
  assert.throws(() => loadConfig({}, { LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN: "-1" }), /maxUploadBytesPerToken/);
});

it("the catalog and blob store come from --db/--blobs, else LXHUB_DB/LXHUB_BLOBS, else the data folder", () => {
  const d = loadConfig({}, {});
  assert.equal(d.db, undefined);
  assert.equal(d.blobs, undefined);
  assert.equal(d.blobsRedirectSeconds, 0);
  const env = {
    LXHUB_DB: "postgres://lxhub@127.0.0.1:5432/lxhub",
    LXHUB_BLOBS: "s3://bucket/prefix?endpoint=http://127.0.0.1:9000",
    LXHUB_BLOBS_REDIRECT: "300",
  };
  const e = loadConfig({}, env);
  assert.deepEqual([e.db, e.blobs, e.blobsRedirectSeconds], [env.LXHUB_DB, env.LXHUB_BLOBS, 300]);
  const f = loadConfig(
    { db: "sqlite:/tmp/c.sqlite", blobs: "file:///srv/blobs", blobsRedirectSeconds: "0" },
    env,
  );
  assert.deepEqual([f.db, f.blobs, f.blobsRedirectSeconds], ["sqlite:/tmp/c.sqlite", "file:///srv/blobs", 0]);
  assert.throws(() => loadConfig({ blobsRedirectSeconds: "-1" }, {}), /blobsRedirectSeconds/);
  assert.throws(() => loadConfig({ blobsRedirectSeconds: "soon" }, {}), /blobsRedirectSeconds/);
});

it("a catalog URL is PostgreSQL, sqlite:FILE or nothing; anything else is a clear error, passwords never shown", () => {
  assert.deepEqual(catalogConfigFromUrl(undefined, "/d/catalog.sqlite"), {
    client: "sqlite",
    filename: "/d/catalog.sqlite",
  });
  assert.deepEqual(catalogConfigFromUrl("sqlite:/var/lib/c.sqlite", "x"), {
    client: "sqlite",
    filename: "/var/lib/c.sqlite",
  });
  assert.deepEqual(catalogConfigFromUrl("postgresql://u:p@h:5432/db", "x"), {
    client: "pg",
    connection: "postgresql://u:p@h:5432/db",
  });
  assert.throws(
    () => catalogConfigFromUrl("mysql://u:secret@h/db", "x"),
    (err: Error) => {
      assert.match(err.message, /expected postgres:\/\/… or sqlite:FILE/);
      assert.doesNotMatch(err.message, /secret/);
      return true;
    },
  );
  assert.throws(() => catalogConfigFromUrl("sqlite:", "x"), /needs a file name/);
  assert.equal(
    describeCatalogUrl("postgres://lxhub:hunter2@db:5432/lxhub"),
    "postgres://lxhub:***@db:5432/lxhub",
  );
});

it("--upstream takes exactly one trust setting, from flags or the environment", () => {
  const key = "A".repeat(43);
  const none = loadConfig({}, {});
  assert.equal(none.upstream, undefined);
  assert.equal(none.upstreamRefreshSeconds, 300);
  assert.equal(none.upstreamTimeoutSeconds, 30);
  assert.equal(loadConfig({}, { LXHUB_UPSTREAM_TIMEOUT: "2.5" }).upstreamTimeoutSeconds, 2.5);
  assert.throws(() => loadConfig({ upstreamTimeoutSeconds: "0" }, {}), /upstreamTimeoutSeconds/);
  const signed = loadConfig({}, { LXHUB_UPSTREAM: "https://images.example/", LXHUB_UPSTREAM_KEY: key });
  assert.deepEqual(
    [signed.upstream, signed.upstreamKey, signed.upstreamNoSignature],
    ["https://images.example/", key, false],
  );
  const plain = loadConfig(
    { upstream: "http://127.0.0.1:8080", upstreamNoSignature: true, upstreamRefreshSeconds: "60" },
    {},
  );
  assert.deepEqual([plain.upstreamNoSignature, plain.upstreamRefreshSeconds], [true, 60]);
  assert.throws(() => loadConfig({ upstream: "http://u" }, {}), /exactly one of --upstream-key/);
  assert.throws(
    () => loadConfig({ upstream: "http://u", upstreamKey: key, upstreamNoSignature: true }, {}),
    /exactly one of --upstream-key/,
  );
  assert.throws(() => loadConfig({ upstreamKey: key }, {}), /need --upstream/);
  assert.throws(() => loadConfig({ upstream: "ftp://u", upstreamNoSignature: true }, {}), /http/);
  assert.throws(() => loadConfig({ upstream: "http://u", upstreamKey: "short" }, {}), /thumbprint/);
});

it("a config file's keys are the flags; flag > environment > file > default; unknown keys are refused", () => {
  const file = {
    path: "/etc/lxhub/config.yaml",
    values: {
      "gc-interval": "6h",
      "idle-timeout": 5,
      listen: "127.0.0.1:9000",
      retain: ["debian/*:keep=3"],
      deltas: false,
    },
  };
  const c = loadConfig({}, {}, file);
  assert.deepEqual(
    [c.gcIntervalSeconds, c.idleTimeoutSeconds, c.listen, c.retain, c.deltas],
    [6 * 3600, 5, "127.0.0.1:9000", ["debian/*:keep=3"], false],
  );
  const e = loadConfig({}, { LXHUB_IDLE_TIMEOUT: "7", LXHUB_RETAIN: "*:keep=1;x/*:keep=2" }, file);
  assert.equal(e.idleTimeoutSeconds, 7, "the environment beats the file");
  assert.deepEqual(e.retain, ["*:keep=1", "x/*:keep=2"]);
  const f = loadConfig(
    { idleTimeoutSeconds: "9", retain: ["y/*:keep=4"] },
    { LXHUB_IDLE_TIMEOUT: "7" },
    file,
  );
  assert.deepEqual([f.idleTimeoutSeconds, f.retain], [9, ["y/*:keep=4"]], "flags beat both");
  assert.throws(
    () => loadConfig({}, {}, { path: "c.yaml", values: { "gc-intervall": "1h" } }),
    /c\.yaml: unknown key "gc-intervall"/,
  );
  assert.throws(
    () => loadConfig({}, {}, { path: "c.yaml", values: { "idle-timeout": "soon" } }),
    /idle-timeout \(idleTimeoutSeconds, from idle-timeout in c\.yaml\)/,
  );
});

it("--print-config shows the effective settings by name with passwords in URLs redacted", () => {
  const c = loadConfig(
    {
      db: "postgres://lxhub:s3cret@db:5432/lxhub",
      upstream: "https://u:pw@up.example",
      upstreamNoSignature: true,
    },
    {},
  );
  const p = printableConfig(c);
  assert.equal(p.db, "postgres://lxhub:***@db:5432/lxhub");
  assert.equal(p.upstream, "https://u:***@up.example");
  assert.equal(p["gc-grace"], DEFAULTS.gcGraceSeconds);
  assert.ok(!JSON.stringify(p).includes("s3cret"));
});
