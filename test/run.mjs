// Runs the compiled test files with node's test runner (which prints the closing summary).
// Usage: node test/run.mjs [unit|contract|integration|e2e|deploy ...]   (default: every suite)
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const root = "dist/test";
const suites = process.argv.slice(2);
const wanted = suites.length ? suites : ["unit", "contract", "integration", "e2e", "deploy"];

function collect(dir) {
  let out = [];
  let names = [];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(collect(p));
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const files = wanted.flatMap((s) => collect(join(root, s)));
if (files.length === 0) {
  console.error(`no test files under ${wanted.map((s) => join(root, s)).join(", ")}`);
  process.exit(1);
}
const args = ["--test", "--test-concurrency=1", "--test-reporter=spec", ...files];
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(r.status ?? 1);
