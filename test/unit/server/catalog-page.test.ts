import { test } from "node:test";
import assert from "node:assert/strict";
import { originOf } from "../../../server/catalog-page.js";
import { escapeHtml } from "../../../server/catalog-render.js";

test("escapeHtml escapes what could open markup or leave a quoted attribute", () => {
  assert.equal(
    escapeHtml(`<script>"a" & 'b'</script>`),
    "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;",
  );
  assert.equal(escapeHtml("debian/12 amd64"), "debian/12 amd64");
});

test("originOf: the configured URL, else the request's scheme and a host-looking Host header", () => {
  assert.equal(originOf("https://images.example.org", "evil.example", false), "https://images.example.org");
  assert.equal(originOf(undefined, "127.0.0.1:8443", true), "https://127.0.0.1:8443");
  assert.equal(originOf(undefined, "[::1]:8080", false), "http://[::1]:8080");
  assert.equal(originOf(undefined, "images.example.org", true), "https://images.example.org");
  for (const bad of [undefined, "", `"><script>`, "a b", "host/path", "host:80:80", "-x.example"])
    assert.equal(originOf(undefined, bad, true), "https://HOST", String(bad));
});
