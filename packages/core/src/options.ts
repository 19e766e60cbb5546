import type { Limiter } from './admission/limiter.js';
import type { Semaphore } from './admission/semaphore.js';
import { checkInteger, checkOptionalInteger } from './checks.js';
import type { Dataset, DatasetDefinition, defineDataset } from './dataset.js';
import { describeValue, ValidationError } from './errors.js';
import { checkDateFormat, type DateFormat, normalizeTimeZone } from './formats/dates.js';
import { checkParquetOptions } from './formats/parquet.js';
import type { CsvOptions, ParquetOptions, XlsxOptions } from './formats/types.js';
import { checkXlsxOptions } from './formats/xlsx.js';
import type { ExportStorage } from './jobs/export-storage.js';
import type { FileJobStore } from './jobs/file-job-store.js';
import type { JobEventFeed } from './jobs/job-events.js';
import type { JobQueue } from './jobs/job-queue.js';
import type { JobStore } from './jobs/job-store.js';
import type { LocalExportStorage } from './jobs/local-storage.js';
import type { RetentionOptions } from './jobs/retention.js';
import type { ExportMetrics, ExportMetricsOptions } from './metrics.js';
import type { WebhookOptions } from './notifications/webhook-options.js';
import { checkTimeLimits, type ExportTimeLimits } from './pipeline/time-limits.js';

/** Options of the `ExportManager`. */
export interface ExportManagerOptions extends ExportTimeLimits {
  /** Datasets by name, or defined with {@link defineDataset}. More can be added with `defineDataset`. */
  datasets?: Record<string, DatasetDefinition> | readonly Dataset[];
  /** Directory of job files and manifests. Jobs need it (or `store` and `storage`); `stream()` works without. */
  directory?: string;
  /** Where job records live. @default a {@link FileJobStore} in `directory` */
  store?: JobStore;
  /** Where export files live. @default a {@link LocalExportStorage} in `directory` */
  storage?: ExportStorage;
  /**
   * Where and when jobs run. A shared queue (`BullJobQueue` of `@spark-export/bullmq`) runs
   * any replica's jobs on any replica and owns recovery of jobs whose process died: the
   * manager's start-up recovery does not run then. Needs `store` and `storage` (shared ones).
   * @default jobs run in this process, as soon as admission lets them
   */
  jobQueue?: JobQueue;
  /** Hands out export slots; a shared one caps exports across processes. @default a {@link Semaphore} of `maxConcurrent` */
  limiter?: Limiter;
  /** Exports running at once, streams and jobs together (ignored with `limiter`). @default 5 */
  maxConcurrent?: number;
  /** Exports waiting for a slot. `0` rejects at once when every slot is busy. @default 0 */
  maxQueued?: number;
  /**
   * Longest wait in the queue; then a job fails with `QUEUE_TIMEOUT` and a stream is refused
   * (429). Streams never wait longer than 30 s, so that a request never hangs without end.
   * @default undefined (jobs wait without limit; streams 30 s)
   */
  queueTimeoutMs?: number;
  /** Running plus queued exports one owner may have. @default undefined (no limit) */
  maxConcurrentPerOwner?: number;
  /** Rows pulled from a source at a time. @default 500 */
  batchSize?: number;
  /** Default CSV options of every export. */
  csv?: CsvOptions;
  /**
   * The IANA time zone of exports that do not ask for one (Dates and `type: 'date'` columns).
   * @default 'UTC'
   * @example
   * ```ts
   * new ExportManager({ timeZone: 'Europe/Berlin' });
   * ```
   */
  timeZone?: string;
  /** How exports that do not ask write dates: `'iso'`, `'iso-local'` or `'date'`. @default 'iso' */
  dateFormat?: DateFormat;
  /** Options of every XLSX export (checked here, a `TypeError` when wrong). */
  xlsx?: XlsxOptions;
  /** Options of every Parquet export, e.g. the row-group size (checked here, a `TypeError` when wrong). */
  parquet?: ParquetOptions;
  /** Metrics: a prom-client registry and prefix, ready metrics, or `false` for none. @default a private registry */
  metrics?: ExportMetricsOptions | ExportMetrics | false;
  retention?: RetentionOptions;
  /**
   * Signed webhooks (Standard Webhooks) to endpoints the operator configures, when jobs
   * succeed, fail, are cancelled or expire. Needs jobs, and `directory` or `webhooks.store`
   * for the delivery state.
   */
  webhooks?: WebhookOptions;
  /** Re-run jobs that were running or queued when the process died, instead of failing them. @default false */
  resumeInterrupted?: boolean;
  /** With `resumeInterrupted`: give up (INTERRUPTED) after this many starts. @default 3 */
  maxAttempts?: number;
  /**
   * Where job changes come from, for `GET /export/jobs/:id/events` and anything else that
   * follows jobs: a wake-up per change, after which the job is read from the store. A shared
   * backend (BullMQ `QueueEvents`) passes a feed that carries every replica's changes; the
   * manager closes it in `close()`.
   * @default a local feed of this manager's own `job:*` events
   */
  events?: JobEventFeed;
  /** Milliseconds between `job:progress` events of one job. @default 250 */
  progressIntervalMs?: number;
  /** Clock in epoch milliseconds; injectable for tests. @default Date.now */
  now?: () => number;
  /** Random source in [0, 1) for retry-after and webhook backoff jitter. @default Math.random */
  random?: () => number;
}

/** Checks the options (a `TypeError` naming the bad one) and resolves the defaults the manager wires with. */
export function checkManagerOptions(options: ExportManagerOptions): {
  batchSize: number;
  progressIntervalMs: number;
  maxQueued: number;
  retention: RetentionOptions;
} {
  const batchSize = checkInteger('batchSize', options.batchSize ?? 500, { min: 1 });
  const progressIntervalMs = checkInteger('progressIntervalMs', options.progressIntervalMs ?? 250);
  checkOptionalInteger('queueTimeoutMs', options.queueTimeoutMs, { min: 1 });
  checkOptionalInteger('maxConcurrentPerOwner', options.maxConcurrentPerOwner, { min: 1 });
  checkInteger('maxAttempts', options.maxAttempts ?? 3, { min: 1 });
  checkTimeLimits(options);
  if (options.events !== undefined && typeof options.events?.subscribe !== 'function') {
    throw new TypeError(
      `Expected events to be a JobEventFeed (an object with subscribe()), got ${describeValue(options.events)}`,
    );
  }
  const retention = options.retention ?? {};
  checkOptionalInteger('retention.maxAgeMs', retention.maxAgeMs, { min: 1 });
  checkOptionalInteger('retention.maxTotalBytes', retention.maxTotalBytes);
  checkInteger('retention.sweepIntervalMs', retention.sweepIntervalMs ?? 60_000, { min: 1 });
  const maxQueued = checkInteger('maxQueued', options.maxQueued ?? 0);
  // A bad default would fail every export; it is the operator's mistake, told at construction
  // (a TypeError, not a 422 per request).
  for (const check of [
    () => options.timeZone === undefined || normalizeTimeZone(options.timeZone),
    () => options.dateFormat === undefined || checkDateFormat(options.dateFormat),
    () => checkXlsxOptions(options.xlsx),
    () => checkParquetOptions(options.parquet),
  ]) {
    try {
      check();
    } catch (error) {
      throw error instanceof ValidationError ? new TypeError(error.message) : error;
    }
  }
  return { batchSize, progressIntervalMs, maxQueued, retention };
}
