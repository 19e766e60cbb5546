import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { Admission } from './admission/admission.js';
import { RetryAfterEstimator } from './admission/retry-after.js';
import { Semaphore } from './admission/semaphore.js';
import { checkInteger, describeValue } from './checks.js';
import type { Compression } from './compression.js';
import {
  type Dataset,
  type DatasetDefinition,
  defineDataset,
  type NoParams,
  type ParamSpecs,
} from './dataset.js';
import { type BackpressureError, CancelledError } from './errors.js';
import { FileJobStore } from './jobs/file-job-store.js';
import type { Job } from './jobs/job.js';
import { type JobEventFeed, localJobEventFeed } from './jobs/job-events.js';
import { JobRunner } from './jobs/job-runner.js';
import { JobService } from './jobs/job-service.js';
import { LocalExportStorage } from './jobs/local-storage.js';
import { type ExportMetrics, registerExportMetrics } from './metrics.js';
import { LocalWebhookDeliveryQueue } from './notifications/delivery-queue.js';
import { FileWebhookDeliveryStore } from './notifications/delivery-store.js';
import { WebhookNotifier } from './notifications/webhook-notifier.js';
import { checkWebhookOptions } from './notifications/webhook-options.js';
import { checkManagerOptions, type ExportManagerOptions } from './options.js';
import { StreamRunner } from './pipeline/stream-runner.js';
import { ExportTelemetry } from './pipeline/telemetry.js';
import { contentTypeOf, downloadName, type ExportRequest, type PreparedExport, prepare } from './request.js';
import type {
  CallerOptions,
  EmitEvent,
  ExportManagerEvents,
  ExportResult,
  JobFileInfo,
  ListOptions,
  OpenedExport,
  OpenOptions,
  StreamOptions,
} from './types.js';

export type { ExportManagerOptions } from './options.js';

const STREAM_QUEUE_TIMEOUT_MS = 30_000;
const interrupted = () =>
  new CancelledError('The export was interrupted by a shutdown', { code: 'INTERRUPTED' });

/**
 * The export engine's facade: datasets, admission (one limit for every export), metrics,
 * streamed exports and durable jobs. The work is done by the parts it wires together: the
 * admission, the stream and job runners, the job store and the export storage.
 *
 * @example
 * ```ts
 * const manager = new ExportManager({ directory: './exports', maxConcurrent: 5 });
 * manager.defineDataset('orders', { source: () => db.iterate('select * from orders') });
 * await manager.stream({ dataset: 'orders', format: 'csv' }, process.stdout, { end: false });
 * const job = await manager.start({ dataset: 'orders', format: 'ndjson', owner: 'user-1' });
 * ```
 */
export class ExportManager extends EventEmitter<ExportManagerEvents> {
  readonly metrics: ExportMetrics | undefined;
  /**
   * Job changes (`queued`, `started`, `progress`, `succeeded`...) as wake-ups: the `events`
   * option, or this manager's own `job:*` events. The events route of the HTTP API follows it.
   */
  readonly events: JobEventFeed;
  /** Resolves when stored jobs have been read and interrupted jobs recovered. */
  readonly ready: Promise<void>;

  readonly #datasets = new Map<string, Dataset>();
  readonly #options: ExportManagerOptions;
  readonly #now: () => number;
  readonly #admission: Admission;
  readonly #streams: StreamRunner;
  readonly #jobs: JobService | undefined;
  readonly #notifier: WebhookNotifier | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: ExportManagerOptions = {}) {
    super();
    this.#options = options;
    const now = options.now ?? Date.now;
    this.#now = now;
    const { batchSize, progressIntervalMs, maxQueued, retention } = checkManagerOptions(options);

    this.metrics =
      options.metrics === false
        ? undefined
        : isExportMetrics(options.metrics)
          ? options.metrics
          : registerExportMetrics(options.metrics ?? {});
    const estimator = new RetryAfterEstimator(options.random ? { random: options.random } : {});
    // Admission bounds the queue itself; the semaphore only hands out permits.
    const limiter =
      options.limiter ??
      new Semaphore({ limit: options.maxConcurrent ?? 5, maxQueued: Number.MAX_SAFE_INTEGER });
    this.metrics?.concurrencyLimit.inc(limiter.limit);
    // Every event passes the notifier first, so that webhooks do not depend on listeners
    // (removeAllListeners() must not turn them off).
    const emit = ((event: keyof ExportManagerEvents, ...args: unknown[]) => {
      this.#notifier?.observe(event, args);
      return (this.emit as (event: string, ...args: unknown[]) => boolean)(event, ...args);
    }) as EmitEvent;
    this.#admission = new Admission({
      limiter,
      estimator,
      maxQueued,
      maxConcurrentPerOwner: options.maxConcurrentPerOwner,
      metrics: this.metrics,
      now,
      onRejected: ({ reason, subject, error }) =>
        emit('rejected', { reason, dataset: subject.dataset, owner: subject.owner, error }),
    });
    const telemetry = new ExportTelemetry(this.metrics, estimator);
    this.#streams = new StreamRunner({
      admission: this.#admission,
      telemetry,
      batchSize,
      limits: options,
      queueTimeoutMs: Math.min(options.queueTimeoutMs ?? STREAM_QUEUE_TIMEOUT_MS, STREAM_QUEUE_TIMEOUT_MS),
      now,
      emit,
    });

    const datasets = options.datasets ?? {};
    const entries = Array.isArray(datasets)
      ? datasets.map((dataset: Dataset) => [dataset.name, dataset] as const)
      : Object.entries(datasets as Record<string, DatasetDefinition>);
    for (const [name, definition] of entries) this.defineDataset(name, definition);

    const warn = (message: string, cause?: unknown) => emit('warning', message, cause);
    const store =
      options.store ??
      (options.directory ? new FileJobStore(options.directory, { onWarning: warn }) : undefined);
    const storage =
      options.storage ?? (options.directory ? new LocalExportStorage(options.directory) : undefined);
    if ((store === undefined) !== (storage === undefined)) {
      throw new TypeError('Expected both store and storage for jobs (or a directory for both), got only one');
    }
    const { jobQueue } = options;
    if (jobQueue !== undefined) {
      if (typeof jobQueue?.enqueue !== 'function' || typeof jobQueue.open !== 'function') {
        throw new TypeError(
          `Expected jobQueue to be a JobQueue (open, enqueue, cancel, close), got ${describeValue(jobQueue)}`,
        );
      }
      if (!store || !storage) throw new TypeError('Expected store and storage (shared ones) with jobQueue');
    }
    if (store && storage) {
      this.#jobs = new JobService({
        store,
        storage,
        runner: new JobRunner({
          store,
          storage,
          telemetry,
          batchSize,
          limits: options,
          progressIntervalMs,
          maxAgeMs: retention.maxAgeMs,
          now,
          emit,
          onStoredBytes: (delta) => this.metrics?.storageBytes.inc(delta),
        }),
        queue: options.jobQueue,
        admission: this.#admission,
        metrics: this.metrics,
        queueTimeoutMs: options.queueTimeoutMs,
        retention,
        resumeInterrupted: options.resumeInterrupted === true,
        maxAttempts: options.maxAttempts ?? 3,
        now,
        emit,
        prepare: (request) => this.#prepare(request),
        hasDataset: (name) => this.#datasets.has(name),
      });
    }
    this.#notifier = this.#createNotifier(warn);
    this.events = options.events ?? localJobEventFeed(this);
    this.ready = this.#recover();
    // Callers see recovery errors through the methods that await `ready`; never unhandled.
    this.ready.catch(() => {});
  }

  /**
   * Adds a dataset; its `source` gets params typed from the declared `params`. Throws
   * `TypeError` on a bad definition or a duplicate name.
   */
  defineDataset<const P extends ParamSpecs = NoParams>(
    name: string,
    definition: DatasetDefinition<P>,
  ): Dataset {
    const dataset = defineDataset(name, definition);
    if (this.#datasets.has(dataset.name)) throw new TypeError(`Dataset "${dataset.name}" is already defined`);
    this.#datasets.set(dataset.name, dataset);
    return dataset;
  }

  /** The registered datasets, in registration order. */
  get datasets(): readonly Dataset[] {
    return [...this.#datasets.values()];
  }

  /** Exports running right now in this process (streams and jobs). */
  get inFlight(): number {
    return this.#admission.limiter.active;
  }

  /** Exports waiting for a slot in this process. */
  get queued(): number {
    return this.#admission.waiting;
  }

  /** How many exports may run at once. Raising it starts queued exports; lowering it never aborts any. */
  get limit(): number {
    return this.#admission.limiter.limit;
  }

  set limit(value: number) {
    const limiter = this.#admission.limiter;
    const before = limiter.limit;
    limiter.limit = value;
    this.metrics?.concurrencyLimit.inc(limiter.limit - before);
  }

  /** True once `close()` was called. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** True when jobs can be started: a directory, or a store and a storage, were configured. */
  get jobsEnabled(): boolean {
    return this.#jobs !== undefined;
  }

  /**
   * Exports straight into `destination` (an HTTP response, a file, stdout) under the
   * concurrency limit. Pulls from the source only as fast as the destination drains. On abort
   * or a destination error the source is closed and the slot freed.
   *
   * @throws {BackpressureError} no slot free (429) or shutting down (503)
   * @throws {ValidationError | NotFoundError} bad request, before anything is written
   */
  async stream(
    request: ExportRequest,
    destination: Writable,
    options: StreamOptions = {},
  ): Promise<ExportResult> {
    this.#refuseEarly(request);
    return this.#streams.stream(this.#prepare(request), destination, options);
  }

  /**
   * Like {@link stream}, but hands back a readable body once a slot is held, so that an HTTP
   * layer can answer 429 before sending any header. Destroying `body` aborts the export and
   * frees the slot.
   */
  async open(request: ExportRequest, options: OpenOptions = {}): Promise<OpenedExport> {
    this.#refuseEarly(request);
    return this.#streams.open(this.#prepare(request), options);
  }

  /**
   * Checks a request as {@link open} would, without taking a slot or running anything, and
   * tells the content type and file name its export would have (for an HTTP `HEAD`).
   *
   * @throws {ValidationError | NotFoundError} bad request
   */
  describe(request: ExportRequest): { contentType: string; filename: string; compression: Compression } {
    const prepared = this.#prepare(request);
    return {
      compression: prepared.compression,
      contentType: contentTypeOf(prepared),
      filename: downloadName(prepared.filename, prepared, this.#now()),
    };
  }

  /**
   * Starts an asynchronous job that writes the export into storage and returns at once with
   * the job (`running` or `queued`). A repeated `idempotencyKey` returns the first job.
   *
   * @throws {BackpressureError} every slot and queue place taken (429), owner limit (429), shutting down (503)
   * @throws {ValidationError | NotFoundError} bad request; 422 `IDEMPOTENCY_KEY_REUSED` for a key used with another request
   * @throws {WriteError} the job could not be stored (507 when the disk is full); no job exists then
   */
  async start(request: ExportRequest): Promise<Job> {
    const jobs = this.#requireJobs();
    const prepared = this.#prepare(request);
    await this.ready;
    return jobs.start(prepared);
  }

  /** The caller's job that was started with this idempotency key, if any (HTTP answers it with 200). */
  async findByIdempotencyKey(key: string, options: CallerOptions = {}): Promise<Job | undefined> {
    return (await this.#readyJobs()).findByIdempotencyKey(key, options);
  }

  /** Resolves with the job once it has finished (succeeded, failed, cancelled). */
  async wait(id: string, options: CallerOptions & { signal?: AbortSignal } = {}): Promise<Job> {
    return (await this.#readyJobs()).wait(id, options);
  }

  /** The job, or `NotFoundError` when it does not exist or belongs to another owner. */
  async get(id: string, options: CallerOptions = {}): Promise<Job> {
    const job = await (await this.#readyJobs()).get(id, options);
    // Read after the owner check of get(): another owner's job is a 404 before anything else.
    if (this.#notifier) job.notifications = await this.#notifier.deliveriesOf(job.id);
    return job;
  }

  /** The caller's jobs, newest first, paginated with an opaque cursor; filtered by status or dataset. */
  async list(options: ListOptions = {}): Promise<{ jobs: Job[]; nextCursor: string | null }> {
    return (await this.#readyJobs()).list(options);
  }

  /** Cancels a queued or running job: the source is aborted, the partial file removed, the slot freed. The job stays, `cancelled`. */
  async cancel(id: string, options: CallerOptions = {}): Promise<Job> {
    return (await this.#readyJobs()).cancel(id, options);
  }

  /** Cancels the job if needed, then removes its file and record. */
  async delete(id: string, options: CallerOptions = {}): Promise<void> {
    return (await this.#readyJobs()).delete(id, options);
  }

  /**
   * The file of a succeeded job, for downloads; only handed out when the job's record says
   * `succeeded` and the stored file has the size it says.
   *
   * @throws {NotFoundError} 404; {@link JobStateError} 409 `JOB_NOT_READY`, 410 `JOB_EXPIRED` or `JOB_FILE_CORRUPT`
   */
  async file(
    id: string,
    options: CallerOptions & { urlExpiresInSeconds?: number } = {},
  ): Promise<JobFileInfo> {
    return (await this.#readyJobs()).file(id, options);
  }

  /**
   * One retention pass: deletes files past `maxAgeMs`, then the oldest while the total exceeds
   * `maxTotalBytes`, marking their jobs `expired`; forgets expired, failed and cancelled jobs
   * after `keepManifestsMs`. Runs by itself on an unref'd timer; call it to force a pass.
   */
  async sweep(): Promise<{ expired: number; forgotten: number }> {
    await this.ready;
    await this.#notifier?.prune();
    return this.#jobs ? this.#jobs.sweep() : { expired: 0, forgotten: 0 };
  }

  /**
   * Graceful shutdown: new work is refused (`shutting_down`), queued jobs end `failed` with
   * `INTERRUPTED` (re-run on the next start with `resumeInterrupted`), running exports get
   * `drainTimeoutMs` to finish and are then aborted as `INTERRUPTED`. Resolves when nothing of
   * the manager is running any more. Safe to call twice.
   */
  close(options: { drainTimeoutMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(options.drainTimeoutMs ?? 30_000);
    return this.#closing;
  }

  async #close(drainTimeoutMs: number): Promise<void> {
    checkInteger('drainTimeoutMs', drainTimeoutMs);
    if (this.#sweeper) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await this.ready.catch(() => {});
    const runner = this.#jobs?.runner;
    // A shared queue stops handing this process jobs first; it settles once the runs here ended.
    const queueClosed = this.#jobs && this.#options.jobQueue?.close();
    queueClosed?.catch(() => {});
    runner?.abortQueued(interrupted);
    this.#admission.close();
    const idle = () => Promise.all([runner?.idle(), this.#streams.idle()]);
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      idle().then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), drainTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) {
      runner?.abortAll(interrupted);
      this.#streams.abortAll(interrupted);
    }
    await idle();
    await queueClosed?.catch((error: unknown) =>
      this.emit('warning', 'The job queue did not close cleanly', error),
    );
    await Promise.allSettled([this.#jobs?.close(), this.events.close?.()]);
    // After the jobs: the events of jobs interrupted above are recorded before the store closes.
    await this.#notifier?.close();
    this.metrics?.concurrencyLimit.dec(this.#admission.limiter.limit);
  }

  #refuseEarly(request: ExportRequest): void {
    const refusal = this.refusal(request);
    if (refusal) throw refusal;
  }

  /**
   * The refusal a stream of this request gets at once, or `undefined`: a full process refuses
   * a stream of a known dataset before validating the rest of it, since a 429 is the most
   * frequent answer under load and should be the cheapest. A refusal it returns is counted and
   * reported (`rejected`) like any other. `stream()` and `open()` check it themselves.
   */
  refusal(request: ExportRequest): BackpressureError | undefined {
    const dataset = typeof request === 'object' && request !== null ? request.dataset : undefined;
    if (typeof dataset !== 'string' || !this.#datasets.has(dataset)) return undefined;
    const owner = typeof request.owner === 'string' ? request.owner : undefined;
    return this.#admission.refuseAtOnce({ dataset, owner, kind: 'stream' });
  }

  #prepare(request: ExportRequest): PreparedExport {
    return prepare(request, this.#datasets, this.#options.csv, {
      timeZone: this.#options.timeZone,
      dateFormat: this.#options.dateFormat,
      xlsx: this.#options.xlsx,
      parquet: this.#options.parquet,
    });
  }

  #requireJobs(): JobService {
    if (!this.#jobs) {
      throw new TypeError(
        'Jobs need a directory: pass `directory` (or `store` and `storage`) to the ExportManager',
      );
    }
    return this.#jobs;
  }

  async #readyJobs(): Promise<JobService> {
    const jobs = this.#requireJobs();
    await this.ready;
    return jobs;
  }

  #createNotifier(warn: (message: string, cause?: unknown) => void): WebhookNotifier | undefined {
    const webhooks = this.#options.webhooks;
    if (webhooks === undefined) return undefined;
    const config = checkWebhookOptions(webhooks);
    if (!this.#jobs) throw new TypeError('Webhooks need jobs: pass `directory` (or `store` and `storage`)');
    const directory = this.#options.directory;
    const store =
      webhooks.store ??
      (directory
        ? new FileWebhookDeliveryStore(join(directory, 'webhooks'), { onWarning: warn })
        : undefined);
    if (!store) {
      throw new TypeError(
        'Webhooks need a place for their delivery state: pass `directory` or `webhooks.store`',
      );
    }
    const fetchImpl = webhooks.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') {
      throw new TypeError(`Expected webhooks.fetch to be a function, got ${typeof fetchImpl}`);
    }
    return new WebhookNotifier({
      config,
      endpointsFor: webhooks.endpointsFor,
      links: webhooks.links,
      store,
      queue:
        webhooks.queue ??
        new LocalWebhookDeliveryQueue({
          maxConcurrent: config.maxConcurrent,
          maxConcurrentPerEndpoint: config.maxConcurrentPerEndpoint,
          now: this.#now,
          ...(webhooks.timers ? { timers: webhooks.timers } : {}),
        }),
      metrics: this.metrics,
      fetch: fetchImpl,
      now: this.#now,
      random: this.#options.random ?? Math.random,
      ...(webhooks.timers ? { timers: webhooks.timers } : {}),
      warn,
    });
  }

  async #recover(): Promise<void> {
    await this.#notifier?.open();
    await this.#jobs?.recover();
    const retention = this.#options.retention;
    if (this.#jobs && retention && !this.#closing) {
      const queue = this.#options.jobQueue;
      this.#sweeper = setInterval(() => {
        // With a shared queue one process per interval sweeps for the cluster.
        const claimed = queue?.claimSweep ? queue.claimSweep() : Promise.resolve(true);
        claimed
          .then((mine) => (mine ? this.sweep() : undefined))
          .catch((error) => this.emit('warning', 'The retention sweep failed', error));
      }, retention.sweepIntervalMs ?? 60_000);
      this.#sweeper.unref();
    }
  }
}

function isExportMetrics(value: unknown): value is ExportMetrics {
  return typeof value === 'object' && value !== null && 'jobsStarted' in value && 'registry' in value;
}
