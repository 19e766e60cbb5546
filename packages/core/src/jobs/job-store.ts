import type { JobRecord, JobStatus } from './job.js';

/** What {@link JobStore.list} is asked for: one owner's jobs, newest first. */
export interface JobQuery {
  /** `null` for jobs made without an owner. */
  owner: string | null;
  status?: JobStatus | undefined;
  dataset?: string | undefined;
  /** At most this many records. */
  limit: number;
  /** Only jobs after this one in newest-first order (a page's last job). */
  after?: Pick<JobRecord, 'createdAt' | 'id'> | undefined;
}

/**
 * The seam for where job records live. The built-in {@link FileJobStore} keeps one manifest
 * file per job in the exports directory; a shared store (Redis) lets any replica answer for any
 * job. The store answers queries itself, so that nothing above it needs every job in memory.
 * Records go in and out as copies: changing one after `save()` changes nothing stored.
 */
export interface JobStore {
  /** Reads or connects once, before anything else is called. */
  open(): Promise<void>;
  get(id: string): Promise<JobRecord | undefined>;
  /**
   * Stores a new job, unless its owner already has a job with the same idempotency key: then
   * nothing is stored and that job comes back with `created: false`. Atomic per key.
   */
  create(record: JobRecord): Promise<{ record: JobRecord; created: boolean }>;
  /** Replaces the stored record; does nothing for a job that does not exist (removed). Writes of one job land in call order. */
  save(record: JobRecord): Promise<void>;
  remove(id: string): Promise<void>;
  findByIdempotencyKey(owner: string | null, key: string): Promise<JobRecord | undefined>;
  /** One page of a query, and whether more records match after it. */
  list(query: JobQuery): Promise<{ records: JobRecord[]; more: boolean }>;
  /** Every stored job, for recovery and retention. */
  all(): AsyncIterable<JobRecord>;
  /** Lets pending writes land. */
  close(): Promise<void>;
}

/** Newest first by `createdAt`, ties broken by id: the order of every job listing. */
export function newestFirst(
  a: Pick<JobRecord, 'createdAt' | 'id'>,
  b: Pick<JobRecord, 'createdAt' | 'id'>,
): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** True when `record` matches `query` (owner, status, dataset, after). For stores that filter in memory. */
export function matchesQuery(record: JobRecord, query: JobQuery): boolean {
  return (
    record.owner === query.owner &&
    (query.status === undefined || record.status === query.status) &&
    (query.dataset === undefined || record.dataset === query.dataset) &&
    (query.after === undefined || newestFirst(record, query.after) > 0)
  );
}
