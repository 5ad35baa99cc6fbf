import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface FixtureOptions {
  os?: string;
  release?: string;
  variant?: string;
  /** properties.architecture (distro-style); omitted when null. */
  distroArch?: string | null;
  /** Top-level architecture (canonical). */
  architecture?: string;
  /** Unix seconds; default 2024-01-01T00:00:00Z. */
  creationDate?: number;
  /** Size of the random file packed into rootfs.squashfs (the squashfs is a little larger). */
  rootPayload?: number;
}

/**
 * Writes a folder the way `distrobuilder build-lxd` leaves it: `lxd.tar.xz` (metadata.yaml +
 * templates/, made with tar and xz) and `rootfs.squashfs` (made with mksquashfs from a random file,
 * so it does not compress and has a predictable size).
 */
export function makeImageDir(dir: string, o: FixtureOptions = {}): void {
  mkdirSync(dir, { recursive: true });
  const work = path.join(dir, ".work");
  const meta = path.join(work, "meta");
  const root = path.join(work, "root");
  mkdirSync(path.join(meta, "templates"), { recursive: true });
  mkdirSync(path.join(root, "etc"), { recursive: true });
  const props = [
    `  os: ${o.os ?? "Testos"}`,
    `  release: "${o.release ?? "one"}"`,
    `  variant: ${o.variant ?? "default"}`,
    `  description: test image`,
  ];
  if (o.distroArch !== null) props.push(`  architecture: ${o.distroArch ?? "amd64"}`);
  writeFileSync(
    path.join(meta, "metadata.yaml"),
    [
      `architecture: ${o.architecture ?? "x86_64"}`,
      `creation_date: ${o.creationDate ?? 1704067200}`,
      "properties:",
      ...props,
      "templates:",
      "  /etc/hostname:",
      "    when: [create, copy]",
      "    template: hostname.tpl",
      "",
    ].join("\n"),
  );
  writeFileSync(path.join(meta, "templates", "hostname.tpl"), "{{ container.name }}\n");
  execFileSync("tar", ["-cJf", path.join(dir, "lxd.tar.xz"), "-C", meta, "metadata.yaml", "templates"]);
  writeFileSync(path.join(root, "etc", "payload"), randomBytes(o.rootPayload ?? 3 * 1024 * 1024 + 4321));
  execFileSync(
    "mksquashfs",
    [root, path.join(dir, "rootfs.squashfs"), "-noappend", "-quiet", "-no-progress"],
    {
      stdio: "ignore",
    },
  );
  rmSync(work, { recursive: true, force: true });
}
