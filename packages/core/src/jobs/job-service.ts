import type { Admission } from '../admission/admission.js';
import {
  CancelledError,
  isExportError,
  JobStateError,
  NotFoundError,
  ValidationError,
  WriteError,
} from '../errors.js';
import { getFormat } from '../formats/index.js';
import type { ExportMetrics } from '../metrics.js';
import {
  contentTypeOf,
  downloadNameOfRecord,
  extensionOf,
  type PreparedExport,
  type RequestFields,
  recordOfRequest,
  requestOfRecord,
  sameRequest,
} from '../request.js';
import type { CallerOptions, EmitEvent, JobFileInfo, ListOptions } from '../types.js';
import type { ExportStorage } from './export-storage.js';
import { createJobId, FINISHED_STATUSES, isJobId, type Job, type JobRecord, parseJobQuery } from './job.js';
import type { JobQueue, JobQueueRuntime, JobRunOutcome } from './job-queue.js';
import type { JobRunner } from './job-runner.js';
import type { JobStore } from './job-store.js';
import { LocalExportStorage } from './local-storage.js';
import { recover } from './recovery.js';
import { type RetentionOptions, sweep } from './retention.js';

export interface JobServiceOptions {
  store: JobStore;
  storage: ExportStorage;
  runner: JobRunner;
  /** Where and when jobs run; `undefined`: here, as soon as admission lets them. */
  queue: JobQueue | undefined;
  admission: Admission;
  metrics: ExportMetrics | undefined;
  queueTimeoutMs: number | undefined;
  retention: RetentionOptions;
  resumeInterrupted: boolean;
  maxAttempts: number;
  now: () => number;
  emit: EmitEvent;
  /** Checks a stored request again (to resume it); throws when it can no longer run. */
  prepare: (request: ReturnType<typeof requestOfRecord>) => PreparedExport;
  hasDataset: (name: string) => boolean;
}

/**
 * Jobs as the manager offers them: `start()` produces (admission, the record, the runner),
 * the queries read the store (with the live state of jobs running here), and recovery and
 * retention keep the store and the storage in order.
 */
export class JobService {
  readonly #options: JobServiceOptions;
  /** Starts under way per owner and idempotency key. */
  readonly #starting = new Map<string, Promise<Job>>();
  #sweeping: Promise<unknown> = Promise.resolve();

  constructor(options: JobServiceOptions) {
    this.#options = options;
  }

  get runner(): JobRunner {
    return this.#options.runner;
  }

  start(prepared: PreparedExport): Promise<Job> {
    const fields = recordOfRequest(prepared);
    if (fields.idempotencyKey === null) return this.#start(prepared, fields);
    // Starts with one owner and key run one after another here, so the second finds the first's
    // job instead of racing it for a slot; across processes the store's create() decides.
    const key = JSON.stringify([fields.owner, fields.idempotencyKey]);
    const next = (this.#starting.get(key) ?? Promise.resolve())
      .catch(() => {})
      .then(() => this.#start(prepared, fields));
    this.#starting.set(key, next);
    const forget = () => {
      if (this.#starting.get(key) === next) this.#starting.delete(key);
    };
    next.then(forget, forget);
    return next;
  }

  async findByIdempotencyKey(key: string, options: CallerOptions): Promise<Job | undefined> {
    const record = await this.#options.store.findByIdempotencyKey(options.owner ?? null, key);
    return record && this.#view(record);
  }

  async wait(id: string, options: CallerOptions & { signal?: AbortSignal }): Promise<Job> {
    const record = await this.#find(id, options.owner);
    const settled = this.runner.settled(record.id);
    if (settled) {
      const signal = options.signal;
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal?.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        void settled.then(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
    return this.get(id, options);
  }

  async get(id: string, options: CallerOptions): Promise<Job> {
    return this.#view(await this.#find(id, options.owner));
  }

  async list(options: ListOptions): Promise<{ jobs: Job[]; nextCursor: string | null }> {
    const page = await this.#options.store.list(parseJobQuery(options));
    const last = page.records.at(-1);
    return {
      jobs: page.records.map((record) => this.#view(record)),
      nextCursor: page.more && last ? encodeCursor(last) : null,
    };
  }

  async cancel(id: string, options: CallerOptions): Promise<Job> {
    const record = await this.#find(id, options.owner);
    await this.#stop(record);
    return this.get(id, options);
  }

  async delete(id: string, options: CallerOptions): Promise<void> {
    const { store, storage, metrics } = this.#options;
    const record = await this.#find(id, options.owner);
    await this.#stop(record);
    const current = (await store.get(record.id)) ?? record;
    if (current.file && current.status === 'succeeded') {
      await storage.remove(current.file.name);
      metrics?.storageBytes.dec(current.file.bytes);
    }
    await store.remove(record.id);
  }

  async file(id: string, options: CallerOptions & { urlExpiresInSeconds?: number }): Promise<JobFileInfo> {
    const { storage, emit } = this.#options;
    const record = await this.#find(id, options.owner);
    if (record.status === 'expired') {
      throw new JobStateError('JOB_EXPIRED', 'The export file has expired and was deleted');
    }
    const file = record.file;
    if (record.status !== 'succeeded' || !file) {
      throw new JobStateError(
        'JOB_NOT_READY',
        `The export is ${record.status}, not succeeded; its file is not available`,
      );
    }
    const stat = await storage.stat(file.name);
    if (stat === undefined) throw new JobStateError('JOB_EXPIRED', 'The export file is gone');
    if (stat.bytes !== file.bytes) {
      emit('warning', `The file of job ${record.id} has ${stat.bytes} bytes, not ${file.bytes}; not served`);
      throw new JobStateError('JOB_FILE_CORRUPT', 'The export file is damaged; start the export again');
    }
    const filename = downloadNameOfRecord(record);
    const url = await storage.downloadUrl?.(file.name, {
      filename,
      contentType: file.contentType,
      expiresInSeconds: options.urlExpiresInSeconds ?? 300,
    });
    return {
      job: this.#view(record),
      name: file.name,
      ...(storage instanceof LocalExportStorage ? { path: storage.pathOf(file.name) } : {}),
      size: stat.bytes,
      contentType: file.contentType,
      filename,
      sha256: file.sha256,
      read: (range) =>
        storage.read(file.name, range).catch((error: unknown) => {
          throw new JobStateError('JOB_EXPIRED', 'The export file is gone', { cause: error });
        }),
      ...(url ? { url } : {}),
    };
  }

  /** One retention pass; passes never overlap. */
  sweep(): Promise<{ expired: number; forgotten: number }> {
    const { store, storage, metrics, now, emit, retention } = this.#options;
    const pass = this.#sweeping
      .catch(() => {})
      .then(() =>
        sweep(retention, {
          store,
          storage,
          metrics,
          now,
          emit,
          onStoredBytes: (delta) => metrics?.storageBytes.inc(delta),
          view: (record) => this.#view(record),
        }),
      );
    this.#sweeping = pass;
    return pass;
  }

  /**
   * Reads the stored jobs at start-up and resumes the interrupted ones (see {@link recover}).
   * With a queue, the queue recovers instead: other processes may be running the unfinished
   * jobs of a shared store, and the queue knows which of them were cut short.
   */
  async recover(): Promise<void> {
    const { store, storage, now, emit, metrics, maxAttempts, queue } = this.#options;
    if (queue) {
      await storage.open();
      await store.open();
      await queue.open(this.#runtime());
      return;
    }
    const resume = await recover({
      store,
      storage,
      now,
      emit,
      onStoredBytes: (delta) => metrics?.storageBytes.inc(delta),
      canResume: (record) =>
        this.#options.resumeInterrupted &&
        record.attempts < maxAttempts &&
        this.#options.hasDataset(record.dataset),
    });
    for (const record of resume) await this.#resume(record);
  }

  /** Lets the last sweep and the store's pending writes land. */
  async close(): Promise<void> {
    await Promise.allSettled([this.#sweeping, this.#options.store.close()]);
  }

  async #start(prepared: PreparedExport, fields: RequestFields): Promise<Job> {
    const { store, runner, admission, queue } = this.#options;
    const existing = await this.#idempotent(fields);
    if (existing) return existing;
    if (queue) return this.#enqueue(queue, fields);
    // The job's signal goes to the queue too, so that cancelling a queued job gives its place back at once.
    const controller = new AbortController();
    const ticket = await admission.admit(
      { dataset: fields.dataset, owner: prepared.owner, kind: 'job' },
      { signal: controller.signal, queueTimeoutMs: this.#options.queueTimeoutMs },
    );
    const giveBack = (why: string) => {
      controller.abort(new CancelledError(why));
      if (!ticket.queued) ticket.release();
    };
    const record = newRecord(fields, this.#options.now());
    let created: { record: JobRecord; created: boolean };
    try {
      created = await store.create(record);
    } catch (error) {
      giveBack('The job could not be stored');
      throw WriteError.fromStorage('Could not store the export job', error);
    }
    if (!created.created) {
      // Another process started a job with this key first: answer with that one.
      giveBack('A job with this idempotency key exists');
      return this.#checkReuse(created.record, fields);
    }
    runner.launch(record, prepared, ticket, controller);
    return runner.view(record);
  }

  /** Stores the job and hands it to the queue, which runs it here or in another process. */
  async #enqueue(queue: JobQueue, fields: RequestFields): Promise<Job> {
    const { store, admission } = this.#options;
    if (admission.closed) throw admission.refuse('shutting_down', subjectOf(fields));
    const record = newRecord(fields, this.#options.now());
    let created: { record: JobRecord; created: boolean };
    try {
      created = await store.create(record);
    } catch (error) {
      throw WriteError.fromStorage('Could not store the export job', error);
    }
    // Another process started a job with this key first: answer with that one.
    if (!created.created) return this.#checkReuse(created.record, fields);
    try {
      await queue.enqueue(record);
    } catch (error) {
      // Refused or not queued: no job exists, so a retry with the same key starts afresh.
      await store.remove(record.id).catch((removeError: unknown) => {
        this.#options.emit('warning', `Could not remove the refused job ${record.id}`, removeError);
      });
      // A queue that cannot be reached (Redis down) is a 503, like a store that cannot be written.
      throw isExportError(error) ? error : WriteError.fromStorage('Could not queue the export job', error);
    }
    this.#options.emit('job:queued', this.runner.view(record), { owner: record.owner ?? undefined });
    return this.runner.view(record);
  }

  /** Cancels a job: through the queue (wherever it runs), else here. */
  async #stop(record: JobRecord): Promise<void> {
    const { queue } = this.#options;
    if (queue) await queue.cancel(record.id, new CancelledError());
    else await this.runner.abort(record.id, new CancelledError());
  }

  /** What a queue runs jobs with. */
  #runtime(): JobQueueRuntime {
    const { admission, emit, retention, maxAttempts } = this.#options;
    return {
      run: (id, options) => this.#runQueued(id, options),
      settle: (id, outcome) => this.#settle(id, outcome),
      refuse: (reason) => admission.refuse(reason, { dataset: '', owner: undefined, kind: 'job' }),
      sweepIntervalMs: retention.sweepIntervalMs ?? 60_000,
      maxAttempts,
      warn: (message, cause) => emit('warning', message, cause),
    };
  }

  async #runQueued(
    id: string,
    options: { signal: AbortSignal; onProgress?: (progress: { rows: number; bytes: number }) => void },
  ): Promise<JobRunOutcome> {
    const { store, runner, admission, now, emit } = this.#options;
    // A queue that hands this process a job it still runs (its lock was lost and the job taken
    // back) must not start a second run beside the first: that run ends, the queue retries.
    if (runner.active(id)) throw new Error(`Job ${id} is already running in this process`);
    const record = await store.get(id);
    if (!record) return undefined;
    // Finished by an earlier run (whose process died before the queue heard of it): never run twice.
    const rerun = record.status === 'failed' && record.error?.code === 'INTERRUPTED';
    if (FINISHED_STATUSES.has(record.status) && !rerun) return outcomeOf(record);
    if (admission.closed) throw admission.refuse('shutting_down', subjectOf(record));
    let prepared: PreparedExport;
    try {
      prepared = this.#options.prepare(requestOfRecord(record));
    } catch (error) {
      // Its dataset was removed or its params no longer pass: a lasting failure, not an interruption.
      const failure = isExportError(error)
        ? error
        : new ValidationError('The stored export request can no longer run', { cause: error });
      record.status = 'failed';
      record.error = { code: failure.code, message: failure.message };
      record.finishedAt = new Date(now()).toISOString();
      await store.save(record);
      emit('job:failed', this.runner.view(record), failure, { owner: record.owner ?? undefined });
      return outcomeOf(record);
    }
    Object.assign(record, {
      status: 'queued',
      rows: 0,
      bytes: 0,
      startedAt: null,
      error: null,
      finishedAt: null,
    });
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal.reason);
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const ticket = await admission.admit(
        { dataset: record.dataset, owner: prepared.owner, kind: 'job' },
        { signal: controller.signal, queueTimeoutMs: this.#options.queueTimeoutMs, readmit: true },
      );
      // Other processes read the store: progress is written there too (every progressIntervalMs).
      runner.launch(record, prepared, ticket, controller, (live) => {
        store
          .save(live)
          .catch((error: unknown) => emit('warning', `Could not store the progress of job ${id}`, error));
        options.onProgress?.({ rows: live.rows, bytes: live.bytes });
      });
      await runner.settled(id);
    } finally {
      options.signal.removeEventListener('abort', onAbort);
    }
    return outcomeOf(record);
  }

  async #settle(
    id: string,
    outcome: { status: 'cancelled' } | { status: 'failed'; error: { code: string; message: string } },
  ): Promise<void> {
    const { store, now, emit } = this.#options;
    const record = await store.get(id);
    if (!record || FINISHED_STATUSES.has(record.status)) return;
    // A run that died mid-export may have left a partial write under the job's name.
    if (record.status === 'running') await this.#discardPartial(record);
    record.status = outcome.status;
    record.error = outcome.status === 'failed' ? { ...outcome.error } : null;
    record.file = null;
    record.finishedAt = new Date(now()).toISOString();
    await store.save(record);
    const context = { owner: record.owner ?? undefined };
    if (outcome.status === 'cancelled') emit('job:cancelled', this.runner.view(record), context);
    else {
      const error = new CancelledError(outcome.error.message, { code: 'INTERRUPTED' });
      emit('job:failed', this.runner.view(record), error, context);
    }
  }

  /** Replaces whatever partial write a dead run of `record` left with an empty one, and throws that away. */
  async #discardPartial(record: JobRecord): Promise<void> {
    const { storage, emit } = this.#options;
    try {
      const target = { format: getFormat(record.format), compression: record.compression };
      const write = await storage.createWrite(record.id, {
        extension: extensionOf(target),
        contentType: contentTypeOf(target),
        replace: true,
      });
      await write.abort();
    } catch (error) {
      emit('warning', `Could not remove the partial file of job ${record.id}`, error);
    }
  }

  async #idempotent(fields: RequestFields): Promise<Job | undefined> {
    if (fields.idempotencyKey === null) return undefined;
    const existing = await this.#options.store.findByIdempotencyKey(fields.owner, fields.idempotencyKey);
    return existing && this.#checkReuse(existing, fields);
  }

  #checkReuse(existing: JobRecord, fields: RequestFields): Job {
    if (!sameRequest(existing, fields)) {
      throw new ValidationError('This Idempotency-Key was already used for a different export request', {
        field: 'idempotencyKey',
        code: 'IDEMPOTENCY_KEY_REUSED',
      });
    }
    return this.#view(existing);
  }

  #view(record: JobRecord): Job {
    return this.runner.view(this.runner.active(record.id) ?? record);
  }

  async #find(id: string, owner: string | undefined): Promise<JobRecord> {
    // Ids are checked before anything else so that no caller-chosen text reaches the store.
    if (!isJobId(id)) throw new NotFoundError('No such export job');
    const record = this.runner.active(id) ?? (await this.#options.store.get(id));
    if (!record || record.owner !== (owner ?? null)) throw new NotFoundError('No such export job');
    return record;
  }

  /** Admits and launches an interrupted job again. Its record is written in the background, as the job runs on. */
  async #resume(record: JobRecord): Promise<void> {
    const { store, runner, admission, now, emit } = this.#options;
    let prepared: PreparedExport;
    try {
      prepared = this.#options.prepare(requestOfRecord(record));
    } catch (error) {
      record.status = 'failed';
      record.error = {
        code: 'INTERRUPTED',
        message: 'The export was interrupted by a restart and can no longer run',
      };
      record.finishedAt = new Date(now()).toISOString();
      emit('warning', `Job ${record.id} could not be resumed`, error);
      await store.save(record);
      return;
    }
    Object.assign(record, {
      status: 'queued',
      rows: 0,
      bytes: 0,
      startedAt: null,
      error: null,
      finishedAt: null,
    });
    const controller = new AbortController();
    const ticket = await admission.admit(
      { dataset: record.dataset, owner: prepared.owner, kind: 'job' },
      { signal: controller.signal, queueTimeoutMs: this.#options.queueTimeoutMs, readmit: true },
    );
    runner.launch(record, prepared, ticket, controller);
    store
      .save(record)
      .catch((error) => emit('warning', `Could not store the resumed job ${record.id}`, error));
  }
}

function newRecord(fields: RequestFields, now: number): JobRecord {
  return {
    version: 1,
    id: createJobId(),
    status: 'queued',
    ...fields,
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
}

function outcomeOf(record: JobRecord): JobRunOutcome {
  return { id: record.id, status: record.status, error: record.error ? { ...record.error } : null };
}

function subjectOf(fields: Pick<RequestFields, 'dataset' | 'owner'>) {
  return { dataset: fields.dataset, owner: fields.owner ?? undefined, kind: 'job' as const };
}

function encodeCursor(record: JobRecord): string {
  return Buffer.from(JSON.stringify([record.createdAt, record.id])).toString('base64url');
}
