import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { api, digestOf, errorCode, type ApiResponse } from "../support/api.js";

function message(r: ApiResponse): string {
  return String((r.json?.error as { message?: string } | undefined)?.message);
}

async function openSession(base: string, token: string): Promise<ApiResponse> {
  return api(base, "POST", "/api/v1/uploads", { token });
}

function patch(base: string, token: string, location: string, offset: number, bytes: Buffer) {
  return api(base, "PATCH", location, {
    token,
    body: bytes,
    headers: { "content-range": `bytes ${offset}-${offset + bytes.length - 1}/*` },
  });
}

describe("upload quotas per token (2 open sessions, 1000 bytes held)", () => {
  let s: RunningServer;
  let alice: string;
  let bob: string;

  before(async () => {
    s = await startServer({
      extraArgs: ["--max-uploads-per-token", "2"],
      env: { LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN: "1000" },
    });
    alice = await createToken(s.dataDir, "push:*");
    bob = await createToken(s.dataDir, "push:*");
  });
  after(async () => {
    await s?.stop();
  });

  it("refuses a third open session with 429 QUOTA_EXCEEDED naming the limit; other tokens are not affected", async () => {
    const a1 = await openSession(s.httpUrl, alice);
    const a2 = await openSession(s.httpUrl, alice);
    assert.equal(a1.status, 201);
    assert.equal(a2.status, 201);
    const a3 = await openSession(s.httpUrl, alice);
    assert.equal(a3.status, 429, a3.text);
    assert.equal(errorCode(a3), "QUOTA_EXCEEDED");
    assert.match(message(a3), /limit is 2 per token \(LXHUB_MAX_UPLOADS_PER_TOKEN\)/);

    assert.equal((await openSession(s.httpUrl, bob)).status, 201);

    // Cancelling one makes room again.
    assert.equal((await api(s.httpUrl, "DELETE", String(a2.json?.location), { token: alice })).status, 204);
    const again = await openSession(s.httpUrl, alice);
    assert.equal(again.status, 201, again.text);
    for (const r of [a1, again]) await api(s.httpUrl, "DELETE", String(r.json?.location), { token: alice });
  });

  it("refuses bytes past the per-token total with 429 naming the limit, and keeps the session as it was", async () => {
    const a = String((await openSession(s.httpUrl, alice)).json?.location);
    const b = String((await openSession(s.httpUrl, alice)).json?.location);
    const first = Buffer.alloc(600, 1);
    assert.equal((await patch(s.httpUrl, alice, a, 0, first)).status, 202);

    const over = await patch(s.httpUrl, alice, b, 0, Buffer.alloc(600, 2));
    assert.equal(over.status, 429, over.text);
    assert.equal(errorCode(over), "QUOTA_EXCEEDED");
    assert.match(message(over), /more than 1000 bytes.*LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN.*hold 600 bytes/);
    assert.equal((await api(s.httpUrl, "GET", b, { token: alice })).json?.offset, 0);
    assert.equal((await api(s.httpUrl, "GET", a, { token: alice })).json?.offset, 600);

    // Up to the limit is fine; one byte more is not.
    const rest = Buffer.alloc(400, 3);
    assert.equal((await patch(s.httpUrl, alice, b, 0, rest)).status, 202);
    assert.equal(errorCode(await patch(s.httpUrl, alice, b, 400, Buffer.alloc(1, 4))), "QUOTA_EXCEEDED");

    // Another token has its own allowance.
    const c = String((await openSession(s.httpUrl, bob)).json?.location);
    assert.equal((await patch(s.httpUrl, bob, c, 0, Buffer.alloc(900, 5))).status, 202);

    // A committed session no longer counts.
    const commit = await api(s.httpUrl, "PUT", `${a}?digest=${digestOf(first)}`, { token: alice });
    assert.equal(commit.status, 201, commit.text);
    assert.equal((await patch(s.httpUrl, alice, b, 400, Buffer.alloc(500, 6))).status, 202);
  });
});
