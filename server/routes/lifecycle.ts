import { z } from "zod";
import { RETENTION_ACTOR } from "../../registry/registry.js";
import { checkPolicy, parseAge, type RetentionPolicy } from "../../registry/retention.js";
import { LxhubError } from "../../registry/errors.js";
import { productTarget } from "../../registry/paths.js";
import { readJson } from "./body.js";
import type { Route } from "./route.js";

const DURATION = /^\d+\s*[smhdw]?$/;

/** POST /api/v1/prune: the server's policies (or the ones given), for real or as a dry run. */
export const pruneRequestSchema = z
  .object({
    dry_run: z.boolean().optional(),
    policies: z
      .array(
        z
          .object({
            product: z.string().regex(/^[A-Za-z0-9._+*/-]{1,256}$/),
            keep: z.number().int().min(1).max(100_000).optional(),
            younger_than: z.string().regex(DURATION).optional(),
          })
          .strict(),
      )
      .max(64)
      .optional(),
  })
  .strict();

/** POST /api/v1/gc: collect now, for real or as a dry run. */
export const gcRequestSchema = z
  .object({
    dry_run: z.boolean().optional(),
    grace: z.string().regex(DURATION).optional(),
  })
  .strict();

/** Retention and garbage collection on demand (admin). */
export const lifecycleRoutes: readonly Route[] = [
  {
    method: "POST",
    path: "/api/v1/prune",
    operationId: "prune",
    auth: "admin",
    body: "json",
    schema: pruneRequestSchema,
    answers: [200],
    errors: ["BAD_REQUEST"],
    headers: [],
    async handle({ req, res, principal, deps }) {
      const body = await readJson(req, pruneRequestSchema, {});
      const policies = body.policies?.map((p): RetentionPolicy =>
        checkPolicy({
          product: p.product,
          keep: p.keep,
          youngerThanSeconds:
            p.younger_than === undefined ? undefined : parseAge(p.younger_than, "younger_than"),
        }),
      );
      if (!policies && !deps.retention.policies.length) {
        throw new LxhubError("BAD_REQUEST", "the server has no retention policies (--retain): give policies");
      }
      const retired = await deps.retention.prune(
        { subject: principal?.subject ?? RETENTION_ACTOR.subject, scopes: ["admin"] },
        { policies, dryRun: body.dry_run },
      );
      res.json({
        dry_run: body.dry_run === true,
        retired: retired.map((r) => ({
          product: productTarget(r.product),
          version: r.version,
          reason: r.reason,
        })),
      });
    },
  },
  {
    method: "POST",
    path: "/api/v1/gc",
    operationId: "collectGarbage",
    auth: "admin",
    body: "json",
    schema: gcRequestSchema,
    answers: [200],
    errors: ["BAD_REQUEST"],
    headers: [],
    async handle({ req, res, deps }) {
      const body = await readJson(req, gcRequestSchema, {});
      const grace = body.grace?.trim();
      const graceSeconds =
        grace === undefined
          ? (deps.gcGraceSeconds ?? 86400)
          : /^0+\s*[smhdw]?$/.test(grace)
            ? 0
            : parseAge(grace, "grace");
      const r = await deps.gc.run({ graceSeconds, dryRun: body.dry_run });
      res.json({
        dry_run: r.dryRun,
        grace_seconds: r.graceSeconds,
        scanned: r.scanned,
        kept: r.kept,
        freed: r.freed,
        freed_bytes: r.freedBytes,
      });
    },
  },
];
