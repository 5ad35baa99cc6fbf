// Helper of bench/storage.sh (run with node; needs `npm run build` for dist/test/support/).
//
//   node bench/storage-services.mjs start
//     starts a throwaway PostgreSQL and a throwaway Ceph RADOS Gateway the way the tests do
//     (dist/test/support/postgres.js and rgw.js), makes a database and a bucket, prints ONE JSON
//     line {dbUrl, endpoint, region, accessKeyId, secretAccessKey, bucket, rgwDir} on stdout and
//     stays alive until SIGTERM/SIGINT or until its parent (the benchmark script) is gone; at
//     exit the support modules stop radosgw, the OSD, the monitor and PostgreSQL and remove
//     their folders.
//   node bench/storage-services.mjs presign METHOD BUCKET KEY [SECONDS]
//     prints a presigned URL (GET or PUT) for KEY, for curl to time the raw object store.
//   node bench/storage-services.mjs delete BUCKET KEY
//     deletes one object (the raw uploads, so the 2 GiB memstore OSD does not fill up).
//   node bench/storage-services.mjs multipart BUCKET KEY FILE PART_MIB IN_FLIGHT
//     uploads FILE with the SDK's multipart upload (@aws-sdk/lib-storage: parts of PART_MIB MiB,
//     IN_FLIGHT of them at a time) and prints the milliseconds it took (start-up not included).
//   node bench/storage-services.mjs proxy http|sdk BUCKET KEY
//     a bare node:http server on a free loopback port (printed as one line) that answers every
//     GET with the object, streamed from radosgw: `http` pipes a node:http GET of a presigned URL
//     into the response, `sdk` pipes the body of the SDK's GetObject (as lxhub's S3 store reads).
//     What proxying in Node costs without lxhub; stays alive as `start` does.
// The presign and delete commands take the endpoint from S3_ENDPOINT and the credentials from
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION.
import { createReadStream } from "node:fs";
import http from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setInterval } from "node:timers";

import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const [command, ...args] = process.argv.slice(2);

function client() {
  const endpoint = process.env.S3_ENDPOINT;
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
  if (!endpoint || !accessKeyId || !secretAccessKey) {
    throw new Error("set S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  return new S3Client({
    endpoint,
    region: process.env.AWS_REGION ?? "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

async function start() {
  const support = new URL("../dist/test/support/", import.meta.url);
  const { ensurePostgres, createDatabase } = await import(new URL("postgres.js", support).href);
  const { ensureRgw, createTestBucket } = await import(new URL("rgw.js", support).href);
  // Signals end the process through process.exit, so the modules' exit hooks stop the daemons.
  stayWhileParentLives();
  const t0 = Date.now();
  await ensurePostgres();
  const dbUrl = await createDatabase("bench");
  const t1 = Date.now();
  const rgw = await ensureRgw();
  const bucket = await createTestBucket(rgw, "bench");
  const t2 = Date.now();
  console.log(
    JSON.stringify({
      dbUrl,
      endpoint: rgw.endpoint,
      region: rgw.region,
      accessKeyId: rgw.accessKeyId,
      secretAccessKey: rgw.secretAccessKey,
      bucket,
      startMs: { postgres: t1 - t0, rgw: t2 - t1 },
    }),
  );
  // Stays alive: the parent watch keeps the event loop busy until a signal or the parent's exit.
}

async function presign([method, bucket, key, seconds = "3600"]) {
  if (!bucket || !key || (method !== "GET" && method !== "PUT")) {
    throw new Error("usage: presign GET|PUT BUCKET KEY [SECONDS]");
  }
  const s3 = client();
  try {
    const input = { Bucket: bucket, Key: key };
    const cmd = method === "GET" ? new GetObjectCommand(input) : new PutObjectCommand(input);
    console.log(await getSignedUrl(s3, cmd, { expiresIn: Number(seconds) }));
  } finally {
    s3.destroy();
  }
}

async function remove([bucket, key]) {
  if (!bucket || !key) throw new Error("usage: delete BUCKET KEY");
  const s3 = client();
  try {
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  } finally {
    s3.destroy();
  }
}

function stayWhileParentLives() {
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) process.once(signal, () => process.exit(0));
  const parent = process.ppid;
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      process.exit(0);
    }
  }, 1000);
}

async function proxy([how, bucket, key]) {
  if ((how !== "http" && how !== "sdk") || !bucket || !key) {
    throw new Error("usage: proxy http|sdk BUCKET KEY");
  }
  const s3 = client();
  const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: 3600 });
  const upstream = async () => {
    if (how === "sdk") {
      const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      if (!(res.Body instanceof Readable)) throw new Error("GetObject returned no Node.js stream");
      return { body: res.Body, length: res.ContentLength };
    }
    return new Promise((resolve, reject) => {
      http
        .get(url, (res) => {
          if (res.statusCode !== 200) reject(new Error(`radosgw answered ${res.statusCode}`));
          else resolve({ body: res, length: Number(res.headers["content-length"]) });
        })
        .on("error", reject);
    });
  };
  const server = http.createServer((req, res) => {
    upstream()
      .then(
        ({ body, length }) => {
          res.writeHead(200, { "content-type": "application/octet-stream", "content-length": length });
          return pipeline(body, res);
        },
        (err) => {
          res.writeHead(502).end(String(err));
        },
      )
      .catch(() => res.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  stayWhileParentLives();
  console.log(server.address().port);
}

async function multipart([bucket, key, file, partMib, inFlight]) {
  if (!bucket || !key || !file || !(Number(partMib) >= 5) || !(Number(inFlight) >= 1)) {
    throw new Error("usage: multipart BUCKET KEY FILE PART_MIB IN_FLIGHT (PART_MIB >= 5)");
  }
  const s3 = client();
  try {
    const t0 = process.hrtime.bigint();
    const upload = new Upload({
      client: s3,
      params: { Bucket: bucket, Key: key, Body: createReadStream(file) },
      partSize: Number(partMib) * 1024 * 1024,
      queueSize: Number(inFlight),
    });
    await upload.done();
    console.log(Number(process.hrtime.bigint() - t0) / 1e6);
  } finally {
    s3.destroy();
  }
}

const commands = {
  multipart: () => multipart(args),
  start: () => start(),
  presign: () => presign(args),
  delete: () => remove(args),
  proxy: () => proxy(args),
};
const run = commands[command ?? ""];
if (!run) {
  console.error(
    "usage: node bench/storage-services.mjs start | presign GET|PUT BUCKET KEY | delete BUCKET KEY | multipart BUCKET KEY FILE PART_MIB IN_FLIGHT | proxy http|sdk BUCKET KEY",
  );
  process.exit(2);
}
run().catch((err) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
