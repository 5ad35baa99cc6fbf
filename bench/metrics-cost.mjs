// What counting one answer costs on the read path (server/metrics.ts observeRequest, which the
// access log's finish listener calls once per answer): N calls over realistic paths, in ns per call,
// median of 5 rounds. Run after `npm run build`: node bench/metrics-cost.mjs [N]
import { createMetrics } from "../dist/server/metrics.js";

const n = Number(process.argv[2] ?? 2_000_000);
const metrics = createMetrics({ mirrors: { list: async () => [] } });
const paths = [
  "/streams/v1/images.json",
  "/images/debian/12/amd64/default/20240101_0000/rootfs.squashfs",
  "/streams/v1/index.json",
  "/api/v1/uploads/abc123/",
  "//images/busybox/1.36/amd64/default/20240101_0000//rootfs.tar.xz",
];
const rounds = [];
for (let r = 0; r < 5; r++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) metrics.observeRequest(paths[i % paths.length], 200, 20_000);
  rounds.push(Number(process.hrtime.bigint() - t0) / n);
}
rounds.sort((a, b) => a - b);
const median = rounds[2];
console.log(
  `observeRequest: ${median.toFixed(1)} ns per answer (rounds: ${rounds.map((x) => x.toFixed(1)).join(", ")})`,
);
console.log(`share of one answer at 15,000 req/s (66.7 µs each): ${((median / 66_667) * 100).toFixed(3)} %`);
