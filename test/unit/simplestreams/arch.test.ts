import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CANONICAL_ARCHES,
  canonicalArch,
  distroArch,
  hostArch,
  isKnownArch,
  personalities,
} from "../../../simplestreams/index.js";

test("distro-style and canonical spellings map to LXD's canonical names (§4.6)", () => {
  const cases: [string, string][] = [
    ["amd64", "x86_64"],
    ["x86_64", "x86_64"],
    ["generic_64", "x86_64"],
    ["arm64", "aarch64"],
    ["aarch64", "aarch64"],
    ["armhf", "armv7l"],
    ["armel", "armv6l"],
    ["i386", "i686"],
    ["386", "i686"],
    ["ppc64el", "ppc64le"],
    ["powerpc64", "ppc64"],
    ["ppc64", "ppc64"],
    ["s390x", "s390x"],
    ["riscv64", "riscv64"],
    ["mipsel", "mips"],
    ["mips64el", "mips64"],
  ];
  for (const [name, canonical] of cases) {
    assert.equal(canonicalArch(name), canonical, name);
    assert.equal(isKnownArch(name), true, name);
  }
});

test("names LXD 5.0.2 does not know are unknown (pitfall 9)", () => {
  for (const name of [
    "loong64",
    "loongarch64",
    "x64",
    "AMD64",
    "amd64v3",
    "x86_64_v2",
    "mipsle",
    "mips64le",
    "",
    "arm64 ",
  ]) {
    assert.equal(canonicalArch(name), null, name);
    assert.equal(isKnownArch(name), false, name);
  }
});

test("personalities follow LXD's table and accept aliases", () => {
  assert.deepEqual(personalities("x86_64"), ["i686"]);
  assert.deepEqual(personalities("amd64"), ["i686"]);
  assert.deepEqual(personalities("aarch64"), ["armv6l", "armv7l", "armv8l"]);
  assert.deepEqual(personalities("armv7l"), ["armv6l"]);
  assert.deepEqual(personalities("ppc64"), ["ppc"]);
  assert.deepEqual(personalities("ppc64le"), []);
  assert.deepEqual(personalities("s390x"), []);
  assert.deepEqual(personalities("loong64"), []);
});

test("distroArch gives the Debian name and maps back to the same canonical arch", () => {
  assert.equal(distroArch("x86_64"), "amd64");
  assert.equal(distroArch("aarch64"), "arm64");
  assert.equal(distroArch("armv7l"), "armhf");
  assert.equal(distroArch("i686"), "i386");
  assert.equal(distroArch("ppc64le"), "ppc64el");
  assert.equal(distroArch("amd64"), "amd64");
  assert.equal(distroArch("loong64"), null);
  assert.equal(CANONICAL_ARCHES.length, 14);
  for (const c of CANONICAL_ARCHES) {
    const d = distroArch(c);
    assert.ok(d !== null, c);
    assert.equal(canonicalArch(d), c, `${c} → ${d} must map back`);
  }
});

test("hostArch maps Node's process.arch to the canonical name", () => {
  assert.equal(hostArch("x64"), "x86_64");
  assert.equal(hostArch("arm64"), "aarch64");
  assert.equal(hostArch("ia32"), "i686");
  assert.equal(hostArch("arm", "LE", "7"), "armv7l");
  assert.equal(hostArch("arm", "LE", "6"), "armv6l");
  assert.equal(hostArch("ppc64", "LE"), "ppc64le");
  assert.equal(hostArch("ppc64", "BE"), "ppc64");
  assert.equal(hostArch("s390x"), "s390x");
  assert.equal(hostArch("riscv64"), "riscv64");
  assert.equal(hostArch("loong64"), null);
  assert.equal(hostArch("s390"), null);
  // This machine's own answer is a canonical name LXD knows.
  const here = hostArch();
  assert.ok(here === null || canonicalArch(here) === here);
});
