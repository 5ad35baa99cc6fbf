import { z } from "zod";
import type { ErrorCode } from "../../registry/errors.js";
import {
  DURATION_PATTERN,
  MAX_SCOPE_LENGTH,
  MAX_SCOPES,
  parseDuration,
  SCOPE_PATTERN,
} from "../../registry/tokens.js";
import { readJson } from "./body.js";
import type { Route } from "./route.js";
import { textSchema } from "./text.js";

/** Longest token subject (shown in the audit log). */
export const MAX_SUBJECT_LENGTH = 128;
/** Default lifetime of a token made over the API. */
const DEFAULT_TTL = "30d";

export const tokenRequestSchema = z
  .object({
    scopes: z.array(z.string().min(1).max(MAX_SCOPE_LENGTH).regex(SCOPE_PATTERN)).min(1).max(MAX_SCOPES),
    /** At most MAX_TOKEN_TTL_SECONDS; parseDuration refuses longer. */
    ttl: z.string().min(1).max(32).regex(DURATION_PATTERN).optional(),
    subject: textSchema(MAX_SUBJECT_LENGTH).optional(),
  })
  .strict();

const TOKEN_FIELD_CODES: Partial<Record<string, ErrorCode>> = { subject: "INVALID_TEXT" };

/** API tokens (admin only): create, revoke. */
export const tokenRoutes: readonly Route[] = [
  {
    method: "POST",
    path: "/api/v1/tokens",
    operationId: "createToken",
    auth: "admin",
    body: "json",
    schema: tokenRequestSchema,
    answers: [201],
    errors: ["INVALID_TEXT"],
    headers: [],
    async handle({ req, res, principal, deps }) {
      const body = await readJson(req, tokenRequestSchema, TOKEN_FIELD_CODES);
      const t = await deps.tokens.create({
        scopes: body.scopes,
        ttlSeconds: parseDuration(body.ttl ?? DEFAULT_TTL),
        subject: body.subject,
        actor: principal!.subject,
      });
      res.status(201).json({ id: t.id, token: t.token, expires_at: t.expiresAt });
    },
  },
  {
    method: "DELETE",
    path: "/api/v1/tokens/:tokenId",
    operationId: "revokeToken",
    auth: "admin",
    body: "none",
    answers: [204],
    errors: ["NOT_FOUND"],
    headers: [],
    async handle({ res, params, principal, deps }) {
      await deps.tokens.revoke(params.tokenId, principal!.subject);
      res.status(204).end();
    },
  },
];
