import os from "node:os";

/**
 * Architecture names exactly as LXD 5.0.2 knows them (simplestreams.md §4.6,
 * `shared/osarch/architectures.go` at tag lxd-5.0.2).
 *
 * Deliberately the *upstream* 5.0.2 table: Debian's extra `mipsle`/`mips64le` aliases and newer
 * names (`loong64`, `loongarch64`, `amd64v3`, `x86_64_v2` …) are unknown here, because a product
 * using them is silently dropped by at least one client we serve (pitfall 9).
 */
interface ArchEntry {
  /** Other spellings accepted in a product's `arch`. */
  aliases: readonly string[];
  /** Canonical arches this one can run as a personality, in LXD's preference order. */
  personalities: readonly string[];
  /** Debian-style name (what linuxcontainers and Ubuntu publish as product `arch`). */
  distro: string;
}

const TABLE: Readonly<Record<string, ArchEntry>> = {
  i686: { aliases: ["i386", "i586", "386", "x86", "generic_32"], personalities: [], distro: "i386" },
  x86_64: { aliases: ["amd64", "generic_64"], personalities: ["i686"], distro: "amd64" },
  armv6l: { aliases: ["armel", "arm"], personalities: [], distro: "armel" },
  armv7l: {
    aliases: ["armhf", "armhfp", "armv7a_hardfp", "armv7", "armv7a_vfpv3_hardfp"],
    personalities: ["armv6l"],
    distro: "armhf",
  },
  // No Debian name exists for a 32-bit ARMv8 userland; LXD knows only the canonical spelling.
  armv8l: { aliases: [], personalities: ["armv6l", "armv7l"], distro: "armv8l" },
  aarch64: {
    aliases: ["arm64", "arm64_generic"],
    personalities: ["armv6l", "armv7l", "armv8l"],
    distro: "arm64",
  },
  ppc: { aliases: ["powerpc"], personalities: [], distro: "powerpc" },
  ppc64: { aliases: ["powerpc64", "ppc64"], personalities: ["ppc"], distro: "ppc64" },
  ppc64le: { aliases: ["ppc64el"], personalities: [], distro: "ppc64el" },
  s390x: { aliases: [], personalities: [], distro: "s390x" },
  mips: { aliases: ["mipsel"], personalities: [], distro: "mipsel" },
  mips64: { aliases: ["mips64el"], personalities: ["mips"], distro: "mips64el" },
  riscv32: { aliases: [], personalities: [], distro: "riscv32" },
  riscv64: { aliases: [], personalities: [], distro: "riscv64" },
};

const BY_NAME = new Map<string, string>();
for (const [canonical, entry] of Object.entries(TABLE)) {
  BY_NAME.set(canonical, canonical);
  for (const alias of entry.aliases) BY_NAME.set(alias, canonical);
}

/** Canonical names LXD 5.0.2 knows, e.g. `x86_64`, `aarch64`. */
export const CANONICAL_ARCHES: readonly string[] = Object.keys(TABLE);

/**
 * Canonical name for a product `arch` spelling (`amd64` → `x86_64`, `arm64` → `aarch64`,
 * `x86_64` → `x86_64`), or `null` when LXD 5.0.2 would drop the product. Case-sensitive, like LXD.
 */
export function canonicalArch(name: string): string | null {
  return BY_NAME.get(name) ?? null;
}

/** Whether LXD 5.0.2 accepts `name` as a product `arch` (§4.6, pitfall 9). */
export function isKnownArch(name: string): boolean {
  return BY_NAME.has(name);
}

/**
 * Arches a host of this (canonical or alias) arch can also run, in LXD's preference order
 * (§4.4: `x86_64` → `["i686"]`). Empty for an unknown name.
 */
export function personalities(arch: string): string[] {
  const canonical = canonicalArch(arch);
  return canonical === null ? [] : [...(TABLE[canonical]?.personalities ?? [])];
}

/**
 * Debian-style name for an arch (`x86_64` → `amd64`, `aarch64` → `arm64`, `ppc64le` → `ppc64el`),
 * the spelling to publish so medium aliases read `…/amd64`. Always maps back through
 * `canonicalArch`. `null` for an unknown name.
 */
export function distroArch(arch: string): string | null {
  const canonical = canonicalArch(arch);
  return canonical === null ? null : (TABLE[canonical]?.distro ?? null);
}

/**
 * Canonical arch of the machine running Node (what `uname -m` gives LXD), from `process.arch`,
 * or `null` where LXD 5.0.2 has no name for it (`loong64`, 31-bit `s390`).
 *
 * Node's `arm` does not say which ARM: v6 only when Node was built for it, v7 otherwise. Node's
 * `ppc64` covers both byte orders, so the endianness decides `ppc64` vs `ppc64le`.
 */
export function hostArch(
  nodeArch: string = process.arch,
  endianness: "BE" | "LE" = os.endianness(),
  armVersion: string | undefined = nodeArmVersion(),
): string | null {
  switch (nodeArch) {
    case "x64":
      return "x86_64";
    case "ia32":
      return "i686";
    case "arm64":
      return "aarch64";
    case "arm":
      return armVersion === "6" ? "armv6l" : "armv7l";
    case "ppc":
      return "ppc";
    case "ppc64":
      return endianness === "LE" ? "ppc64le" : "ppc64";
    case "s390x":
      return "s390x";
    case "mips":
    case "mipsel":
      return "mips";
    case "mips64":
    case "mips64el":
      return "mips64";
    case "riscv32":
      return "riscv32";
    case "riscv64":
      return "riscv64";
    default:
      return null;
  }
}

function nodeArmVersion(): string | undefined {
  // `process.config.variables` is typed loosely; arm_version exists only on ARM builds.
  const variables = process.config.variables as unknown as Record<string, unknown>;
  const v = variables["arm_version"];
  return typeof v === "string" || typeof v === "number" ? String(v) : undefined;
}
