import type { Limiter } from './admission/limiter.js';
import type { Semaphore } from './admission/semaphore.js';
import { checkInteger, checkOptionalInteger } from './checks.js';
import type { Dataset, DatasetDefinition, defineDataset } from './dataset.js';
import { ValidationError } from './errors.js';
import { checkParquetOptions } from './formats/parquet.js';
import type { CsvOptions, ParquetOptions, XlsxOptions } from './formats/types.js';
import { checkXlsxOptions } from './formats/xlsx.js';
import type { ExportStorage } from './jobs/export-storage.js';
import type { FileJobStore } from './jobs/file-job-store.js';
import type { JobStore } from './jobs/job-store.js';
import type { LocalExportStorage } from './jobs/local-storage.js';
import type { RetentionOptions } from './jobs/retention.js';
import type { ExportMetrics, ExportMetricsOptions } from './metrics.js';
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
  /** Options of every XLSX export (checked here, a `TypeError` when wrong). */
  xlsx?: XlsxOptions;
  /** Options of every Parquet export, e.g. the row-group size (checked here, a `TypeError` when wrong). */
  parquet?: ParquetOptions;
  /** Metrics: a prom-client registry and prefix, ready metrics, or `false` for none. @default a private registry */
  metrics?: ExportMetricsOptions | ExportMetrics | false;
  retention?: RetentionOptions;
  /** Re-run jobs that were running or queued when the process died, instead of failing them. @default false */
  resumeInterrupted?: boolean;
  /** With `resumeInterrupted`: give up (INTERRUPTED) after this many starts. @default 3 */
  maxAttempts?: number;
  /** Milliseconds between `job:progress` events of one job. @default 250 */
  progressIntervalMs?: number;
  /** Clock in epoch milliseconds; injectable for tests. @default Date.now */
  now?: () => number;
  /** Random source in [0, 1) for retry-after jitter. @default Math.random */
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
  const retention = options.retention ?? {};
  checkOptionalInteger('retention.maxAgeMs', retention.maxAgeMs, { min: 1 });
  checkOptionalInteger('retention.maxTotalBytes', retention.maxTotalBytes);
  checkInteger('retention.sweepIntervalMs', retention.sweepIntervalMs ?? 60_000, { min: 1 });
  const maxQueued = checkInteger('maxQueued', options.maxQueued ?? 0);
  // A wrong default is the server's mistake, not a client's: a TypeError at construction, not a 422 per request.
  for (const check of [() => checkXlsxOptions(options.xlsx), () => checkParquetOptions(options.parquet)]) {
    try {
      check();
    } catch (error) {
      throw error instanceof ValidationError ? new TypeError(error.message) : error;
    }
  }
  return { batchSize, progressIntervalMs, maxQueued, retention };
}
