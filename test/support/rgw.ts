/**
 * A throwaway single-node Ceph cluster with a RADOS Gateway on loopback, for tests that need a
 * real S3 server. One per test process, started on first use (`ensureRgw()`), stopped when the
 * process exits (or earlier through `stopRgw()` in an `after()` hook).
 *
 * One monitor, one memstore OSD (a 2 GiB in-memory device: nothing touches the disk but logs),
 * no cephx, size-1 pools, and radosgw's beast frontend on a free loopback port. The daemons fork
 * into the background and write pid files under `<dir>/run`, which is how they are stopped.
 * Needs the Debian packages ceph-mon, ceph-osd, radosgw, ceph-common and uuid-runtime; runs as
 * root (as CI does) or as a user that can write to os.tmpdir().
 *
 * Start-up, measured on a 2-core Debian 12 machine as root (Ceph 16.2.15): 12.3-14.4 s from
 * nothing to an answering gateway with a user — monitor 0.3 s, `osd new` 0.3 s, OSD mkfs and
 * start 2.0 s, radosgw until it answers HTTP 9.2-9.3 s, user 0.4-0.5 s — and the first bucket
 * another 2.3-2.7 s (its pools are made then). `restartGateway()` takes 1.9-2.5 s.
 * `LXHUB_RGW_TIMING=1` prints the phases; `LXHUB_RGW_WAIT_MS` changes how long radosgw may take
 * to answer (default 120 s).
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";

import { run } from "./process.js";

export interface Rgw {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Stop radosgw (SIGTERM, then SIGKILL) and start it again on the same port; resolves when it answers. */
  restartGateway(): Promise<void>;
  /** Stop radosgw only; the cluster keeps running. */
  stopGateway(): Promise<void>;
  /** Start radosgw again after `stopGateway()`; resolves when it answers. */
  startGateway(): Promise<void>;
}

const ACCESS_KEY = "LXHUBTESTKEY";
const SECRET_KEY = "lxhub-test-secret-key-not-a-secret";
/** The memstore device: enough for the tests' blobs, small enough for a CI machine. */
const DEVICE_BYTES = 2 * 1024 * 1024 * 1024;
const DAEMONS = ["mon.a", "osd.0", "client.rgw"] as const;

let started: Promise<Rgw> | null = null;
let clusterDir: string | null = null;

/** The process's gateway, started on first call. */
export function ensureRgw(): Promise<Rgw> {
  started ??= startCluster().catch((err: unknown) => {
    stopAllSync();
    started = null;
    throw err;
  });
  return started;
}

/** Stop every daemon and remove the cluster's folder (also done at process exit). */
export async function stopRgw(): Promise<void> {
  if (started === null) return;
  await started.catch(() => undefined);
  stopAllSync();
  started = null;
}

/** A fresh bucket with a unique name, made through the SDK. */
export async function createTestBucket(rgw: Rgw, label = "t"): Promise<string> {
  const bucket = `lxhub-${label}-${randomUUID().slice(0, 8)}`.toLowerCase();
  const client = s3ClientFor(rgw);
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
  return bucket;
}

export function s3ClientFor(rgw: Rgw): S3Client {
  return new S3Client({
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

process.on("exit", () => stopAllSync());

/** Milliseconds of each start-up phase of this process's cluster (printed with LXHUB_RGW_TIMING=1). */
export const startupTimings: Record<string, number> = {};

async function startCluster(): Promise<Rgw> {
  for (let i = 0; !onPath("radosgw"); i++) {
    // The packages may still be installing when the tests start.
    if (i >= 600)
      throw new Error("radosgw is not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)");
    await sleep(1000);
  }
  let mark = Date.now();
  const phase = (name: string): void => {
    startupTimings[name] = Date.now() - mark;
    mark = Date.now();
  };
  const dir = await mkdtemp(path.join(os.tmpdir(), "lxhub-ceph-"));
  clusterDir = dir;
  for (const sub of ["mon.a", "osd.0", "run", "log", "rgw"]) await mkdir(path.join(dir, sub));
  const ports = await freePorts(3);
  const [monV2, monV1, rgwPort] = [ports[0] ?? 0, ports[1] ?? 0, ports[2] ?? 0];
  const fsid = randomUUID();
  const monAddr = `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`;
  const conf = path.join(dir, "ceph.conf");
  await writeFile(conf, cephConf(dir, fsid, monAddr, rgwPort));
  const c = ["-c", conf];

  await must("ceph-authtool", [
    "--create-keyring",
    path.join(dir, "keyring"),
    "--gen-key",
    "-n",
    "mon.",
    "--cap",
    "mon",
    "allow *",
  ]);
  await must("monmaptool", ["--create", "--fsid", fsid, "--addv", "a", monAddr, path.join(dir, "monmap")]);
  const monmap = path.join(dir, "monmap");
  await must("ceph-mon", [
    ...c,
    "--mkfs",
    "-i",
    "a",
    "--monmap",
    monmap,
    "--keyring",
    path.join(dir, "keyring"),
  ]);
  await must("ceph-mon", [...c, "-i", "a"]);
  phase("monitor");
  const osdUuid = randomUUID();
  await must("ceph", [...c, "--connect-timeout", "60", "osd", "new", osdUuid], 90_000);
  phase("osd new");
  await must("ceph-osd", [...c, "-i", "0", "--mkfs", "--osd-uuid", osdUuid]);
  await must("ceph-osd", [...c, "-i", "0"]);
  phase("osd");

  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const startGateway = async (): Promise<void> => {
    await must("radosgw", [...c, "-n", "client.rgw", "--no-mon-config"]);
    try {
      await waitForHttp(endpoint, Number(process.env.LXHUB_RGW_WAIT_MS ?? 120_000));
    } catch (err) {
      throw new Error(`${String(err)}\n${logTail(dir, "client.rgw")}\n${logTail(dir, "osd.0")}`);
    }
  };
  const stopGateway = async (): Promise<void> => {
    await stopDaemon(dir, "client.rgw");
  };
  await startGateway();
  phase("radosgw");
  await must("radosgw-admin", [
    ...c,
    "user",
    "create",
    "--uid=lxhub-test",
    "--display-name=lxhub test",
    `--access-key=${ACCESS_KEY}`,
    `--secret-key=${SECRET_KEY}`,
  ]);
  phase("user");
  if (process.env.LXHUB_RGW_TIMING === "1")
    console.error(`radosgw start-up (ms): ${JSON.stringify(startupTimings)}`);
  return {
    endpoint,
    accessKeyId: ACCESS_KEY,
    secretAccessKey: SECRET_KEY,
    region: "us-east-1",
    stopGateway,
    startGateway,
    restartGateway: async () => {
      await stopGateway();
      await startGateway();
    },
  };
}

function cephConf(dir: string, fsid: string, monAddr: string, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = ${monAddr}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms bind ipv4 = true
ms bind ipv6 = false
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
public addr = 127.0.0.1
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = ${DEVICE_BYTES}
osd data = ${dir}/osd.$id
mon data = ${dir}/mon.$id
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
pid file = ${dir}/run/$name.pid
keyring = ${dir}/keyring
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw enable usage log = false
`;
}

async function must(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const r = await run(cmd, args, { timeoutMs });
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-2000)}`,
    );
  }
  return r.stdout;
}

/** Distinct free loopback ports: each is bound to port 0 and released (all held until the last is known). */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
      });
      servers.push(server);
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return;
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`${url} did not answer within ${timeoutMs} ms: ${String(err)}`);
      await sleep(200);
    }
  }
}

/** The last lines of a daemon's log, for failure messages. */
function logTail(dir: string, daemon: string): string {
  try {
    const lines = readFileSync(path.join(dir, "log", `${daemon}.log`), "utf8")
      .trimEnd()
      .split("\n");
    return `--- ${daemon}.log (last 30 lines) ---\n${lines.slice(-30).join("\n")}`;
  } catch {
    return `--- no ${daemon}.log ---`;
  }
}

function onPath(program: string): boolean {
  return (process.env.PATH ?? "/usr/bin:/bin")
    .split(path.delimiter)
    .some((d) => d !== "" && existsSync(path.join(d, program)));
}

function readPid(dir: string, daemon: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dir, "run", `${daemon}.pid`), "utf8").trim());
    return Number.isSafeInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, wait up to 10 s, then SIGKILL; resolves once the pid is gone. */
async function stopDaemon(dir: string, daemon: string): Promise<void> {
  const pid = readPid(dir, daemon);
  if (pid === null || !alive(pid)) return;
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
  if (alive(pid)) process.kill(pid, "SIGKILL");
  for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
}

/** Synchronous, for `process.on("exit")`: SIGKILL every daemon by its pid file, remove the folder. */
function stopAllSync(): void {
  const dir = clusterDir;
  if (dir === null) return;
  clusterDir = null;
  for (const daemon of DAEMONS) {
    const pid = readPid(dir, daemon);
    if (pid === null) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  // Give the kernel a moment to reap them before their files go (they are not our children).
  try {
    execFileSync("sleep", ["0.2"]);
  } catch {
    // no sleep binary: remove right away
  }
  rmSync(dir, { recursive: true, force: true });
}
