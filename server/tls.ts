import { createHash, webcrypto } from "node:crypto";
import { restrictMode } from "../signing/secret-files.js";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

export interface TlsMaterial {
  cert: string;
  key: string;
  certFile: string;
  /** sha256 of the DER certificate, lower-case hex (what `openssl x509 -fingerprint -sha256` shows, without colons). */
  fingerprint: string;
}

export function certFingerprint(pem: string): string {
  const b64 = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  return createHash("sha256").update(Buffer.from(b64, "base64")).digest("hex");
}

async function writeAtomic(file: string, data: string, mode: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  // A stale temp file would keep its own mode through writeFile: start from a new one.
  await rm(tmp, { force: true });
  await writeFile(tmp, data, { mode, flag: "wx" });
  await rename(tmp, file);
}

/**
 * The key lxhub made (kept in the data folder) is readable by its owner only: take away any wider
 * permission from it and its folder, which an older version or a hand may have left.
 */
async function restrictOwnKey(keyFile: string): Promise<void> {
  for (const [p, mode] of [
    [path.dirname(keyFile), 0o700],
    [keyFile, 0o600],
  ] as const) {
    await restrictMode(p, mode);
  }
}

/**
 * The certificate to serve: the given files, or a self-signed ECDSA P-256 certificate made on
 * first start and kept in the data folder. Its first DNS name is `localhost`; LXD takes the
 * first DNS SAN of a pinned certificate as the expected server name (simplestreams.md §1.2).
 */
export async function loadOrCreateTls(opts: {
  certFile: string;
  keyFile: string;
  generate: boolean;
  hostnames?: string[];
}): Promise<TlsMaterial> {
  try {
    const [cert, key] = await Promise.all([readFile(opts.certFile, "utf8"), readFile(opts.keyFile, "utf8")]);
    if (opts.generate) await restrictOwnKey(opts.keyFile);
    return { cert, key, certFile: opts.certFile, fingerprint: certFingerprint(cert) };
  } catch (err) {
    if (!opts.generate || (err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  // Loaded only when a certificate must be made: the library and its dependencies cost ~15 MB of RSS.
  await import("reflect-metadata"); // @peculiar/x509 needs the Reflect metadata API (tsyringe)
  const x509 = await import("@peculiar/x509");
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPair;
  const names = ["localhost", ...(opts.hostnames ?? [])];
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Date.now().toString(16),
    name: "CN=lxhub",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 10 * 365 * 86400_000),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...names.map((n) => ({ type: "dns" as const, value: n })),
        { type: "ip", value: "127.0.0.1" },
        { type: "ip", value: "::1" },
      ]),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
  const certPem = cert.toString("pem");
  await writeAtomic(opts.keyFile, keyPem + "\n", 0o600);
  await writeAtomic(opts.certFile, certPem + "\n", 0o644);
  return { cert: certPem, key: keyPem, certFile: opts.certFile, fingerprint: certFingerprint(certPem) };
}
