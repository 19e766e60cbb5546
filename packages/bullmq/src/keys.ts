/** The default prefix of every key this package writes. */
export const DEFAULT_PREFIX = 'spark-export:';

/**
 * Every key name in one place. Owners are written as JSON (`"user-1"`, or `null` for jobs
 * without an owner), which is self-delimiting: no two (owner, idempotency key) pairs share a
 * key, whatever characters they hold.
 */
export interface RedisKeys {
  /** The leases of the cluster-wide limit (a sorted set, kept by redis-semaphore). */
  readonly limiter: string;
  /** `<prefix>job:`, the part before a job id; job hashes are `<prefix>job:<id>`. */
  readonly jobPrefix: string;
  /** A SCAN pattern matching every job hash (and nothing else of ours). */
  readonly jobPattern: string;
  job(id: string): string;
  /** One owner's jobs, newest first (a sorted set). */
  ownerJobs(owner: string | null): string;
  /** The job id that an owner's idempotency key maps to (a string, set with NX). */
  idempotency(owner: string | null, key: string): string;
}

export function redisKeys(prefix: string): RedisKeys {
  const jobPrefix = `${prefix}job:`;
  return {
    limiter: `${prefix}limiter`,
    jobPrefix,
    jobPattern: `${escapeGlob(jobPrefix)}*`,
    job: (id) => `${jobPrefix}${id}`,
    ownerJobs: (owner) => `${prefix}owner:${JSON.stringify(owner)}:jobs`,
    idempotency: (owner, key) => `${prefix}owner:${JSON.stringify(owner)}:idempotency:${key}`,
  };
}

/** A prefix may hold glob characters (`{app}*`); SCAN must match them literally. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
