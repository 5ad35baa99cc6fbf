import { LxhubError } from "../../registry/errors.js";
import { DIGEST_PATTERN } from "../../simplestreams/names.js";
import type { Call, Route } from "./route.js";
import { contentRangeStart, hasBody, refuseLargerThan } from "./body.js";

const sessionPath = (id: string) => `/api/v1/uploads/${id}`;

/** `?name=` as a string, or undefined. */
function query(call: Call, name: string): string | undefined {
  const v = call.req.query[name];
  return typeof v === "string" ? v : undefined;
}

/** Where a chunk goes: its Content-Range start, or the session's offset. Refused over the blob limit before reading. */
async function chunkStart(call: Call): Promise<number> {
  refuseLargerThan(call.req, call.deps.limits.maxBlobBytes, "a chunk");
  return contentRangeStart(call.req) ?? (await call.deps.uploads.state(call.params.id)).offset;
}

/** Resumable uploads (tus-like): open a session, append chunks, commit with the expected digest. */
export const uploadRoutes: readonly Route[] = [
  {
    method: "POST",
    path: "/api/v1/uploads",
    operationId: "openUpload",
    auth: "push-any",
    body: "none",
    answers: [201],
    errors: ["BAD_REQUEST", "BLOB_UNKNOWN", "QUOTA_EXCEEDED", "INSUFFICIENT_STORAGE"],
    headers: ["location", "upload-offset"],
    async handle(call) {
      const { res, principal, deps } = call;
      const u = await deps.uploads.open(principal!.tokenId, query(call, "prefix"));
      const location = sessionPath(u.id);
      res
        .status(201)
        .set({ location, "upload-offset": "0" })
        .json({ id: u.id, offset: 0, location, expires_at: u.expiresAt });
    },
  },
  {
    method: "GET",
    path: "/api/v1/uploads/:id",
    operationId: "getUpload",
    auth: "upload-owner",
    body: "none",
    answers: [200],
    errors: [],
    headers: ["upload-offset", "range"],
    async handle({ res, params, deps }) {
      const u = await deps.uploads.state(params.id);
      res
        .set({ "upload-offset": String(u.offset), range: u.offset ? `bytes=0-${u.offset - 1}` : "bytes=0-0" })
        .json({ id: u.id, offset: u.offset, location: sessionPath(u.id), expires_at: u.expiresAt });
    },
  },
  {
    method: "PATCH",
    path: "/api/v1/uploads/:id",
    operationId: "appendUpload",
    auth: "upload-owner",
    body: "bytes",
    answers: [202],
    errors: ["UPLOAD_OFFSET_MISMATCH", "QUOTA_EXCEEDED", "INSUFFICIENT_STORAGE"],
    headers: ["upload-offset"],
    async handle(call) {
      const start = await chunkStart(call);
      const u = await call.deps.uploads.append(call.params.id, start, call.req);
      call.res
        .status(202)
        .set({ "upload-offset": String(u.offset) })
        .json({ id: u.id, offset: u.offset, expires_at: u.expiresAt });
    },
  },
  {
    method: "PUT",
    path: "/api/v1/uploads/:id",
    operationId: "commitUpload",
    auth: "upload-owner",
    body: "bytes",
    answers: [201],
    errors: ["DIGEST_MISMATCH", "UPLOAD_OFFSET_MISMATCH", "QUOTA_EXCEEDED", "INSUFFICIENT_STORAGE"],
    headers: ["location"],
    async handle(call) {
      const digest = query(call, "digest") ?? "";
      if (!DIGEST_PATTERN.test(digest))
        throw new LxhubError("BAD_REQUEST", "commit needs ?digest=sha256:<64 lower-case hex>");
      // An optional last chunk comes in the body.
      if (hasBody(call.req)) await call.deps.uploads.append(call.params.id, await chunkStart(call), call.req);
      const blob = await call.deps.uploads.commit(call.params.id, digest, call.principal!.subject);
      call.res
        .status(201)
        .set({ location: `/blobs/sha256/${blob.digest.slice("sha256:".length)}` })
        .json({ digest: blob.digest, size: blob.size });
    },
  },
  {
    method: "DELETE",
    path: "/api/v1/uploads/:id",
    operationId: "cancelUpload",
    auth: "upload-owner",
    body: "none",
    answers: [204],
    errors: [],
    headers: [],
    async handle({ res, params, deps }) {
      await deps.uploads.cancel(params.id);
      res.status(204).end();
    },
  },
];
