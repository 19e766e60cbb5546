import { EventEmitter, once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import {
  type Dataset,
  type DatasetDefinition,
  defineDataset,
  findDataset,
  type Params,
  resolveColumns,
  validateParams,
} from './dataset.js';
import {
  BackpressureError,
  type BackpressureReason,
  CancelledError,
  describeValue,
  type ExportError,
  isExportError,
  JobStateError,
  NotFoundError,
  SourceError,
  ValidationError,
  WriteError,
} from './errors.js';
import { writeExport } from './export-stream.js';
import { getFormat } from './formats/index.js';
import type { ColumnSpec, CsvOptions, Format, FormatName } from './formats/types.js';
import { FileJobStore } from './jobs/file-job-store.js';
import {
  type Compression,
  createJobId,
  isJobId,
  type Job,
  type JobRecord,
  type JobStatus,
  toPublicJob,
} from './jobs/job.js';
import {
  type ExportMetrics,
  type ExportMetricsOptions,
  type ExportOutcome,
  registerExportMetrics,
} from './metrics.js';
import { RetryAfterEstimator } from './retry-after.js';
import { type Release, Semaphore } from './semaphore.js';

/** What to export. The same shape for streamed exports and jobs. */
export interface ExportRequest {
  dataset: string;
  format: FormatName;
  /** Dataset params; validated and coerced against the dataset's declared params. */
  params?: Record<string, unknown>;
  /** Columns to write, in order (names or a comma-separated string). @default the dataset's columns */
  columns?: readonly string[] | string;
  /** The download file name to suggest to clients. @default `<dataset>-<timestamp>.<ext>` */
  filename?: string;
  /** @default 'none' */
  compression?: Compression;
  /** CSV options for this export, over the manager's defaults. */
  csv?: CsvOptions;
  /** Who asks; jobs are only visible to the same owner. Derive it from your own auth. */
  owner?: string;
  /** With `start()`: a second request with the same owner and key returns the first job. */
  idempotencyKey?: string;
}

export interface RetentionOptions {
  /** Delete finished files older than this. @default undefined (keep) */
  maxAgeMs?: number;
  /** Delete the oldest finished files while all of them together exceed this. @default undefined */
  maxTotalBytes?: number;
  /** How often the sweeper runs. @default 60_000 */
  sweepIntervalMs?: number;
  /** How long manifests of expired, failed and cancelled jobs are kept (then the job is a 404). @default 7 days */
  keepManifestsMs?: number;
}

export interface ExportManagerOptions {
  /** Datasets by name, or defined with {@link defineDataset}. More can be added with `defineDataset`. */
  datasets?: Record<string, DatasetDefinition> | readonly Dataset[];
  /** Directory of job files and manifests. Required for `start()`; `stream()` works without it. */
  directory?: string;
  /** Exports running at once, streams and jobs together. @default 5 */
  maxConcurrent?: number;
  /** Exports waiting for a slot. `0` rejects at once when every slot is busy. @default 0 */
  maxQueued?: number;
  /** Longest wait in the queue; then the export fails with `QUEUE_TIMEOUT`. @default undefined (no limit) */
  queueTimeoutMs?: number;
  /** Running plus queued exports one owner may have. @default undefined (no limit) */
  maxConcurrentPerOwner?: number;
  /** Rows pulled from a source at a time. @default 500 */
  batchSize?: number;
  /** Default CSV options of every export. */
  csv?: CsvOptions;
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

export interface StreamOptions {
  signal?: AbortSignal;
  /** End the destination when the export ends. Pass `false` for stdout. @default true */
  end?: boolean;
}

export interface ExportResult {
  rows: number;
  bytes: number;
}

/** A streamed export that holds a slot: read `body`; destroying it aborts the export. */
export interface OpenedExport {
  body: Readable;
  contentType: string;
  /** Suggested download file name. */
  filename: string;
  /**
   * Resolves once the first bytes are on their way (or the export ended without any); rejects
   * with the export's error when it failed before its first byte. An HTTP layer awaits it
   * before sending headers, so that such a failure is still answered with a proper status.
   */
  ready: Promise<void>;
  /** Settles when the export ends; never rejects (see `job:`/`stream:` events for errors). */
  done: Promise<ExportResult | undefined>;
}

export interface CallerOptions {
  /** The caller's owner; another owner's job is "not found". */
  owner?: string;
}

export interface ListOptions extends CallerOptions {
  status?: JobStatus;
  /** Only the jobs of this dataset. */
  dataset?: string;
  /** @default 50, at most 1000 */
  limit?: number;
  cursor?: string;
}

export interface JobFileInfo {
  job: Job;
  path: string;
  size: number;
  contentType: string;
  /** Suggested download file name (user-chosen text: sanitise it for headers). */
  filename: string;
  sha256: string;
}

export interface ExportSummary {
  dataset: string;
  format: FormatName;
  owner: string | undefined;
  rows: number;
  bytes: number;
  durationMs: number;
  outcome: ExportOutcome;
  error: ExportError | undefined;
}

export interface RejectionEvent {
  reason: BackpressureReason;
  dataset: string;
  owner: string | undefined;
  error: BackpressureError;
}

/** What job events tell beyond the public job: for logs and audits, not for clients. */
export interface JobEventContext {
  owner: string | undefined;
}

/** Typed events of the manager. */
export interface ExportManagerEvents {
  'job:queued': [job: Job, context: JobEventContext];
  'job:started': [job: Job, context: JobEventContext];
  'job:progress': [job: Job, context: JobEventContext];
  'job:succeeded': [job: Job, context: JobEventContext];
  'job:failed': [job: Job, error: ExportError, context: JobEventContext];
  'job:cancelled': [job: Job, context: JobEventContext];
  'job:expired': [job: Job, context: JobEventContext];
  'stream:started': [info: { dataset: string; format: FormatName; owner: string | undefined }];
  'stream:finished': [summary: ExportSummary];
  rejected: [event: RejectionEvent];
  /** Something the operator should know that is not an error of a request (e.g. a corrupt manifest moved aside). */
  warning: [message: string, cause?: unknown];
  /** A request of the HTTP handler failed on the server's side (a 5xx, or a stream cut short); see its `onError`. */
  'http:error': [error: unknown, request: { method: string; path: string }];
}

interface ActiveJob {
  record: JobRecord;
  controller: AbortController;
  /** Settles when the job reached a finished status and its files are in order. */
  settled: Promise<void>;
  queuedAt: number;
}

interface PreparedExport {
  dataset: Dataset;
  format: Format;
  params: Params;
  columns: readonly ColumnSpec[] | undefined;
  compression: Compression;
  csv: CsvOptions | undefined;
  owner: string | undefined;
  filename: string | undefined;
}

const MAX_OWNER_LENGTH = 256;
const MAX_FILENAME_LENGTH = 255;

/**
 * The export engine: datasets, formats, one bounded semaphore for every export, metrics,
 * and durable jobs in a directory.
 *
 * @example
 * ```ts
 * const manager = new ExportManager({ directory: './exports', maxConcurrent: 5 });
 * manager.defineDataset('orders', { source: () => db.iterate('select * from orders') });
 * await manager.stream({ dataset: 'orders', format: 'csv' }, createWriteStream('orders.csv'));
 * const job = await manager.start({ dataset: 'orders', format: 'ndjson', owner: 'user-1' });
 * ```
 */
export class ExportManager extends EventEmitter<ExportManagerEvents> {
  readonly metrics: ExportMetrics | undefined;
  /** Resolves when the exports directory has been read and interrupted jobs recovered. */
  readonly ready: Promise<void>;

  readonly #datasets = new Map<string, Dataset>();
  readonly #semaphore: Semaphore;
  readonly #estimator: RetryAfterEstimator;
  readonly #store: FileJobStore | undefined;
  readonly #jobs = new Map<string, JobRecord>();
  readonly #active = new Map<string, ActiveJob>();
  /** Queued job ids in FIFO order, for `queuePosition`. */
  readonly #queue: string[] = [];
  readonly #streams = new Set<{ controller: AbortController; done: Promise<unknown> }>();
  /** Running plus queued exports per owner, for `maxConcurrentPerOwner`. */
  readonly #ownerLoad = new Map<string, number>();
  readonly #writes = new Map<string, Promise<void>>();
  readonly #options: ExportManagerOptions;
  readonly #now: () => number;
  readonly #batchSize: number;
  readonly #progressIntervalMs: number;
  #sweeper: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: ExportManagerOptions = {}) {
    super();
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#batchSize = checkInteger('batchSize', options.batchSize ?? 500, 1);
    this.#progressIntervalMs = checkInteger('progressIntervalMs', options.progressIntervalMs ?? 250, 0);
    if (options.queueTimeoutMs !== undefined) checkInteger('queueTimeoutMs', options.queueTimeoutMs, 1);
    if (options.maxConcurrentPerOwner !== undefined) {
      checkInteger('maxConcurrentPerOwner', options.maxConcurrentPerOwner, 1);
    }
    checkInteger('maxAttempts', options.maxAttempts ?? 3, 1);
    const retention = options.retention ?? {};
    if (retention.maxAgeMs !== undefined) checkInteger('retention.maxAgeMs', retention.maxAgeMs, 1);
    if (retention.maxTotalBytes !== undefined)
      checkInteger('retention.maxTotalBytes', retention.maxTotalBytes, 0);
    checkInteger('retention.sweepIntervalMs', retention.sweepIntervalMs ?? 60_000, 1);

    this.#estimator = new RetryAfterEstimator({ ...(options.random ? { random: options.random } : {}) });
    this.#semaphore = new Semaphore({
      limit: options.maxConcurrent ?? 5,
      maxQueued: options.maxQueued ?? 0,
      retryAfterSeconds: () => this.#retryAfter(),
    });
    this.metrics =
      options.metrics === false
        ? undefined
        : isExportMetrics(options.metrics)
          ? options.metrics
          : registerExportMetrics(options.metrics ?? {});
    this.metrics?.concurrencyLimit.inc(this.#semaphore.limit);

    const datasets = options.datasets ?? {};
    if (Array.isArray(datasets)) {
      for (const dataset of datasets) this.#addDataset(defineDataset(dataset.name, dataset));
    } else {
      for (const [name, definition] of Object.entries(datasets as Record<string, DatasetDefinition>)) {
        this.#addDataset(defineDataset(name, definition));
      }
    }

    this.#store = options.directory ? new FileJobStore(options.directory) : undefined;
    this.ready = this.#recover();
    // Callers see recovery errors through the methods that await `ready`; never unhandled.
    this.ready.catch(() => {});
  }

  /** Adds a dataset. Throws `TypeError` on a bad definition or a duplicate name. */
  defineDataset(name: string, definition: DatasetDefinition): Dataset {
    return this.#addDataset(defineDataset(name, definition));
  }

  /** The registered datasets, in registration order. */
  get datasets(): readonly Dataset[] {
    return [...this.#datasets.values()];
  }

  /** Exports running right now (streams and jobs). */
  get inFlight(): number {
    return this.#semaphore.active;
  }

  /** Exports waiting for a slot. */
  get queued(): number {
    return this.#semaphore.pending;
  }

  /** How many exports may run at once. Raising it starts queued exports; lowering it never aborts any. */
  get limit(): number {
    return this.#semaphore.limit;
  }

  set limit(value: number) {
    const before = this.#semaphore.limit;
    this.#semaphore.limit = value;
    this.metrics?.concurrencyLimit.inc(value - before);
  }

  /** True when the manager has a `directory`, so that jobs (`start()`, `list()`, ...) can work. */
  get jobsEnabled(): boolean {
    return this.#store !== undefined;
  }

  /** True once `close()` was called. */
  get closing(): boolean {
    return this.#closing !== undefined;
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
    const prepared = this.#prepare(request);
    const release = await this.#acquireForStream(prepared, options.signal);
    return this.#runStream(prepared, release, destination, options.signal, options.end ?? true);
  }

  /**
   * Like {@link stream}, but hands back a readable body once a slot is held, so that an HTTP
   * layer can answer 429 before sending any header. Destroying `body` aborts the export and
   * frees the slot.
   */
  async open(request: ExportRequest, options: { signal?: AbortSignal } = {}): Promise<OpenedExport> {
    const prepared = this.#prepare(request);
    const release = await this.#acquireForStream(prepared, options.signal);
    const body = new PassThrough();
    // A reader that destroys the body before the end went away: a cancellation, not a write failure.
    const controller = new AbortController();
    const forward = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', forward, { once: true });
    body.once('close', () => {
      if (!body.writableFinished) controller.abort(new CancelledError('The client went away'));
    });
    let firstBytes!: () => void;
    const flowing = new Promise<void>((resolve) => {
      firstBytes = resolve;
    });
    const run = this.#runStream(prepared, release, body, controller.signal, true, () => firstBytes());
    const done = run.then(
      (result) => result,
      (error) => {
        body.destroy(isExportError(error) && error.code === 'CANCELLED' ? undefined : error);
        return undefined;
      },
    );
    const ready = Promise.race([flowing, run.then(() => undefined)]);
    // `ready` is optional to await; its rejection is also reported through `done` and events.
    ready.catch(() => {});
    void done.finally(() => options.signal?.removeEventListener('abort', forward));
    return {
      body,
      contentType: contentTypeOf(prepared),
      filename: downloadName(prepared.filename, prepared, this.#now()),
      ready,
      done,
    };
  }

  /**
   * Checks a request as {@link open} would, without taking a slot or running anything, and
   * tells the content type and file name its export would have (for an HTTP `HEAD`).
   *
   * @throws {ValidationError | NotFoundError} bad request
   */
  describe(request: ExportRequest): { contentType: string; filename: string } {
    const prepared = this.#prepare(request);
    return {
      contentType: contentTypeOf(prepared),
      filename: downloadName(prepared.filename, prepared, this.#now()),
    };
  }

  /**
   * Starts an asynchronous job that writes the export into the exports directory and returns
   * at once with the job (`running` or `queued`).
   *
   * @throws {BackpressureError} every slot and queue place taken (429), owner limit (429), shutting down (503)
   * @throws {ValidationError | NotFoundError} bad request
   */
  async start(request: ExportRequest): Promise<Job> {
    const store = this.#requireStore();
    const prepared = this.#prepare(request);
    await this.ready;
    const idempotencyKey = checkOptionalString('idempotencyKey', request.idempotencyKey, 200);
    const existing =
      idempotencyKey === undefined ? undefined : this.#findIdempotent(idempotencyKey, prepared.owner);
    if (existing) return this.#view(existing);
    // Admission is synchronous from here to the first await, so concurrent calls cannot race.
    // The job's signal goes to the queue too, so that cancelling a queued job gives its queue
    // place back at once.
    const controller = new AbortController();
    const admission = this.#admit(prepared, controller.signal);
    const now = this.#now();
    const record: JobRecord = {
      version: 1,
      id: createJobId(),
      status: 'queued',
      dataset: prepared.dataset.name,
      format: prepared.format.name,
      params: prepared.params,
      columns: prepared.columns ? prepared.columns.map((column) => column.name) : null,
      filename: prepared.filename ?? null,
      compression: prepared.compression,
      csv: request.csv ?? null,
      owner: prepared.owner ?? null,
      idempotencyKey: idempotencyKey ?? null,
      createdAt: new Date(now).toISOString(),
      startedAt: null,
      finishedAt: null,
      expiresAt: null,
      rows: 0,
      bytes: 0,
      totalRows: null,
      file: null,
      error: null,
      attempts: 0,
    };
    this.#jobs.set(record.id, record);
    this.#launch(record, prepared, admission, store, controller);
    // The job as admitted (queued or running): a job that fails or finishes during the
    // manifest write below must not come back from start() as already finished.
    const job = this.#view(record);
    await this.#persist(record);
    return job;
  }

  /**
   * The caller's job that was started with this idempotency key, if any. An HTTP layer uses it
   * to answer a repeated request with 200 instead of 202.
   */
  async findByIdempotencyKey(key: string, options: CallerOptions = {}): Promise<Job | undefined> {
    await this.ready;
    const record = this.#findIdempotent(key, options.owner);
    return record && this.#view(record);
  }

  #findIdempotent(key: string, owner: string | undefined): JobRecord | undefined {
    for (const record of this.#jobs.values()) {
      if (record.idempotencyKey === key && record.owner === (owner ?? null)) return record;
    }
    return undefined;
  }

  /** Resolves with the job once it has finished (succeeded, failed, cancelled). */
  async wait(id: string, options: CallerOptions & { signal?: AbortSignal } = {}): Promise<Job> {
    const record = await this.#find(id, options.owner);
    const active = this.#active.get(record.id);
    if (active) {
      if (options.signal) {
        const signal = options.signal;
        signal.throwIfAborted();
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
          active.settled.then(() => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          });
        });
      } else {
        await active.settled;
      }
    }
    return this.#view(record);
  }

  /** The job, or `NotFoundError` when it does not exist or belongs to another owner. */
  async get(id: string, options: CallerOptions = {}): Promise<Job> {
    return this.#view(await this.#find(id, options.owner));
  }

  /** The caller's jobs, newest first, paginated with an opaque cursor. */
  async list(options: ListOptions = {}): Promise<{ jobs: Job[]; nextCursor: string | null }> {
    await this.ready;
    const limit = options.limit ?? 50;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
      throw new ValidationError(
        `Expected limit to be an integer from 1 to 1000, got ${describeValue(limit)}`,
        {
          field: 'limit',
          statusCode: 400,
        },
      );
    }
    if (
      options.status !== undefined &&
      !['queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'].includes(options.status)
    ) {
      throw new ValidationError(`Expected status to be a job status, got ${describeValue(options.status)}`, {
        field: 'status',
        statusCode: 400,
      });
    }
    const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
    const owner = options.owner ?? null;
    const matches = [...this.#jobs.values()]
      .filter(
        (record) =>
          record.owner === owner &&
          (options.status === undefined || record.status === options.status) &&
          (options.dataset === undefined || record.dataset === options.dataset),
      )
      .sort(newestFirst)
      .filter((record) => after === undefined || newestFirst(record, after) > 0);
    const page = matches.slice(0, limit);
    const last = page.at(-1);
    return {
      jobs: page.map((record) => this.#view(record)),
      nextCursor: matches.length > limit && last ? encodeCursor(last) : null,
    };
  }

  /** Cancels a queued or running job: the source is aborted, the partial file removed, the slot freed. */
  async cancel(id: string, options: CallerOptions = {}): Promise<Job> {
    const record = await this.#find(id, options.owner);
    const active = this.#active.get(record.id);
    if (active) {
      active.controller.abort(new CancelledError());
      await active.settled;
    }
    return this.#view(record);
  }

  /** Cancels the job if needed, then removes its file and manifest. */
  async delete(id: string, options: CallerOptions = {}): Promise<void> {
    const record = await this.#find(id, options.owner);
    const active = this.#active.get(record.id);
    if (active) {
      active.controller.abort(new CancelledError());
      await active.settled;
    }
    await this.#serialized(record.id, async () => {
      const store = this.#requireStore();
      if (record.file && record.status === 'succeeded') {
        await store.removeFile(record.file.name);
        this.#addStorage(-record.file.bytes);
      }
      await store.remove(record.id);
    });
    this.#jobs.delete(record.id);
  }

  /**
   * The finished file of a succeeded job, for downloads. The file is only handed out when its
   * manifest says `succeeded`.
   *
   * @throws {NotFoundError} 404; {@link JobStateError} 409 `JOB_NOT_READY` or 410 `JOB_EXPIRED`
   */
  async file(id: string, options: CallerOptions = {}): Promise<JobFileInfo> {
    const record = await this.#find(id, options.owner);
    if (record.status === 'expired') {
      throw new JobStateError('JOB_EXPIRED', 'The export file has expired and was deleted');
    }
    if (record.status !== 'succeeded' || !record.file) {
      throw new JobStateError(
        'JOB_NOT_READY',
        `The export is ${record.status}, not succeeded; its file is not available`,
      );
    }
    const store = this.#requireStore();
    const size = await store.fileSize(record.file.name);
    if (size === undefined) throw new JobStateError('JOB_EXPIRED', 'The export file is gone');
    const format = getFormat(record.format);
    return {
      job: this.#view(record),
      path: store.dataPath(record.file.name),
      size,
      contentType: record.file.contentType,
      filename: downloadName(
        record.filename ?? undefined,
        { dataset: { name: record.dataset }, format, compression: record.compression },
        Date.parse(record.createdAt),
      ),
      sha256: record.file.sha256,
    };
  }

  /**
   * One retention pass: deletes files past `maxAgeMs`, then the oldest while the total exceeds
   * `maxTotalBytes`, marking their jobs `expired`; forgets expired, failed and cancelled jobs
   * after `keepManifestsMs`. Runs by itself on an unref'd timer; call it to force a pass.
   */
  async sweep(): Promise<{ expired: number; forgotten: number }> {
    await this.ready;
    const store = this.#store;
    if (!store) return { expired: 0, forgotten: 0 };
    const { maxAgeMs, maxTotalBytes, keepManifestsMs = 7 * 24 * 3600_000 } = this.#options.retention ?? {};
    const now = this.#now();
    let expired = 0;
    let forgotten = 0;
    const succeeded = [...this.#jobs.values()]
      .filter((record) => record.status === 'succeeded' && record.file)
      .sort((a, b) => Date.parse(a.finishedAt ?? a.createdAt) - Date.parse(b.finishedAt ?? b.createdAt));
    let total = succeeded.reduce((sum, record) => sum + (record.file?.bytes ?? 0), 0);
    for (const record of succeeded) {
      // An overlapping pass (the timer and a manual call) or a delete may have got here first.
      if (record.status !== 'succeeded') {
        total -= record.file?.bytes ?? 0;
        continue;
      }
      const age = now - Date.parse(record.finishedAt ?? record.createdAt);
      const reason =
        maxAgeMs !== undefined && age >= maxAgeMs
          ? 'age'
          : maxTotalBytes !== undefined && total > maxTotalBytes
            ? 'size'
            : undefined;
      if (!reason) continue;
      total -= record.file?.bytes ?? 0;
      await this.#expire(record, reason, store);
      expired++;
    }
    for (const record of [...this.#jobs.values()]) {
      if (record.status !== 'expired' && record.status !== 'failed' && record.status !== 'cancelled')
        continue;
      // An expired job's manifest is kept for keepManifestsMs from when it expired, not from
      // when it finished, so that clients polling it see `expired` rather than a 404.
      const since =
        (record.status === 'expired' ? record.expiresAt : null) ?? record.finishedAt ?? record.createdAt;
      if (now - Date.parse(since) < keepManifestsMs) continue;
      await this.#serialized(record.id, () => store.remove(record.id));
      this.#jobs.delete(record.id);
      forgotten++;
    }
    return { expired, forgotten };
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
    checkInteger('drainTimeoutMs', drainTimeoutMs, 0);
    if (this.#sweeper) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await this.ready.catch(() => {});
    const interrupted = () =>
      new CancelledError('The export was interrupted by a shutdown', { code: 'INTERRUPTED' });
    for (const id of [...this.#queue]) this.#active.get(id)?.controller.abort(interrupted());
    this.#semaphore.close();

    const running = () => [
      ...[...this.#active.values()].map((job) => job.settled),
      ...[...this.#streams].map((stream) => stream.done),
    ];
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.allSettled(running()).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), drainTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) {
      for (const job of this.#active.values()) job.controller.abort(interrupted());
      for (const stream of this.#streams) stream.controller.abort(interrupted());
    }
    await Promise.allSettled(running());
    await Promise.allSettled([...this.#writes.values()]);
    this.metrics?.concurrencyLimit.dec(this.#semaphore.limit);
  }

  // ---- preparation and admission -------------------------------------------------------

  #addDataset(dataset: Dataset): Dataset {
    if (this.#datasets.has(dataset.name)) throw new TypeError(`Dataset "${dataset.name}" is already defined`);
    this.#datasets.set(dataset.name, dataset);
    return dataset;
  }

  #prepare(request: ExportRequest): PreparedExport {
    if (typeof request !== 'object' || request === null) {
      throw new ValidationError(`Expected an export request object, got ${describeValue(request)}`, {
        statusCode: 400,
      });
    }
    const dataset = findDataset(this.#datasets, request.dataset);
    const format = getFormat(request.format);
    if (!dataset.formats.includes(format.name)) {
      throw new ValidationError(
        `Dataset "${dataset.name}" cannot be exported as ${format.name}; expected one of ${dataset.formats.join(', ')}`,
        { field: 'format', code: 'UNKNOWN_FORMAT' },
      );
    }
    const params = validateParams(dataset, request.params);
    const columns = resolveColumns(dataset, request.columns);
    const compression = request.compression ?? 'none';
    if (compression !== 'none' && compression !== 'gzip') {
      throw new ValidationError(
        `Expected compression to be "none" or "gzip", got ${describeValue(compression)}`,
        {
          field: 'compression',
        },
      );
    }
    const owner = checkOptionalString('owner', request.owner, MAX_OWNER_LENGTH);
    const filename = checkOptionalString('filename', request.filename, MAX_FILENAME_LENGTH);
    const csv = request.csv || this.#options.csv ? { ...this.#options.csv, ...request.csv } : undefined;
    // Fail on bad CSV options now, not after the slot was taken.
    format.createEncoder({ ...(columns ? { columns } : {}), ...(csv ? { csv } : {}) });
    return { dataset, format, params, columns, compression, csv, owner, filename };
  }

  /**
   * Decides at once whether an export may run now, wait, or must be turned away. Returns a
   * release (slot taken) or a promise of one (queued).
   */
  #admit(prepared: PreparedExport, signal?: AbortSignal): Release | Promise<Release> {
    const reject = (reason: BackpressureReason): never => {
      const error = new BackpressureError({
        reason,
        limit: this.#semaphore.limit,
        inFlight: this.#semaphore.active,
        retryAfterSeconds: this.#retryAfter(),
      });
      this.#reject(error, prepared);
      throw error;
    };
    if (this.#closing || this.#semaphore.closed) reject('shutting_down');
    const owner = prepared.owner;
    const perOwner = this.#options.maxConcurrentPerOwner;
    if (owner !== undefined && perOwner !== undefined && (this.#ownerLoad.get(owner) ?? 0) >= perOwner) {
      reject('owner_limit');
    }
    const release = this.#semaphore.tryAcquire();
    if (release) return release;
    if (this.#semaphore.pending >= this.#semaphore.maxQueued) {
      reject(this.#semaphore.maxQueued === 0 ? 'concurrency_limit' : 'queue_full');
    }
    // With the signal, a waiter that gives up also leaves the semaphore's queue at once.
    return this.#semaphore.acquire({
      ...(signal ? { signal } : {}),
      ...(this.#options.queueTimeoutMs !== undefined ? { timeoutMs: this.#options.queueTimeoutMs } : {}),
    });
  }

  #reject(error: BackpressureError, prepared: PreparedExport): void {
    this.metrics?.jobsRejected.inc({ reason: error.reason });
    this.emit('rejected', {
      reason: error.reason,
      dataset: prepared.dataset.name,
      owner: prepared.owner,
      error,
    });
  }

  #retryAfter(): number {
    return this.#estimator.estimate(this.#semaphore.active + this.#semaphore.pending, this.#semaphore.limit);
  }

  #ownerDelta(owner: string | null | undefined, delta: number): void {
    if (owner === null || owner === undefined) return;
    const load = (this.#ownerLoad.get(owner) ?? 0) + delta;
    if (load <= 0) this.#ownerLoad.delete(owner);
    else this.#ownerLoad.set(owner, load);
  }

  // ---- streams ------------------------------------------------------------------------

  /**
   * Takes a slot for a stream. The owner's load counts from admission on (not from the first
   * row), so two simultaneous streams of one owner cannot both slip under its limit; the
   * caller hands that load over to {@link #runStream}.
   */
  async #acquireForStream(prepared: PreparedExport, signal: AbortSignal | undefined): Promise<Release> {
    if (signal?.aborted) throw new CancelledError(undefined, { cause: signal.reason });
    const admission = this.#admit(prepared, signal);
    this.#ownerDelta(prepared.owner, 1);
    if (typeof admission === 'function') return admission;
    this.metrics?.queued.inc();
    const waitStart = this.#now();
    try {
      // A stream that waits can still give up its place when the client leaves.
      return await Promise.race([admission, abortPromise(signal, admission)]);
    } catch (error) {
      this.#ownerDelta(prepared.owner, -1);
      if (isExportError(error) && error instanceof BackpressureError) this.#reject(error, prepared);
      throw error;
    } finally {
      this.metrics?.queued.dec();
      this.metrics?.queueWait.observe((this.#now() - waitStart) / 1000);
    }
  }

  async #runStream(
    prepared: PreparedExport,
    release: Release,
    destination: Writable,
    signal: AbortSignal | undefined,
    end: boolean,
    onFirstBytes?: () => void,
  ): Promise<ExportResult> {
    const labels = { dataset: prepared.dataset.name, format: prepared.format.name };
    const controller = new AbortController();
    const onAbort = () => controller.abort(new CancelledError('The client went away'));
    signal?.addEventListener('abort', onAbort, { once: true });
    const entry = { controller, done: Promise.resolve() as Promise<unknown> };
    const started = this.#now();
    this.metrics?.jobsStarted.inc(labels);
    this.metrics?.inFlight.inc();
    this.emit('stream:started', { ...labels, owner: prepared.owner });
    let outcome: ExportOutcome = 'failed';
    let rows = 0;
    let bytes = 0;
    let failure: ExportError | undefined;
    const run = (async () => {
      try {
        const source = await openSource(prepared, controller.signal);
        const result = await writeExport({
          dataset: prepared.dataset.name,
          source,
          encoder: this.#encoder(prepared),
          destination,
          signal: controller.signal,
          gzip: prepared.compression === 'gzip',
          batchSize: this.#batchSize,
          end,
          hash: false,
          onProgress: (addedRows, addedBytes) => {
            if (bytes === 0) onFirstBytes?.();
            rows += addedRows;
            bytes += addedBytes;
            this.metrics?.rows.inc(labels, addedRows);
            this.metrics?.bytes.inc(labels, addedBytes);
          },
        });
        this.metrics?.rows.inc(labels, result.rows - rows);
        outcome = 'succeeded';
        return result;
      } catch (error) {
        failure = toExportError(error, prepared.dataset.name, controller.signal);
        outcome = failure.code === 'CANCELLED' ? 'cancelled' : 'failed';
        if (!destination.destroyed && end) destination.destroy();
        throw failure;
      } finally {
        signal?.removeEventListener('abort', onAbort);
        release();
        this.#ownerDelta(prepared.owner, -1);
        this.metrics?.inFlight.dec();
        const durationMs = this.#now() - started;
        if (outcome !== 'cancelled') this.#estimator.observe(durationMs);
        this.metrics?.jobsCompleted.inc({ ...labels, outcome });
        this.metrics?.jobDuration.observe({ ...labels, outcome }, durationMs / 1000);
        this.#streams.delete(entry);
        this.emit('stream:finished', {
          ...labels,
          owner: prepared.owner,
          rows,
          bytes,
          durationMs,
          outcome,
          error: failure,
        });
      }
    })();
    entry.done = run.catch(() => {});
    this.#streams.add(entry);
    return run;
  }

  #encoder(prepared: PreparedExport) {
    return prepared.format.createEncoder({
      ...(prepared.columns ? { columns: prepared.columns } : {}),
      ...(prepared.csv ? { csv: prepared.csv } : {}),
    });
  }

  // ---- jobs ---------------------------------------------------------------------------

  #requireStore(): FileJobStore {
    if (!this.#store) {
      throw new TypeError('Jobs need a directory: pass `directory` to the ExportManager constructor');
    }
    return this.#store;
  }

  #launch(
    record: JobRecord,
    prepared: PreparedExport,
    admission: Release | Promise<Release>,
    store: FileJobStore,
    controller: AbortController,
  ): void {
    const queuedAt = this.#now();
    const labels = { dataset: record.dataset, format: record.format };
    this.#ownerDelta(record.owner, 1);
    this.metrics?.jobsStarted.inc(labels);
    let resolveSettled!: () => void;
    const active: ActiveJob = {
      record,
      controller,
      queuedAt,
      settled: new Promise<void>((resolve) => {
        resolveSettled = resolve;
      }),
    };
    this.#active.set(record.id, active);

    const run = async () => {
      let release: Release | undefined;
      let ran = false;
      let startedAt = queuedAt;
      let ownerCounted = true;
      // The slot (and the owner's share) is given back as soon as the data is written or the
      // export failed, before the manifest write: a client that sees the job finished and asks
      // again must find the slot free.
      const freeSlot = () => {
        if (release) {
          release();
          release = undefined;
          this.metrics?.inFlight.dec();
        }
        if (ownerCounted) {
          ownerCounted = false;
          this.#ownerDelta(record.owner, -1);
        }
      };
      try {
        if (typeof admission === 'function') {
          release = admission;
        } else {
          this.#queue.push(record.id);
          this.metrics?.queued.inc();
          this.emit('job:queued', this.#view(record), contextOf(record));
          try {
            release = await Promise.race([admission, abortPromise(controller.signal, admission)]);
          } finally {
            this.#queue.splice(this.#queue.indexOf(record.id), 1);
            this.metrics?.queued.dec();
            this.metrics?.queueWait.observe((this.#now() - queuedAt) / 1000);
          }
        }
        startedAt = this.#now();
        record.status = 'running';
        record.startedAt = new Date(startedAt).toISOString();
        record.attempts++;
        ran = true;
        this.metrics?.inFlight.inc();
        await this.#persist(record);
        this.emit('job:started', this.#view(record), contextOf(record));
        await this.#writeJobFile(record, prepared, controller.signal, store);
        freeSlot();
        const finishedAt = this.#now();
        const maxAgeMs = this.#options.retention?.maxAgeMs;
        // The job only becomes `succeeded` (and its file servable) once the manifest says so.
        const finished: JobRecord = {
          ...record,
          status: 'succeeded',
          finishedAt: new Date(finishedAt).toISOString(),
          expiresAt: maxAgeMs === undefined ? null : new Date(finishedAt + maxAgeMs).toISOString(),
        };
        await this.#persist(finished);
        Object.assign(record, finished);
        this.#addStorage(record.file?.bytes ?? 0);
        this.#estimator.observe(finishedAt - startedAt);
        this.#finishMetrics(record, 'succeeded', startedAt, ran);
        this.emit('job:succeeded', this.#view(record), contextOf(record));
      } catch (caught) {
        freeSlot();
        // An abort's reason (CANCELLED, INTERRUPTED) wins over however the abort surfaced.
        const reason: unknown = controller.signal.reason;
        const error =
          controller.signal.aborted && isExportError(reason)
            ? reason
            : toExportError(caught, record.dataset, controller.signal);
        const cancelled = error.code === 'CANCELLED';
        record.status = cancelled ? 'cancelled' : 'failed';
        record.error = cancelled ? null : { code: error.code, message: error.message };
        // A file whose succeeded manifest could not be written is never served: remove it.
        if (record.file) await store.removeFile(record.file.name).catch(() => {});
        record.file = null;
        record.finishedAt = new Date(this.#now()).toISOString();
        await this.#persist(record).catch((persistError) =>
          this.emit('warning', `Could not write the manifest of job ${record.id}`, persistError),
        );
        this.#finishMetrics(record, cancelled ? 'cancelled' : 'failed', startedAt, ran);
        if (cancelled) this.emit('job:cancelled', this.#view(record), contextOf(record));
        else this.emit('job:failed', this.#view(record), error, contextOf(record));
      } finally {
        freeSlot();
        this.#active.delete(record.id);
        resolveSettled();
      }
    };
    void run();
  }

  #finishMetrics(record: JobRecord, outcome: ExportOutcome, startedAt: number, ran: boolean): void {
    const labels = { dataset: record.dataset, format: record.format, outcome };
    this.metrics?.jobsCompleted.inc(labels);
    if (ran) this.metrics?.jobDuration.observe(labels, (this.#now() - startedAt) / 1000);
  }

  async #writeJobFile(
    record: JobRecord,
    prepared: PreparedExport,
    signal: AbortSignal,
    store: FileJobStore,
  ): Promise<void> {
    const format = prepared.format;
    // `<id>.json` is the job's manifest: a JSON export must not be written (or served) under that name.
    const extension = format.extension === 'json' ? 'data.json' : format.extension;
    const name = `${record.id}.${extension}${record.compression === 'gzip' ? '.gz' : ''}`;
    const finalPath = store.dataPath(name);
    const partPath = `${finalPath}.part`;
    const labels = { dataset: record.dataset, format: record.format };
    if (prepared.dataset.count) {
      try {
        const total = await prepared.dataset.count(prepared.params, { signal });
        record.totalRows = typeof total === 'number' && Number.isFinite(total) ? total : null;
      } catch (error) {
        this.emit('warning', `Counting rows of dataset "${record.dataset}" failed`, error);
      }
    }
    let lastProgress = 0;
    let file: WriteStream | undefined;
    try {
      const source = await openSource(prepared, signal);
      // `flush` fsyncs the file before it is closed, so the rename below publishes durable data.
      file = createWriteStream(partPath, { flags: 'wx', flush: true });
      const result = await writeExport({
        dataset: record.dataset,
        source,
        encoder: this.#encoder(prepared),
        destination: file,
        signal,
        gzip: record.compression === 'gzip',
        batchSize: this.#batchSize,
        end: true,
        hash: true,
        onProgress: (rows, bytes) => {
          record.rows += rows;
          record.bytes += bytes;
          this.metrics?.rows.inc(labels, rows);
          this.metrics?.bytes.inc(labels, bytes);
          const now = this.#now();
          if (now - lastProgress >= this.#progressIntervalMs) {
            lastProgress = now;
            this.emit('job:progress', this.#view(record), contextOf(record));
          }
        },
      });
      this.metrics?.rows.inc(labels, result.rows - record.rows);
      record.rows = result.rows;
      record.bytes = result.bytes;
      try {
        await rename(partPath, finalPath);
        await syncDirectory(store.directory);
      } catch (error) {
        throw new WriteError('Could not finish the export file', { cause: error });
      }
      record.file = {
        name,
        bytes: result.bytes,
        sha256: result.sha256 ?? '',
        contentType: contentTypeOf(prepared),
      };
    } catch (error) {
      // The file stream opens its file asynchronously: an export that fails at once can reach
      // this point before the `.part` file even exists. Wait for the stream to close first, or
      // the open would create the file again after it was removed.
      if (file && !file.closed) {
        const closed = once(file, 'close').catch(() => {});
        file.destroy();
        await closed;
      }
      // A failed cleanup is reported, but must not replace the error that ended the export.
      for (const path of [partPath, finalPath]) {
        await rm(path, { force: true }).catch((cleanupError: unknown) =>
          this.emit('warning', `Could not remove ${path} after a failed export`, cleanupError),
        );
      }
      throw error;
    }
  }

  #view(record: JobRecord): Job {
    const index = record.status === 'queued' ? this.#queue.indexOf(record.id) : -1;
    return toPublicJob(record, index === -1 ? null : index + 1);
  }

  async #find(id: string, owner: string | undefined): Promise<JobRecord> {
    // Ids are checked before anything else so that no caller-chosen text reaches the filesystem.
    if (!isJobId(id)) throw new NotFoundError('No such export job');
    await this.ready;
    const record = this.#jobs.get(id);
    if (!record || record.owner !== (owner ?? null)) throw new NotFoundError('No such export job');
    return record;
  }

  /** Manifest writes of one job happen one after another, in order. */
  #serialized(id: string, write: () => Promise<void>): Promise<void> {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(write);
    const tracked = next.finally(() => {
      if (this.#writes.get(id) === tracked) this.#writes.delete(id);
    });
    this.#writes.set(
      id,
      tracked.catch(() => {}),
    );
    return next;
  }

  #persist(record: JobRecord): Promise<void> {
    const snapshot = structuredClone(record);
    return this.#serialized(record.id, () => this.#requireStore().save(snapshot));
  }

  #addStorage(bytes: number): void {
    this.metrics?.storageBytes.inc(bytes);
  }

  async #expire(record: JobRecord, reason: 'age' | 'size', store: FileJobStore): Promise<void> {
    const file = record.file;
    // Marked before the first await, so that no other pass expires the same job again.
    record.status = 'expired';
    record.expiresAt = new Date(this.#now()).toISOString();
    if (file) {
      await store.removeFile(file.name);
      this.#addStorage(-file.bytes);
    }
    await this.#persist(record);
    this.metrics?.retentionDeletions.inc({ reason });
    this.emit('job:expired', this.#view(record), contextOf(record));
  }

  async #recover(): Promise<void> {
    const store = this.#store;
    if (!store) return;
    await store.init();
    const scan = await store.scan();
    for (const corrupt of scan.corrupt) {
      this.emit(
        'warning',
        `Moved the unreadable manifest ${corrupt.file} aside to ${corrupt.movedTo}`,
        corrupt.error,
      );
    }
    const keep = new Set<string>();
    const resume: JobRecord[] = [];
    const maxAttempts = this.#options.maxAttempts ?? 3;
    for (const record of scan.records) {
      const cutShort = record.status === 'queued' || record.status === 'running';
      // close() marks the jobs it interrupts failed/INTERRUPTED; those are re-run too.
      const interrupted = cutShort || (record.status === 'failed' && record.error?.code === 'INTERRUPTED');
      if (interrupted) {
        if (
          this.#options.resumeInterrupted &&
          record.attempts < maxAttempts &&
          this.#datasets.has(record.dataset)
        ) {
          resume.push(record);
        } else if (cutShort) {
          record.status = 'failed';
          record.error = { code: 'INTERRUPTED', message: 'The export was interrupted by a restart' };
          record.finishedAt = new Date(this.#now()).toISOString();
          record.file = null;
          await store.save(record);
        }
      }
      if (record.status === 'succeeded' && record.file) {
        const size = await store.fileSize(record.file.name);
        if (size === undefined) {
          record.status = 'expired';
          record.expiresAt = new Date(this.#now()).toISOString();
          await store.save(record);
          this.emit('warning', `The file of job ${record.id} is missing; marked expired`);
        } else {
          keep.add(record.file.name);
          this.#addStorage(record.file.bytes);
        }
      }
      this.#jobs.set(record.id, record);
    }
    // Partial files, and finished files whose manifest never said `succeeded`, are never served.
    for (const name of scan.files) {
      const owner = name.match(/^(exp_[A-Za-z0-9_-]{22})\./)?.[1];
      // Manifests moved aside earlier stay for the operator to look at.
      if (owner && !keep.has(name) && !name.endsWith('.corrupt')) await store.removeFile(name);
    }
    for (const record of resume.sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
      this.#resume(record, store);
    }
    const interval = this.#options.retention?.sweepIntervalMs ?? 60_000;
    if (this.#options.retention && !this.#closing) {
      this.#sweeper = setInterval(() => {
        this.sweep().catch((error) => this.emit('warning', 'The retention sweep failed', error));
      }, interval);
      this.#sweeper.unref();
    }
  }

  #resume(record: JobRecord, store: FileJobStore): void {
    let prepared: PreparedExport;
    try {
      prepared = this.#prepare({
        dataset: record.dataset,
        format: record.format,
        params: record.params,
        ...(record.columns ? { columns: record.columns } : {}),
        ...(record.filename ? { filename: record.filename } : {}),
        compression: record.compression,
        ...(record.csv ? { csv: record.csv } : {}),
        ...(record.owner ? { owner: record.owner } : {}),
      });
    } catch (error) {
      record.status = 'failed';
      record.error = {
        code: 'INTERRUPTED',
        message: 'The export was interrupted by a restart and can no longer run',
      };
      record.finishedAt = new Date(this.#now()).toISOString();
      void this.#persist(record);
      this.emit('warning', `Job ${record.id} could not be resumed`, error);
      return;
    }
    record.status = 'queued';
    record.rows = 0;
    record.bytes = 0;
    record.startedAt = null;
    record.error = null;
    record.finishedAt = null;
    const controller = new AbortController();
    const admission =
      this.#semaphore.tryAcquire() ??
      this.#semaphore.acquire({
        ignoreQueueLimit: true,
        signal: controller.signal,
        ...(this.#options.queueTimeoutMs !== undefined ? { timeoutMs: this.#options.queueTimeoutMs } : {}),
      });
    this.#launch(record, prepared, admission, store, controller);
    void this.#persist(record);
  }
}

function contextOf(record: JobRecord): JobEventContext {
  return { owner: record.owner ?? undefined };
}

function toExportError(error: unknown, dataset: string, signal: AbortSignal): ExportError {
  if (isExportError(error)) return error;
  if (signal.aborted && isExportError(signal.reason)) return signal.reason;
  return new SourceError(dataset, { cause: error });
}

/** A promise that rejects when `signal` aborts; if the admission still arrives later, its slot is given back. */
function abortPromise(signal: AbortSignal | undefined, admission: Promise<Release>): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (!signal) return;
    const onAbort = () => {
      // The queued acquire may still resolve; hand that slot straight back.
      admission.then(
        (release) => release(),
        () => {},
      );
      reject(
        isExportError(signal.reason)
          ? signal.reason
          : new CancelledError(undefined, { cause: signal.reason }),
      );
    };
    if (signal.aborted) onAbort();
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      admission.then(
        () => signal.removeEventListener('abort', onAbort),
        () => signal.removeEventListener('abort', onAbort),
      );
    }
  });
}

async function openSource(prepared: PreparedExport, signal: AbortSignal) {
  try {
    return await prepared.dataset.source(prepared.params, {
      signal,
      columns: prepared.columns?.map((column) => column.name),
    });
  } catch (error) {
    throw toExportError(error, prepared.dataset.name, signal);
  }
}

function contentTypeOf(prepared: { format: Format; compression: Compression }): string {
  return prepared.compression === 'gzip' ? 'application/gzip' : prepared.format.contentType;
}

function downloadName(
  requested: string | undefined,
  prepared: { dataset: { name: string }; format: Format; compression: Compression },
  createdAtMs: number,
): string {
  const extension = `.${prepared.format.extension}${prepared.compression === 'gzip' ? '.gz' : ''}`;
  if (requested) return requested.toLowerCase().endsWith(extension) ? requested : `${requested}${extension}`;
  const stamp = new Date(createdAtMs)
    .toISOString()
    .replace(/[:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${prepared.dataset.name}-${stamp}${extension}`;
}

function newestFirst(a: Pick<JobRecord, 'createdAt' | 'id'>, b: Pick<JobRecord, 'createdAt' | 'id'>): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function encodeCursor(record: JobRecord): string {
  return Buffer.from(JSON.stringify([record.createdAt, record.id])).toString('base64url');
}

function decodeCursor(cursor: string): Pick<JobRecord, 'createdAt' | 'id'> {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof createdAt === 'string' && isJobId(id)) return { createdAt, id };
  } catch {
    // fall through
  }
  throw new ValidationError('Expected cursor to be a value of nextCursor from a previous page', {
    field: 'cursor',
    statusCode: 400,
  });
}

async function syncDirectory(directory: string): Promise<void> {
  // Makes the rename durable. Some platforms cannot open directories; the rename is still atomic there.
  const handle = await open(directory, 'r').catch(() => undefined);
  if (!handle) return;
  try {
    await handle.sync();
  } catch {
    // EISDIR/EINVAL on some filesystems: nothing more we can do.
  } finally {
    await handle.close();
  }
}

function checkInteger(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`Expected ${name} to be an integer >= ${min}, got ${describeValue(value)}`);
  }
  return value;
}

function checkOptionalString(name: string, value: unknown, maxLength: number): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value === '' || value.length > maxLength) {
    throw new ValidationError(
      `Expected ${name} to be a non-empty string of at most ${maxLength} characters, got ${describeValue(value)}`,
      { field: name, statusCode: 400 },
    );
  }
  return value;
}

function isExportMetrics(value: unknown): value is ExportMetrics {
  return typeof value === 'object' && value !== null && 'jobsStarted' in value && 'registry' in value;
}
