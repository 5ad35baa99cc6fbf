import express, { type NextFunction, type Request, type Response } from "express";
import { z } from "zod";
import { LxhubError } from "../registry/errors.js";
import type { Catalog, ProductKey, ProductRecord } from "../storage/catalog/catalog.js";
import type { BlobStore } from "../storage/blobs/store.js";
import { authorize, parseDuration, type Principal, type TokenService } from "../registry/tokens.js";
import type { UploadService } from "../registry/uploads.js";
import { toView, type PublishService } from "../registry/publish.js";
import { productTarget } from "../registry/paths.js";
import type { IndexService } from "../registry/indexer.js";
import { renderError } from "./errors.js";

export interface ApiDeps {
  catalog: Catalog;
  blobs: BlobStore;
  tokens: TokenService;
  uploads: UploadService;
  publish: PublishService;
  index: IndexService;
  /** Where errors that are not LxhubErrors (bugs, I/O failures) are reported. */
  onInternalError?: (err: unknown) => void;
}

type Authed = Request & { principal?: Principal };

const versionBody = z
  .object({
    files: z
      .array(
        z
          .object({
            name: z.string(),
            ftype: z.string(),
            digest: z.string(),
            delta_base: z.string().optional(),
          })
          .strict(),
      )
      .min(1),
    aliases: z.array(z.string()).optional(),
    release_title: z.string().min(1).max(256).optional(),
    requirements: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const tokenBody = z
  .object({
    scopes: z.array(z.string()).min(1),
    ttl: z.string().optional(),
    subject: z.string().max(128).optional(),
  })
  .strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined) throw new LxhubError("BAD_REQUEST", "expected a JSON body");
  const r = schema.safeParse(body);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`);
    throw new LxhubError("BAD_REQUEST", `invalid request body: ${issues.join("; ")}`, { issues });
  }
  return r.data;
}

/** `Content-Range: bytes a-b/total|*` → a; absent → null. */
function rangeStart(header: string | undefined): number | null {
  if (!header) return null;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  if (!m)
    throw new LxhubError(
      "BAD_REQUEST",
      `bad Content-Range ${JSON.stringify(header)}; use "bytes <start>-<end>/<total or *>"`,
    );
  return Number(m[1]);
}

function productKey(req: Request): ProductKey {
  const p = req.params as Record<string, string>;
  return { os: p.os ?? "", release: p.release ?? "", arch: p.arch ?? "", variant: p.variant ?? "" };
}

/**
 * The publish/admin API on express. Each route: parse → authorize → one registry call → respond.
 */
export function createApi(deps: ApiDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  const json = express.json({ type: () => true, limit: "1mb" });

  const auth = async (req: Authed, _res: Response, next: NextFunction): Promise<void> => {
    const h = req.headers.authorization;
    const m = h ? /^Bearer\s+(\S+)$/i.exec(h) : null;
    if (!m?.[1])
      throw new LxhubError("UNAUTHORIZED", "this request needs a token: Authorization: Bearer <token>");
    req.principal = await deps.tokens.verify(m[1]);
    next();
  };
  const who = (req: Authed): Principal => {
    if (!req.principal) throw new LxhubError("UNAUTHORIZED", "no token");
    return req.principal;
  };
  /** A push-scoped token that opened the session `:id` (or an admin token). */
  const sessionOwner = async (req: Authed): Promise<Principal> => {
    const p = who(req);
    authorize(p, "push", "*");
    await deps.uploads.checkOwner(String(req.params.id), p.tokenId, p.scopes.includes("admin"));
    return p;
  };

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", async (_req, res) => {
    try {
      await deps.catalog.ping();
      if (!deps.index.generation()) throw new Error("documents not built");
      const problems = deps.index.problems();
      res.json({
        status: "ready",
        serial: deps.index.generation()?.serial,
        ...(problems.length ? { problems } : {}),
      });
    } catch (err) {
      res.status(503).json({ status: "not ready", reason: (err as Error).message });
    }
  });

  // --- uploads --------------------------------------------------------------------------------
  app.post("/api/v1/uploads", auth, async (req: Authed, res) => {
    authorize(who(req), "push", "*");
    const prefix = typeof req.query.prefix === "string" ? req.query.prefix : undefined;
    const u = await deps.uploads.open(who(req).tokenId, prefix);
    const location = `/api/v1/uploads/${u.id}`;
    res
      .status(201)
      .set({ location, "upload-offset": "0" })
      .json({ id: u.id, offset: 0, location, expires_at: u.expiresAt });
  });
  app.get("/api/v1/uploads/:id", auth, async (req: Authed, res) => {
    await sessionOwner(req);
    const u = await deps.uploads.state(String(req.params.id));
    res
      .set({ "upload-offset": String(u.offset), range: u.offset ? `bytes=0-${u.offset - 1}` : "bytes=0-0" })
      .json({ id: u.id, offset: u.offset, location: `/api/v1/uploads/${u.id}`, expires_at: u.expiresAt });
  });
  app.patch("/api/v1/uploads/:id", auth, async (req: Authed, res) => {
    await sessionOwner(req);
    const id = String(req.params.id);
    const start = rangeStart(req.headers["content-range"]) ?? (await deps.uploads.state(id)).offset;
    const u = await deps.uploads.append(id, start, req);
    res
      .status(202)
      .set({ "upload-offset": String(u.offset) })
      .json({ id: u.id, offset: u.offset, expires_at: u.expiresAt });
  });
  app.put("/api/v1/uploads/:id", auth, async (req: Authed, res) => {
    const p = await sessionOwner(req);
    const id = String(req.params.id);
    const digest = typeof req.query.digest === "string" ? req.query.digest : "";
    if (!digest) throw new LxhubError("BAD_REQUEST", "commit needs ?digest=sha256:<hex>");
    const hasBody =
      Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined;
    if (hasBody) {
      const start = rangeStart(req.headers["content-range"]) ?? (await deps.uploads.state(id)).offset;
      await deps.uploads.append(id, start, req);
    }
    const blob = await deps.uploads.commit(id, digest, p.subject);
    res
      .status(201)
      .set({ location: `/blobs/sha256/${blob.digest.slice(7)}` })
      .json(blob);
  });
  app.delete("/api/v1/uploads/:id", auth, async (req: Authed, res) => {
    await sessionOwner(req);
    await deps.uploads.cancel(String(req.params.id));
    res.status(204).end();
  });
  app.head("/api/v1/blobs/:digest", async (req, res) => {
    const digest = String(req.params.digest);
    const info = /^sha256:[0-9a-f]{64}$/.test(digest) ? await deps.blobs.stat(digest) : null;
    if (!info) res.status(404).end();
    else
      res
        .status(200)
        .set({ "content-length": String(info.size), "docker-content-digest": info.digest })
        .end();
  });

  // --- products and versions ------------------------------------------------------------------
  app.get("/api/v1/products", async (_req, res) => {
    const products = await deps.catalog.listProducts();
    res.json({ products: products.map(productJson) });
  });
  app.get("/api/v1/products/:os/:release/:arch/:variant", async (req, res) => {
    const key = productKey(req);
    const p = await deps.catalog.getProduct(key);
    if (!p) throw new LxhubError("NOT_FOUND", `no product ${productTarget(key)}`);
    const versions = await deps.catalog.listVersions(p.id);
    res.json({ ...productJson(p), versions: versions.map((v) => versionJson(toView(p, v))) });
  });
  app.get("/api/v1/products/:os/:release/:arch/:variant/versions/:version", async (req, res) => {
    const key = productKey(req);
    const p = await deps.catalog.getProduct(key);
    const v = p ? await deps.catalog.getVersion(p.id, String(req.params.version)) : null;
    if (!p || !v || v.deletedAt)
      throw new LxhubError("NOT_FOUND", `no version ${req.params.version} of ${productTarget(key)}`);
    res.json(versionJson(toView(p, v)));
  });
  app.put(
    "/api/v1/products/:os/:release/:arch/:variant/versions/:version",
    auth,
    json,
    async (req: Authed, res) => {
      const key = productKey(req);
      authorize(who(req), "push", productTarget(key));
      const body = parseBody(versionBody, req.body);
      const r = await deps.publish.putVersion(who(req), key, String(req.params.version), {
        files: body.files.map((f) => ({
          name: f.name,
          ftype: f.ftype,
          digest: f.digest,
          deltaBase: f.delta_base,
        })),
        aliases: body.aliases,
        releaseTitle: body.release_title,
        requirements: body.requirements,
      });
      res.status(r.created ? 201 : 200).json(versionJson(r.version));
    },
  );
  app.delete(
    "/api/v1/products/:os/:release/:arch/:variant/versions/:version",
    auth,
    async (req: Authed, res) => {
      const key = productKey(req);
      authorize(who(req), "delete", productTarget(key));
      await deps.publish.deleteVersion(who(req), key, String(req.params.version));
      res.status(204).end();
    },
  );

  // --- tokens ---------------------------------------------------------------------------------
  app.post("/api/v1/tokens", auth, json, async (req: Authed, res) => {
    authorize(who(req), "admin", "*");
    const body = parseBody(tokenBody, req.body);
    const t = await deps.tokens.create({
      scopes: body.scopes,
      ttlSeconds: parseDuration(body.ttl ?? "30d"),
      subject: body.subject,
      actor: who(req).subject,
    });
    res.status(201).json({ id: t.id, token: t.token, expires_at: t.expiresAt });
  });
  app.delete("/api/v1/tokens/:id", auth, async (req: Authed, res) => {
    authorize(who(req), "admin", "*");
    await deps.tokens.revoke(String(req.params.id), who(req).subject);
    res.status(204).end();
  });

  app.use((req: Request) => {
    throw new LxhubError("NOT_FOUND", `no route ${req.method} ${req.path}`);
  });
  // The one boundary where errors become responses.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number };
    let mapped = err;
    if (e?.type === "entity.parse.failed")
      mapped = new LxhubError("MALFORMED_JSON", "the request body is not valid JSON");
    else if (e?.type === "entity.too.large")
      mapped = new LxhubError("TOO_LARGE", "the JSON body is larger than 1 MB");
    const { status, body } = renderError(mapped);
    if (status === 500) deps.onInternalError?.(err);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(status).json(body);
  });
  return app;
}

function productJson(p: ProductRecord): Record<string, unknown> {
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

function versionJson(v: ReturnType<typeof toView>): Record<string, unknown> {
  return {
    product: `${v.product.os}:${v.product.release}:${v.product.arch}:${v.product.variant}`,
    version: v.version,
    created_at: v.createdAt,
    files: v.files,
    fingerprints: v.fingerprints,
  };
}
