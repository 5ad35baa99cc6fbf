/**
 * Counters of what this process's registry did, for the metrics (server/metrics.ts reads them
 * when scraped). Plain numbers bumped by the services: nothing on the read path, no locks.
 */
export class RegistryStats {
  /** Versions published (created), deleted, retired by retention. */
  published = 0;
  /** Documents built and signed (each publish, delete, delta, re-sign, rebuild). */
  indexBuilds = 0;
  indexBuildSeconds = 0;
  lastIndexBuildSeconds = 0;
  /** Bytes written into upload sessions, and sessions committed into blobs. */
  uploadBytes = 0;
  uploadCommits = 0;
  /** Deltas made and listed. */
  deltas = 0;
  /** Garbage collections finished, and what they freed. */
  gcRuns = 0;
  gcFreedBlobs = 0;
  gcFreedBytes = 0;
  lastGcAt: number | null = null;
}
