import type { Route } from "./route.js";

/**
 * The public read paths. server/read-path.ts serves them on plain `node:http` ahead of express
 * (decisions.md: express is 4–5× slower per request), so these rows carry no handler: they are
 * here so that `openapi.yaml` is checked against every path the server answers. Each answers GET
 * and HEAD; any other method gets 405 with `Allow: GET, HEAD`.
 */
const document = (path: string, operationId: string): Route => ({
  method: "GET",
  path,
  operationId,
  auth: "none",
  body: "none",
  // 404 until the first documents are built.
  answers: [200, 304],
  errors: ["NOT_FOUND"],
  headers: ["etag", "last-modified", "cache-control", "vary"],
});

const file = (path: string, operationId: string): Route => ({
  method: "GET",
  path,
  operationId,
  auth: "none",
  body: "none",
  answers: [200, 206, 302, 304, 416], // 302 only with --blobs-redirect on an S3 store
  errors: ["NOT_FOUND", "STORAGE_UNAVAILABLE", "INTERNAL"],
  headers: ["etag", "accept-ranges", "content-range", "cache-control"],
});

/** The web catalog (server/catalog-page.ts): HTML, with a Content-Security-Policy. */
const page = (path: string, operationId: string): Route => ({
  ...document(path, operationId),
  // 500 only if the generation's own products document could not be read back.
  errors: ["NOT_FOUND", "INTERNAL"],
  headers: [...document(path, operationId).headers, "content-security-policy", "x-content-type-options"],
});

/** The catalog page's stylesheet and script: always there. */
const asset = (path: string, operationId: string): Route => ({
  ...document(path, operationId),
  errors: [],
  headers: [...document(path, operationId).headers, "x-content-type-options"],
});

export const publicRoutes: readonly Route[] = [
  page("/", "getCatalogPage"),
  // `/images/` too: the read path ignores a trailing slash (openapi.yaml keeps paths without one).
  page("/images", "getCatalogPageImages"),
  asset("/catalog.css", "getCatalogStyle"),
  asset("/catalog.js", "getCatalogScript"),
  document("/streams/v1/index.json", "getIndex"),
  document("/streams/v1/images.json", "getProductsDocument"),
  document("/streams/v1/statement.jws", "getStatement"),
  document("/streams/v1/index.sjson", "getSignedIndex"),
  document("/streams/v1/images.sjson", "getSignedProductsDocument"),
  document("/streams/v1/index.json.gpg", "getIndexSignature"),
  document("/streams/v1/images.json.gpg", "getProductsDocumentSignature"),
  document("/streams/v1/signing-key.asc", "getOpenPgpKey"),
  document("/.well-known/lxhub/jwks.json", "getJwks"),
  document("/.well-known/lxhub/endorsements.json", "getEndorsements"),
  document("/meta/1.0/index-system", "getLxcIndexSystem"),
  document("/meta/1.0/index-user", "getLxcIndexUser"),
  {
    method: "GET",
    path: "/.well-known/lxhub/server.crt",
    operationId: "getServerCertificate",
    auth: "none",
    body: "none",
    answers: [200],
    errors: [],
    headers: [],
  },
  file("/images/:os/:release/:arch/:variant/:version/:file", "getImageFile"),
  file("/blobs/sha256/:hex", "getBlob"),
  {
    ...file("/upstream/images/:os/:release/:arch/:variant/:version/:file", "getUpstreamFile"),
    errors: ["NOT_FOUND", "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "STORAGE_UNAVAILABLE", "INTERNAL"],
  },
];
