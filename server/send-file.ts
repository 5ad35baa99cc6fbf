import type { ServerResponse } from "node:http";
import { open } from "node:fs/promises";

/** Bytes per read: with two buffers a download holds 1 MiB, whatever the file size. */
const BUF = 512 * 1024;

/**
 * Stream bytes `start..end` (inclusive) of a local file into a response through two buffers that
 * are reused for the whole file: one is read into while the other is being written. Unlike a
 * read stream, which allocates a new buffer per chunk and leaves each one to the garbage
 * collector, memory stays at 1 MiB per download however many run at once (bench/run.sh step 6).
 * A buffer is refilled only after the write that used it has completed (a write's callback runs
 * once the socket took the bytes, or with an error when the client went away), so one read runs
 * ahead of the network and no more.
 */
export async function sendFileRange(
  file: string,
  res: ServerResponse,
  start: number,
  end: number,
): Promise<void> {
  const fh = await open(file, "r");
  const bufs = [Buffer.allocUnsafe(BUF), Buffer.allocUnsafe(BUF)];
  let closed = false;
  let onClose = (): void => undefined;
  // Settles when the client goes away, so a write whose callback never comes cannot hang us.
  const gone = new Promise<void>((resolve) => {
    onClose = () => {
      closed = true;
      resolve();
    };
  });
  res.once("close", onClose);
  try {
    let pos = start;
    let turn = 0;
    let previous: Promise<void> = Promise.resolve();
    while (pos <= end && !closed) {
      const buf = bufs[turn] as Buffer;
      turn ^= 1;
      const want = Math.min(BUF, end - pos + 1);
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead === 0) throw new Error(`${file} ended at ${pos}, before ${end + 1}`);
      // The write before this one used the other buffer; wait for it so that buffer is free next turn.
      await Promise.race([previous, gone]);
      if (closed) break;
      pos += bytesRead;
      const chunk = buf.subarray(0, bytesRead);
      previous = new Promise<void>((resolve, reject) => {
        res.write(chunk, (err) => (err ? reject(err) : resolve()));
      });
      // When the client is gone the race below settles on `gone`; this write's error is then moot.
      previous.catch(() => undefined);
    }
    await Promise.race([previous, gone]);
    if (!closed) res.end();
  } finally {
    res.off("close", onClose);
    await fh.close();
  }
}
