import type { ProductKey } from "../storage/catalog/catalog.js";

/** Human-readable path of a file of a version, relative to the mirror root (simplestreams.md §1.1). */
export function imageFilePath(p: ProductKey, version: string, file: string): string {
  return ["images", p.os, p.release, p.arch, p.variant, version, file].join("/");
}

/** `os/release/arch/variant`: what token scope patterns are matched against. */
export function productTarget(p: ProductKey): string {
  return `${p.os}/${p.release}/${p.arch}/${p.variant}`;
}

/** Product key as simplestreams writes it. */
export function productId(p: ProductKey): string {
  return `${p.os}:${p.release}:${p.arch}:${p.variant}`;
}
