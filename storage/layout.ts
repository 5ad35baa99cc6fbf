import path from "node:path";

/**
 * The whole storage layout of a data folder, built by this one function.
 *
 * ```
 * <data>/
 *   catalog.sqlite                      SQLite catalog (default catalog backend)
 *   blobs/sha256/<aa>/<64 hex>          committed blobs, content-addressed, immutable (mode 0444)
 *   uploads/<id>                        bytes of open upload sessions (two-phase: never read as blobs)
 *   tmp/<host>-<pid>-<random>/          one process's scratch for whole-stream puts; removed when
 *                                       that process is gone (or untouched for a day)
 *   keys/signing/<kid>.jwk              Ed25519 private keys of the index signer (mode 0600)
 *   keys/token-secret                   HMAC secret for API tokens (mode 0600)
 *   keys/openpgp-key.asc                OpenPGP private key of the .sjson/.json.gpg signatures
 *                                       (armored, mode 0600; unless given by --openpgp-key)
 *   tls/server.crt, tls/server.key      self-signed certificate made on first start (unless given)
 *   upstream/serials/<sha256 of URL>.json  pull-through cache: highest statement serial accepted
 *                                       from the upstream (anti-replay, client/remotes.ts SerialStore)
 *   mirrors/cache/blobs/sha256/<hex>    scheduled mirrors' downloads (verified, or .part while
 *                                       downloading), removed once the registry holds them
 *   mirrors/state/<name>/serials/       the highest statement serial each mirror accepted
 * ```
 *
 * Object stores (storage/blobs/s3.ts) use the same tree below a key prefix in a bucket, with an
 * upload session spread over several objects so that any replica can continue it:
 *
 * ```
 * <prefix>blobs/sha256/<aa>/<64 hex>    committed blobs (server-side copies of verified bytes)
 * <prefix>uploads/<id>/state.json       session state: offset, multipart UploadId and its parts,
 *                                       tail segments, saved sha256 state (the commit point)
 * <prefix>uploads/<id>/tail-<n>         bytes past the last full part (each < part size)
 * <prefix>uploads/<id>/data             the multipart upload's key (whole only during commit)
 * <prefix>tmp/put-<random>              a whole-stream put, before its digest is known
 * ```
 */
export type StorageKey =
  | { kind: "catalog" }
  | { kind: "blob"; hex: string }
  | { kind: "blobsRoot" }
  | { kind: "upload"; id: string }
  | { kind: "uploadsRoot" }
  | { kind: "tmp" }
  | { kind: "tmpEntry"; name: string }
  | { kind: "uploadState"; id: string }
  | { kind: "uploadTail"; id: string; n: number }
  | { kind: "uploadData"; id: string }
  | { kind: "signingKeys" }
  | { kind: "tokenSecret" }
  | { kind: "openpgpKey" }
  | { kind: "tlsCert" }
  | { kind: "tlsKey" }
  | { kind: "upstreamState" }
  | { kind: "mirrorCache" }
  | { kind: "mirrorState"; name: string };

const HEX_RE = /^[0-9a-f]{64}$/;
/** Upload session ids (also checked at the API boundary). */
export const UPLOAD_ID_RE = /^[A-Za-z0-9_-]{8,64}$/;
/** Names of scheduled mirrors (also checked where the mirrors file is read). */
export const MIRROR_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/** Names directly under `tmp/` (per-process folders, temporary objects). */
const TMP_NAME_RE = /^[A-Za-z0-9._-]{1,200}$/;

function uploadKey(id: string): string {
  if (!UPLOAD_ID_RE.test(id)) throw new TypeError(`bad upload id ${JSON.stringify(id)}`);
  return `uploads/${id}`;
}

/** Relative key (POSIX separators) of one storage object. */
export function storageKey(key: StorageKey): string {
  switch (key.kind) {
    case "catalog":
      return "catalog.sqlite";
    case "blobsRoot":
      return "blobs/sha256";
    case "blob":
      if (!HEX_RE.test(key.hex)) throw new TypeError(`bad blob hex ${JSON.stringify(key.hex)}`);
      return `blobs/sha256/${key.hex.slice(0, 2)}/${key.hex}`;
    case "uploadsRoot":
      return "uploads";
    case "upload":
      return uploadKey(key.id);
    case "uploadState":
      return `${uploadKey(key.id)}/state.json`;
    case "uploadTail":
      if (!Number.isSafeInteger(key.n) || key.n < 1) throw new TypeError(`bad tail number ${key.n}`);
      return `${uploadKey(key.id)}/tail-${key.n}`;
    case "uploadData":
      return `${uploadKey(key.id)}/data`;
    case "tmp":
      return "tmp";
    case "tmpEntry":
      if (!TMP_NAME_RE.test(key.name) || key.name === "." || key.name === "..") {
        throw new TypeError(`bad temporary name ${JSON.stringify(key.name)}`);
      }
      return `tmp/${key.name}`;
    case "signingKeys":
      return "keys/signing";
    case "tokenSecret":
      return "keys/token-secret";
    case "openpgpKey":
      return "keys/openpgp-key.asc";
    case "tlsCert":
      return "tls/server.crt";
    case "tlsKey":
      return "tls/server.key";
    case "upstreamState":
      return "upstream";
    case "mirrorCache":
      return "mirrors/cache";
    case "mirrorState":
      if (!MIRROR_NAME_RE.test(key.name)) throw new TypeError(`bad mirror name ${JSON.stringify(key.name)}`);
      return `mirrors/state/${key.name}`;
  }
}

/** Absolute path of a storage object inside a data folder. */
export function dataPath(dataDir: string, key: StorageKey): string {
  return path.join(dataDir, ...storageKey(key).split("/"));
}
