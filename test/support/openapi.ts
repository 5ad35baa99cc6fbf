/**
 * openapi.yaml as data for tests: its operations, and a validator (ajv, JSON Schema 2020-12 as
 * OpenAPI 3.1 uses) that checks a real answer against the documented statuses and schemas.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { parse } from "yaml";

/** dist/test/support/openapi.js → the repository's openapi.yaml. */
export const OPENAPI_FILE = fileURLToPath(new URL("../../../openapi.yaml", import.meta.url));

export type Json = Record<string, unknown>;

export interface Operation {
  /** The path template, e.g. `/api/v1/uploads/{id}`. */
  path: string;
  /** Upper case. */
  method: string;
  op: Json;
  /** Parameters of the path item and the operation, with references resolved. */
  parameters: Json[];
}

export const METHODS = ["get", "head", "post", "put", "patch", "delete", "options", "trace"] as const;

let cached: Json | null = null;

/** The parsed openapi.yaml. */
export function loadOpenapi(): Json {
  cached ??= parse(readFileSync(OPENAPI_FILE, "utf8")) as Json;
  return cached;
}

/** Follow a local `$ref` (`#/components/...`) until a value without one. */
export function deref(doc: Json, value: unknown): Json {
  let v = value as Json;
  for (let i = 0; i < 10 && typeof v?.$ref === "string"; i++) {
    const ref = v.$ref as string;
    if (!ref.startsWith("#/")) throw new Error(`non-local $ref ${ref}`);
    v = ref
      .slice(2)
      .split("/")
      .reduce<unknown>((o, k) => (o as Json)[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc) as Json;
    if (v === undefined) throw new Error(`dangling $ref ${ref}`);
  }
  return v;
}

/** Every operation in the description. */
export function operations(doc = loadOpenapi()): Operation[] {
  const out: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const m of METHODS) {
      const op = item[m] as Json | undefined;
      if (!op) continue;
      const params = [...((item.parameters as unknown[]) ?? []), ...((op.parameters as unknown[]) ?? [])];
      out.push({ path, method: m.toUpperCase(), op, parameters: params.map((p) => deref(doc, p)) });
    }
  }
  return out;
}

/** The documented operation a concrete request path and method fall under, or undefined. */
export function findOperation(method: string, urlPath: string, doc = loadOpenapi()): Operation | undefined {
  const path = urlPath.split("?")[0] ?? "";
  return operations(doc).find(
    (o) =>
      o.method === method.toUpperCase() &&
      new RegExp("^" + o.path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+") + "$").test(
        path,
      ),
  );
}

const SCHEMA_BASE = "https://lxhub.invalid/openapi";

/** `#/components/schemas/X` → an absolute reference into the schema document ajv holds. */
function rewriteRefs(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(rewriteRefs);
  if (v === null || typeof v !== "object") return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v as Json)) {
    out[k] =
      k === "$ref" && typeof x === "string" && x.startsWith("#/components/schemas/")
        ? `${SCHEMA_BASE}#/$defs/${x.slice("#/components/schemas/".length)}`
        : rewriteRefs(x);
  }
  return out;
}

let ajv: Ajv2020 | null = null;
const validators = new Map<unknown, ValidateFunction>();

function validatorFor(schema: unknown): ValidateFunction {
  let v = validators.get(schema);
  if (!v) {
    if (!ajv) {
      ajv = new Ajv2020({ strict: true, allErrors: true });
      (addFormatsModule as unknown as (a: Ajv2020) => void)(ajv);
      const schemas = (loadOpenapi().components as Json).schemas as Json;
      ajv.addSchema({ $id: SCHEMA_BASE, $defs: rewriteRefs(schemas) as Json });
    }
    v = ajv.compile(rewriteRefs(schema) as Json);
    validators.set(schema, v);
  }
  return v;
}

/**
 * Check a real answer against openapi.yaml: the operation is documented, the status is one it
 * documents, and a JSON body matches the documented schema. Throws with what differs.
 */
export function checkAnswer(
  method: string,
  urlPath: string,
  answer: { status: number; contentType: string | null; json: unknown },
): void {
  const doc = loadOpenapi();
  const found = findOperation(method, urlPath, doc);
  const where = `${method} ${urlPath} → ${answer.status}`;
  if (!found) {
    // An undocumented path: only the catch-all 404 (and 405 for methods a path does not answer),
    // or 400 INVALID_NAME for a path that is not percent-encoded UTF-8 (info.description says so:
    // the server refuses it before routing).
    if (answer.status === 404 || answer.status === 405 || (answer.status === 400 && !decodable(urlPath)))
      return checkJson(where, "#/components/schemas/Error", answer);
    throw new Error(`${where}: no operation in openapi.yaml`);
  }
  const responses = found.op.responses as Json;
  const response = responses[String(answer.status)];
  if (!response) throw new Error(`${where}: status not documented for ${found.method} ${found.path}`);
  const schema = (deref(doc, response).content as Json | undefined)?.["application/json"] as Json | undefined;
  if (schema?.schema && answer.json !== undefined && answer.json !== null)
    checkJson(where, schema.schema, answer);
}

function decodable(urlPath: string): boolean {
  try {
    decodeURIComponent(urlPath.split("?")[0] ?? "");
    return true;
  } catch {
    return false;
  }
}

function checkJson(
  where: string,
  schema: unknown,
  answer: { contentType: string | null; json: unknown },
): void {
  if (answer.json === null || answer.json === undefined) return;
  if (!answer.contentType?.startsWith("application/json"))
    throw new Error(`${where}: JSON body with content type ${answer.contentType}`);
  const validate = validatorFor(typeof schema === "string" ? { $ref: schema } : schema);
  if (!validate(answer.json))
    throw new Error(
      `${where}: body does not match openapi.yaml: ${JSON.stringify(validate.errors)}\n${JSON.stringify(answer.json)}`,
    );
}
