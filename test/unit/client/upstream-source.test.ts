import { it } from "node:test";
import assert from "node:assert/strict";
import { VerificationError } from "../../../client/cache.js";
import { HttpError, NetworkError, TimeoutError } from "../../../client/http.js";
import { HttpUpstreamSource } from "../../../client/upstream-source.js";

it("classifies upstream failures by kind, and never shows the URL's credentials", () => {
  const s = new HttpUpstreamSource({
    url: "https://user:secret@images.example/base/",
    key: null,
    stateDir: "/nonexistent",
  });
  assert.equal(s.label, "https://images.example/base");
  const kind = (err: unknown) => s.classify(err).kind;
  assert.equal(kind(new HttpError(429, "HTTP_429", "slow down", undefined, "GET x", 30)), "rate-limited");
  assert.equal(kind(new HttpError(504, "HTTP_504", "gateway timeout")), "timeout");
  assert.equal(kind(new HttpError(503, "HTTP_503", "unavailable")), "http");
  assert.equal(kind(new HttpError(404, "NOT_FOUND", "no such file")), "http");
  assert.equal(kind(new TimeoutError("https://images.example/x", 30_000)), "timeout");
  assert.equal(
    kind(new NetworkError("ECONNREFUSED", "connection refused", "https://images.example/")),
    "unreachable",
  );
  assert.equal(kind(new VerificationError("BAD_STATEMENT", "expired")), "verification");
  assert.equal(kind(new Error("something else")), "other");
});
