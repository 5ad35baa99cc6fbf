import type { OpenPgpSigner } from "../signing/openpgp.js";
import { detachedSignaturePath, sjsonBody, sjsonPath } from "../simplestreams/sjson.js";

/** The armored OpenPGP public key the `.sjson` and `.json.gpg` documents verify with. */
export const OPENPGP_KEY_PATH = "streams/v1/signing-key.asc";

/** Content types: a clear-signed message is text, not JSON; the others are RFC 3156's. */
const SJSON_TYPE = "text/plain; charset=utf-8";
const SIGNATURE_TYPE = "application/pgp-signature";
const KEY_TYPE = "application/pgp-keys";

/**
 * The OpenPGP documents of one generation, for the canonical simplestreams tools: for each JSON
 * document under `streams/` (the index and the products file), its clear-signed `.sjson` and its
 * detached `.json.gpg`, and the public key. Part of the generation like the documents they sign,
 * so every replica serves the same bytes.
 */
export async function openPgpDocuments(
  signer: OpenPgpSigner,
  docs: ReadonlyMap<string, Buffer>,
): Promise<Map<string, { body: Buffer; contentType: string }>> {
  const signed = await Promise.all(
    [...docs]
      .filter(([p]) => p.startsWith("streams/") && p.endsWith(".json"))
      .map(async ([p, body]) => {
        const [clear, detached] = await Promise.all([
          signer.clearSign(sjsonBody(body)),
          signer.detachSign(body),
        ]);
        return { p, clear, detached };
      }),
  );
  const out = new Map<string, { body: Buffer; contentType: string }>();
  for (const { p, clear, detached } of signed) {
    out.set(sjsonPath(p), { body: Buffer.from(clear), contentType: SJSON_TYPE });
    out.set(detachedSignaturePath(p), { body: Buffer.from(detached), contentType: SIGNATURE_TYPE });
  }
  out.set(OPENPGP_KEY_PATH, { body: Buffer.from(signer.publicKeyArmored), contentType: KEY_TYPE });
  return out;
}
