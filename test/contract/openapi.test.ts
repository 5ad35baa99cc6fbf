import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { ALL_ROUTES } from "../../server/api.js";
import { ERROR_CATALOG, ERROR_CODES } from "../../registry/errors.js";
import { routeMethods, routeStatuses, type Params, type Route } from "../../server/routes/route.js";
import { NO_CONTROL_PATTERN } from "../../server/routes/text.js";
import { DIGEST_PATTERN, hasControl, NAMES } from "../../simplestreams/names.js";
import { TOKEN_ID_PATTERN } from "../../registry/tokens.js";
import { UPLOAD_ID_RE } from "../../storage/layout.js";
import { deref, loadOpenapi, operations, type Json } from "../support/openapi.js";

/**
 * openapi.yaml against the code, both ways: the route table (every route and method the server
 * answers, their statuses, headers and auth), the error catalog, the name grammar of path
 * parameters and the zod request schemas.
 */
const doc = loadOpenapi();
const ops = operations(doc);

/** `/a/:b` → `/a/{b}` */
const template = (path: string) => path.replace(/:([A-Za-z]+)/g, "{$1}");
const opFor = (route: Route, method: string) =>
  ops.find((o) => o.path === template(route.path) && o.method === method);
/** HEAD of a GET route is documented as its own operation, `<operationId>Head`. */
const operationIdFor = (route: Route, method: string) =>
  method === "HEAD" && route.method === "GET" ? `${route.operationId}Head` : route.operationId;

describe("openapi.yaml agrees with the route table", () => {
  const answered = ALL_ROUTES.flatMap((r) => routeMethods(r).map((m) => ({ route: r, method: m })));

  it("documents every route and method the server answers, with its operationId", () => {
    for (const { route, method } of answered) {
      const op = opFor(route, method);
      assert.ok(op, `${method} ${template(route.path)} is not in openapi.yaml`);
      assert.equal(op.op.operationId, operationIdFor(route, method), `${method} ${route.path}`);
    }
  });

  it("documents nothing the server does not answer", () => {
    for (const o of ops) {
      const found = answered.some(
        ({ route, method }) => template(route.path) === o.path && method === o.method,
      );
      assert.ok(found, `openapi.yaml documents ${o.method} ${o.path}, which no route answers`);
    }
  });

  it("lists exactly the statuses each route can return", () => {
    for (const { route, method } of answered) {
      const documented = Object.keys(opFor(route, method)!.op.responses as Json)
        .map(Number)
        .sort((a, b) => a - b);
      assert.deepEqual(documented, routeStatuses(route), `${method} ${route.path}`);
    }
  });

  it("declares the headers each route sets on its successful answers", () => {
    for (const { route, method } of answered) {
      const responses = opFor(route, method)!.op.responses as Json;
      const declared = new Set<string>();
      for (const [status, r] of Object.entries(responses)) {
        if (!status.startsWith("2")) continue;
        for (const h of Object.keys((deref(doc, r).headers as Json | undefined) ?? {}))
          declared.add(h.toLowerCase());
      }
      for (const h of route.headers)
        assert.ok(declared.has(h), `${method} ${route.path}: header ${h} not declared`);
    }
  });

  it("declares ETag on every 304 and WWW-Authenticate on every 401", () => {
    for (const o of ops) {
      const responses = o.op.responses as Json;
      for (const [status, header] of [
        ["304", "ETag"],
        ["401", "WWW-Authenticate"],
      ] as const) {
        if (!responses[status]) continue;
        const headers = (deref(doc, responses[status]).headers as Json | undefined) ?? {};
        assert.ok(headers[header], `${o.method} ${o.path} ${status} does not declare ${header}`);
      }
    }
  });

  it("marks exactly the routes without a token rule as public", () => {
    for (const { route, method } of answered) {
      const security = opFor(route, method)!.op.security as unknown[] | undefined;
      const isPublic = Array.isArray(security) && security.length === 0;
      assert.equal(isPublic, route.auth === "none", `${method} ${route.path} (auth ${route.auth})`);
    }
  });
});

describe("openapi.yaml agrees with the error catalog", () => {
  const schemas = (doc.components as Json).schemas as Json;
  const codeSchema = schemas.ErrorCode as { enum: string[]; description: string };

  it("ErrorCode lists exactly the catalog's codes", () => {
    assert.deepEqual(codeSchema.enum, ERROR_CODES);
  });

  it("names each code's status as the catalog does", () => {
    for (const code of ERROR_CODES) {
      assert.match(codeSchema.description, new RegExp(`\\b${code} ${ERROR_CATALOG[code].status}\\b`), code);
    }
  });
});

describe("openapi.yaml agrees with the name grammar", () => {
  const expected: Record<keyof Params | "file" | "hex", { pattern: string; maxLength?: number }> = {
    os: { pattern: NAMES.os.pattern.source, maxLength: NAMES.os.maxLength },
    release: { pattern: NAMES.release.pattern.source, maxLength: NAMES.release.maxLength },
    arch: { pattern: NAMES.arch.pattern.source, maxLength: NAMES.arch.maxLength },
    variant: { pattern: NAMES.variant.pattern.source, maxLength: NAMES.variant.maxLength },
    version: { pattern: NAMES.version.pattern.source, maxLength: NAMES.version.maxLength },
    file: { pattern: NAMES.file.pattern.source, maxLength: NAMES.file.maxLength },
    id: { pattern: UPLOAD_ID_RE.source },
    tokenId: { pattern: TOKEN_ID_PATTERN.source },
    digest: { pattern: DIGEST_PATTERN.source },
    hex: { pattern: "^[0-9a-f]{64}$" },
  };

  it("every path parameter carries its name's pattern and length", () => {
    for (const o of ops) {
      for (const p of o.parameters.filter((x) => x.in === "path")) {
        const name = p.name as keyof typeof expected;
        const want = expected[name];
        assert.ok(want, `${o.method} ${o.path}: unknown path parameter ${name}`);
        const schema = deref(doc, p.schema);
        assert.equal(schema.pattern, want.pattern, `${o.method} ${o.path} {${name}}`);
        assert.equal(schema.maxLength, want.maxLength, `${o.method} ${o.path} {${name}} maxLength`);
      }
    }
  });

  it("the no-control-character pattern is the complement of hasControl", () => {
    for (let cp = 0; cp < 0x3000; cp++) {
      const c = String.fromCodePoint(cp);
      assert.equal(NO_CONTROL_PATTERN.test(c), !hasControl(c), `U+${cp.toString(16)}`);
    }
  });
});

/** A schema without the keys that only explain (description, title). */
function strip(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(strip);
  if (v === null || typeof v !== "object") return v;
  const out: Json = {};
  for (const k of Object.keys(v as Json).sort()) {
    if (k === "description" || k === "title" || k === "$schema") continue;
    out[k] = strip(deref(doc, (v as Json)[k]));
  }
  return out;
}

describe("openapi.yaml request schemas are the zod request schemas", () => {
  for (const route of ALL_ROUTES.filter((r) => r.schema)) {
    it(`${route.operationId}: the same patterns, lengths, counts, required fields and enums`, () => {
      const body = opFor(route, route.method)!.op.requestBody as Json;
      const documented = ((body.content as Json)["application/json"] as Json).schema;
      assert.deepEqual(strip(deref(doc, documented)), strip(z.toJSONSchema(route.schema!)));
    });
  }

  it("every JSON route has a zod schema, and only JSON routes have a JSON request body", () => {
    for (const route of ALL_ROUTES) {
      const body = opFor(route, route.method)?.op.requestBody as Json | undefined;
      const json = body ? (body.content as Json)["application/json"] : undefined;
      assert.equal(route.body === "json", route.schema !== undefined, route.operationId);
      assert.equal(json !== undefined, route.body === "json", route.operationId);
    }
  });
});
