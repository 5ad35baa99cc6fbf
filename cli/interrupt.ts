/**
 * Aborts on SIGINT/SIGTERM so that a command stops cleanly: staging directories are removed, and
 * an unfinished download is flushed to its `.part` in the cache, where the next run resumes it.
 */
export function interruptible(): { signal: AbortSignal; release: () => void } {
  const ac = new AbortController();
  const on = (sig: NodeJS.Signals): void =>
    ac.abort(
      new Error(`interrupted (${sig}); the unfinished download is kept in the cache and resumes next time`),
    );
  process.once("SIGINT", on);
  process.once("SIGTERM", on);
  return {
    signal: ac.signal,
    release: () => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
    },
  };
}
