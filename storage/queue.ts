/**
 * FIFO queues by key, in this process: `run(key, fn)` starts `fn` once every earlier call with
 * the same key has settled. Used for one upload session's appends and commits in the blob
 * stores, and for the catalog's in-process locks.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release = (): void => {};
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Whether a call with `key` is running or waiting. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }
}
