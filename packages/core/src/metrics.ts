import { createRequire } from 'node:module';
import type { Counter, Gauge, Histogram, Metric, Registry } from 'prom-client';

type PromClient = typeof import('prom-client');

let promClient: PromClient | undefined;

/**
 * prom-client is an optional peer dependency: loaded on first use, so that the package loads
 * without it when metrics are off. Synchronous, as the manager registers metrics in its
 * constructor. `import.meta.url` is empty in the CJS build, where `__filename` is set instead.
 */
function loadPromClient(): PromClient {
  if (promClient) return promClient;
  const load = createRequire(import.meta.url ?? __filename);
  try {
    promClient = load('prom-client') as PromClient;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new Error(
      'Export metrics need the prom-client package, an optional peer dependency of @spark-export/core: install it (npm install prom-client), or pass metrics: false to the ExportManager',
      { cause: error },
    );
  }
  return promClient;
}

/** Histogram buckets for export durations: 100 ms to one hour. */
export const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** Histogram buckets for the time from a job event to its webhook's delivery, retries included. */
export const WEBHOOK_LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** Histogram buckets for time spent waiting for a slot. */
export const QUEUE_WAIT_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300];

export interface ExportMetricsOptions {
  /**
   * The registry to register on. Pass the host app's registry to serve everything from one
   * endpoint. Never the global registry unless you pass it yourself.
   * @default a new private `Registry`
   */
  registry?: Registry;
  /**
   * Prefix for every metric name, e.g. `myapp_` gives `myapp_export_jobs_started_total`.
   * @default ''
   */
  prefix?: string;
}

/** The outcome label of a finished export. */
export type ExportOutcome = 'succeeded' | 'failed' | 'cancelled';

/**
 * The export metrics. Counters for rows and bytes are updated per batch, never per row.
 * Label values only come from registered datasets and known formats, so a request for an
 * unknown dataset never creates a series.
 */
export interface ExportMetrics {
  readonly registry: Registry;
  readonly jobsStarted: Counter<'dataset' | 'format'>;
  readonly jobsCompleted: Counter<'dataset' | 'format' | 'outcome'>;
  readonly jobsRejected: Counter<'reason'>;
  readonly jobDuration: Histogram<'dataset' | 'format' | 'outcome'>;
  readonly queueWait: Histogram<string>;
  readonly inFlight: Gauge<string>;
  readonly queued: Gauge<string>;
  readonly concurrencyLimit: Gauge<string>;
  readonly rows: Counter<'dataset' | 'format'>;
  readonly bytes: Counter<'dataset' | 'format'>;
  readonly storageBytes: Gauge<string>;
  readonly retentionDeletions: Counter<'reason'>;
  /** Webhook attempts by outcome: `delivered`, `retry`, `failed` (no attempts left), `disabled` (410). */
  readonly webhookDeliveries: Counter<'outcome'>;
  readonly webhookDeliveryLatency: Histogram<string>;
}

/**
 * Registers the export metrics on a registry, or returns the ones already there (two managers
 * on one registry, or two test files, never throw "already registered"). It never collects
 * default process metrics; call prom-client's `collectDefaultMetrics` yourself if you want them.
 *
 * @throws {Error} naming prom-client when that optional peer dependency is not installed
 *
 * @example
 * ```ts
 * import { Registry } from 'prom-client';
 * const registry = new Registry();
 * const metrics = registerExportMetrics({ registry, prefix: 'myapp_' });
 * ```
 */
export function registerExportMetrics(options: ExportMetricsOptions = {}): ExportMetrics {
  const { Counter, Gauge, Histogram, Registry } = loadPromClient();
  const registry = options.registry ?? new Registry();
  const prefix = options.prefix ?? '';
  if (typeof prefix !== 'string' || !/^(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    throw new TypeError(
      `Expected metrics prefix to match [a-zA-Z_:][a-zA-Z0-9_:]*, got ${JSON.stringify(prefix)}`,
    );
  }

  function getOrCreate<M extends Metric<string>>(name: string, create: (name: string) => M): M {
    const fullName = prefix + name;
    const existing = registry.getSingleMetric(fullName);
    if (existing) return existing as M;
    return create(fullName);
  }

  const registers = [registry];
  return {
    registry,
    jobsStarted: getOrCreate(
      'export_jobs_started_total',
      (name) =>
        new Counter({
          name,
          help: 'Exports admitted (running or queued).',
          labelNames: ['dataset', 'format'],
          registers,
        }),
    ),
    jobsCompleted: getOrCreate(
      'export_jobs_completed_total',
      (name) =>
        new Counter({
          name,
          help: 'Exports finished, by outcome (succeeded, failed, cancelled).',
          labelNames: ['dataset', 'format', 'outcome'],
          registers,
        }),
    ),
    jobsRejected: getOrCreate(
      'export_jobs_rejected_total',
      (name) =>
        new Counter({
          name,
          help: 'Export requests turned away for lack of a slot, by reason.',
          labelNames: ['reason'],
          registers,
        }),
    ),
    jobDuration: getOrCreate(
      'export_job_duration_seconds',
      (name) =>
        new Histogram({
          name,
          help: 'Time from an export taking its slot to its end, by outcome.',
          labelNames: ['dataset', 'format', 'outcome'],
          buckets: DURATION_BUCKETS,
          registers,
        }),
    ),
    queueWait: getOrCreate(
      'export_queue_wait_seconds',
      (name) =>
        new Histogram({
          name,
          help: 'Time admitted exports waited for a slot.',
          buckets: QUEUE_WAIT_BUCKETS,
          registers,
        }),
    ),
    inFlight: getOrCreate(
      'export_jobs_in_flight',
      (name) => new Gauge({ name, help: 'Exports running right now.', registers }),
    ),
    queued: getOrCreate(
      'export_jobs_queued',
      (name) => new Gauge({ name, help: 'Exports waiting for a slot.', registers }),
    ),
    concurrencyLimit: getOrCreate(
      'export_concurrency_limit',
      (name) => new Gauge({ name, help: 'How many exports may run at once.', registers }),
    ),
    rows: getOrCreate(
      'export_rows_total',
      (name) => new Counter({ name, help: 'Rows exported.', labelNames: ['dataset', 'format'], registers }),
    ),
    bytes: getOrCreate(
      'export_bytes_total',
      (name) =>
        new Counter({
          name,
          help: 'Bytes written by exports (after compression).',
          labelNames: ['dataset', 'format'],
          registers,
        }),
    ),
    storageBytes: getOrCreate(
      'export_storage_bytes',
      (name) => new Gauge({ name, help: 'Bytes of finished export files on disk.', registers }),
    ),
    retentionDeletions: getOrCreate(
      'export_retention_deletions_total',
      (name) =>
        new Counter({
          name,
          help: 'Export files deleted by retention, by reason (age, size).',
          labelNames: ['reason'],
          registers,
        }),
    ),
    webhookDeliveries: getOrCreate(
      'export_webhook_deliveries_total',
      (name) =>
        new Counter({
          name,
          help: 'Webhook delivery attempts, by outcome (delivered, retry, failed, disabled).',
          labelNames: ['outcome'],
          registers,
        }),
    ),
    webhookDeliveryLatency: getOrCreate(
      'export_webhook_delivery_latency_seconds',
      (name) =>
        new Histogram({
          name,
          help: 'Time from a job event to the 2xx of its webhook, retries included.',
          buckets: WEBHOOK_LATENCY_BUCKETS,
          registers,
        }),
    ),
  };
}
