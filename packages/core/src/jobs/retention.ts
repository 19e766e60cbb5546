import type { ExportMetrics } from '../metrics.js';
import type { EmitEvent } from '../types.js';
import type { ExportStorage } from './export-storage.js';
import { type Job, type JobRecord, toPublicJob } from './job.js';
import { eventContext } from './job-runner.js';
import type { JobStore } from './job-store.js';

export interface RetentionOptions {
  /** Delete finished files older than this. @default undefined (keep) */
  maxAgeMs?: number;
  /** Delete the oldest finished files while all of them together exceed this. @default undefined */
  maxTotalBytes?: number;
  /** How often the sweeper runs. @default 60_000 */
  sweepIntervalMs?: number;
  /** How long records of expired, failed and cancelled jobs are kept (then the job is a 404). @default 7 days */
  keepManifestsMs?: number;
}

export interface RetentionContext {
  store: JobStore;
  storage: ExportStorage;
  metrics: ExportMetrics | undefined;
  now: () => number;
  emit: EmitEvent;
  onStoredBytes: (delta: number) => void;
  /** The job as clients see it (with live state where the job runs here). */
  view: (record: JobRecord) => Job;
}

const DEFAULT_KEEP_MANIFESTS_MS = 7 * 24 * 3600_000;

/**
 * One retention pass: deletes files past `maxAgeMs`, then the oldest while the total exceeds
 * `maxTotalBytes`, marking their jobs `expired`; forgets expired, failed and cancelled jobs
 * after `keepManifestsMs`. Passes must not overlap (the caller chains them).
 */
export async function sweep(
  options: RetentionOptions,
  context: RetentionContext,
): Promise<{ expired: number; forgotten: number }> {
  const { maxAgeMs, maxTotalBytes, keepManifestsMs = DEFAULT_KEEP_MANIFESTS_MS } = options;
  const { store } = context;
  const now = context.now();
  const records: JobRecord[] = [];
  for await (const record of store.all()) records.push(record);
  let expired = 0;
  let forgotten = 0;
  const succeeded = records
    .filter((record) => record.status === 'succeeded' && record.file)
    .sort((a, b) => Date.parse(a.finishedAt ?? a.createdAt) - Date.parse(b.finishedAt ?? b.createdAt));
  let total = succeeded.reduce((sum, record) => sum + (record.file?.bytes ?? 0), 0);
  for (const record of succeeded) {
    const age = now - Date.parse(record.finishedAt ?? record.createdAt);
    const reason =
      maxAgeMs !== undefined && age >= maxAgeMs
        ? 'age'
        : maxTotalBytes !== undefined && total > maxTotalBytes
          ? 'size'
          : undefined;
    if (!reason) continue;
    total -= record.file?.bytes ?? 0;
    // A delete may have got here first.
    const current = await store.get(record.id);
    if (current?.status !== 'succeeded') continue;
    await expire(current, reason, context);
    expired++;
  }
  for (const record of records) {
    if (record.status !== 'expired' && record.status !== 'failed' && record.status !== 'cancelled') continue;
    // An expired job's record is kept for keepManifestsMs from when it expired, not from when it
    // finished, so that clients polling it see `expired` rather than a 404.
    const since =
      (record.status === 'expired' ? record.expiresAt : null) ?? record.finishedAt ?? record.createdAt;
    if (now - Date.parse(since) < keepManifestsMs) continue;
    await store.remove(record.id);
    forgotten++;
  }
  return { expired, forgotten };
}

/** Removes a succeeded job's file and marks the job expired. */
export async function expire(
  record: JobRecord,
  reason: 'age' | 'size' | 'missing' | 'corrupt',
  context: Omit<RetentionContext, 'view'> & { view?: (record: JobRecord) => Job },
): Promise<void> {
  const file = record.file;
  record.status = 'expired';
  record.expiresAt = new Date(context.now()).toISOString();
  if (file) {
    await context.storage.remove(file.name);
    if (reason !== 'missing' && reason !== 'corrupt') context.onStoredBytes(-file.bytes);
  }
  await context.store.save(record);
  if (reason === 'age' || reason === 'size') {
    context.metrics?.retentionDeletions.inc({ reason });
    context.emit(
      'job:expired',
      context.view ? context.view(record) : toPublicJob(record, null),
      eventContext(record),
    );
  }
}
