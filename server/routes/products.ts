import { z } from "zod";
import type { ErrorCode } from "../../registry/errors.js";
import type { ProductView } from "../../registry/products.js";
import type { PublishedVersion } from "../../registry/publish.js";
import { DIGEST_PATTERN, MAX_ALIASES, MAX_REQUIREMENTS, TEXT_LIMITS } from "../../simplestreams/names.js";
import { PUBLISHABLE_FTYPES } from "../../simplestreams/types.js";
import { readJson } from "./body.js";
import { productKey, type Route } from "./route.js";
import { nameSchema, textSchema } from "./text.js";

/** Most files one version may name (a metadata tarball, root files, deltas). */
export const MAX_VERSION_FILES = 16;

/** PUT …/versions/:version: the files by digest (uploaded before), aliases, title, requirements. */
export const versionRequestSchema = z
  .object({
    files: z
      .array(
        z
          .object({
            name: nameSchema("file"),
            ftype: z.enum(PUBLISHABLE_FTYPES),
            digest: z.string().regex(DIGEST_PATTERN),
            delta_base: nameSchema("version").optional(),
          })
          .strict(),
      )
      .min(2)
      .max(MAX_VERSION_FILES),
    aliases: z.array(nameSchema("alias")).max(MAX_ALIASES).optional(),
    release_title: textSchema(TEXT_LIMITS.releaseTitle).optional(),
    requirements: z
      .record(nameSchema("requirementKey"), textSchema(TEXT_LIMITS.requirementValue))
      .refine((r) => Object.keys(r).length <= MAX_REQUIREMENTS, `at most ${MAX_REQUIREMENTS} requirements`)
      .meta({ maxProperties: MAX_REQUIREMENTS })
      .optional(),
    /** Admin only: take aliases another product holds (the publish service checks who may). */
    move_aliases: z.boolean().optional(),
  })
  .strict();

/** The code a problem in each field is reported with. */
const VERSION_FIELD_CODES: Partial<Record<string, ErrorCode>> = {
  files: "INVALID_FILES",
  aliases: "INVALID_ALIAS",
  release_title: "INVALID_TEXT",
  requirements: "INVALID_REQUIREMENT",
};

function productJson(p: ProductView): Record<string, unknown> {
  return {
    os: p.os,
    release: p.release,
    arch: p.arch,
    variant: p.variant,
    release_title: p.releaseTitle,
    aliases: p.aliases,
    requirements: p.requirements,
  };
}

function versionJson(v: PublishedVersion): Record<string, unknown> {
  return {
    product: `${v.product.os}:${v.product.release}:${v.product.arch}:${v.product.variant}`,
    version: v.version,
    created_at: v.createdAt,
    files: v.files,
    fingerprints: v.fingerprints,
  };
}

const PRODUCT = "/api/v1/products/:os/:release/:arch/:variant";
const VERSION = `${PRODUCT}/versions/:version`;

/** Products and their versions: public reads, scoped publish and delete. */
export const productRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/api/v1/products",
    operationId: "listProducts",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["STORAGE_UNAVAILABLE"],
    headers: [],
    async handle({ res, deps }) {
      res.json({ products: (await deps.products.list()).map(productJson) });
    },
  },
  {
    method: "GET",
    path: PRODUCT,
    operationId: "getProduct",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["NOT_FOUND", "STORAGE_UNAVAILABLE"],
    headers: [],
    async handle({ res, params, deps }) {
      const p = await deps.products.get(productKey(params));
      res.json({ ...productJson(p), versions: p.versions.map(versionJson) });
    },
  },
  {
    method: "GET",
    path: VERSION,
    operationId: "getVersion",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["NOT_FOUND", "STORAGE_UNAVAILABLE"],
    headers: [],
    async handle({ res, params, deps }) {
      res.json(versionJson(await deps.products.version(productKey(params), params.version)));
    },
  },
  {
    method: "PUT",
    path: VERSION,
    operationId: "putVersion",
    auth: "push-product",
    body: "json",
    schema: versionRequestSchema,
    answers: [200, 201],
    errors: [
      "BLOB_UNKNOWN",
      "INVALID_FILES",
      "INVALID_METADATA",
      "ARCH_MISMATCH",
      "INVALID_NAME",
      "INVALID_ALIAS",
      "INVALID_REQUIREMENT",
      "INVALID_TEXT",
      "INVALID_DELTA",
      "ALIAS_FORBIDDEN",
      "VERSION_CONFLICT",
      "VERSION_DELETED",
      "DUPLICATE_IMAGE",
      "ALIAS_CONFLICT",
    ],
    headers: [],
    async handle({ req, res, params, principal, deps }) {
      const body = await readJson(req, versionRequestSchema, VERSION_FIELD_CODES);
      const r = await deps.publish.putVersion(principal!, productKey(params), params.version, {
        files: body.files.map((f) => ({
          name: f.name,
          ftype: f.ftype,
          digest: f.digest,
          deltaBase: f.delta_base,
        })),
        aliases: body.aliases,
        releaseTitle: body.release_title,
        requirements: body.requirements,
        moveAliases: body.move_aliases,
      });
      res.status(r.created ? 201 : 200).json(versionJson(r.version));
    },
  },
  {
    method: "DELETE",
    path: VERSION,
    operationId: "deleteVersion",
    auth: "delete-product",
    body: "none",
    answers: [204],
    errors: ["NOT_FOUND"],
    headers: [],
    async handle({ res, params, principal, deps }) {
      await deps.publish.deleteVersion(principal!, productKey(params), params.version);
      res.status(204).end();
    },
  },
];
