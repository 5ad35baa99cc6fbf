import { it } from "node:test";
import assert from "node:assert/strict";
import { DEFAULTS, loadConfig } from "../../../server/config.js";

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
