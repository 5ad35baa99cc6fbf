import { it } from "node:test";
import assert from "node:assert/strict";
import { etagMatches, notModifiedSince } from "../../../server/read-path.js";

it('If-None-Match uses the weak comparison: W/"x" matches "x", lists and * too', () => {
  const etag = '"abc"';
  assert.ok(etagMatches('"abc"', etag));
  assert.ok(etagMatches('W/"abc"', etag));
  assert.ok(etagMatches('"zzz", W/"abc"', etag));
  assert.ok(etagMatches("*", etag));
  assert.ok(etagMatches('"abc"', 'W/"abc"'));
  assert.ok(!etagMatches('"abcd"', etag));
  assert.ok(!etagMatches('W/"ab"', etag));
  assert.ok(!etagMatches("abc", etag), "an unquoted tag is not the same tag");
  assert.ok(!etagMatches(undefined, etag));
  assert.ok(!etagMatches("", etag));
});

it("If-Modified-Since: not modified when the date is at or after the change, to the second", () => {
  const changed = new Date("2024-01-01T12:00:00.700Z");
  assert.ok(notModifiedSince("Mon, 01 Jan 2024 12:00:00 GMT", changed));
  assert.ok(notModifiedSince("Tue, 02 Jan 2024 00:00:00 GMT", changed));
  assert.ok(!notModifiedSince("Mon, 01 Jan 2024 11:59:59 GMT", changed));
  assert.ok(!notModifiedSince("yesterday", changed));
  assert.ok(!notModifiedSince(undefined, changed));
});
