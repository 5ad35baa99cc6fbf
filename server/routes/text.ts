import { z } from "zod";
import { NAMES, type NameKind } from "../../simplestreams/names.js";

/**
 * Zod schemas for names and free text in request bodies, built from the one grammar in
 * simplestreams/names.ts so that the request validation, `openapi.yaml` and the publish
 * validator agree (test/contract checks the first two).
 */

/** A name of this kind: its pattern and maximum length. */
export function nameSchema(kind: NameKind): z.ZodString {
  const rule = NAMES[kind];
  return z
    .string()
    .min(1, `${rule.what} must not be empty`)
    .max(rule.maxLength, `${rule.what} is longer than ${rule.maxLength} characters`)
    .regex(rule.pattern, `${rule.what} must be ${rule.hint}`);
}

/**
 * Text without control characters: the complement of the set `hasControl` (names.ts) finds,
 * written as a pattern so openapi.yaml can carry it (test/contract checks the two agree).
 */
// eslint-disable-next-line no-control-regex -- the point is to exclude control characters
export const NO_CONTROL_PATTERN = /^[^\u0000-\u001f\u007f-\u009f]*$/;

export function textSchema(max: number): z.ZodString {
  return z
    .string()
    .min(1, "must not be empty")
    .max(max, `is longer than ${max} characters`)
    .regex(NO_CONTROL_PATTERN, "contains a control character");
}
