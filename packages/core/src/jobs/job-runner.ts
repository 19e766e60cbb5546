import type { Ticket } from '../admission/admission.js';
import type { Release } from '../admission/limiter.js';
import { type ExportError, isExportError, WriteError } from '../errors.js';
import { runExport, toExportError } from '../pipeline/run-export.js';
import type { ExportTelemetry } from '../pipeline/telemetry.js';
import type { ExportTimeLimits } from '../pipeline/time-limits.js';
import { contentTypeOf, extensionOf, type PreparedExport } from '../request.js';
import type { EmitEvent, JobEventContext } from '../types.js';
import type { ExportStorage } from './export-storage.js';
import { type Job, type JobRecord, toPublicJob } from './job.js';
import type { JobStore } from './job-store.js';

export interface JobRunnerOptions {
  store: JobStore;
  storage: ExportStorage;
  telemetry: ExportTelemetry;
  batchSize: number;
  /** The manager's time limits (a dataset's own win). */
  limits: ExportTimeLimits;
  progressIntervalMs: number;
  /** With retention by age: when a succeeded file expires. */
  maxAgeMs: number | undefined;
  now: () => number;
  emit: EmitEvent;
  /** Bytes added to (or, negative, removed from) storage. */
  onStoredBytes: (delta: number) => void;
}

interface ActiveJob {
  record: JobRecord;
  controller: AbortController;
  /** Settles when the job reached a finished status and its files are in order. */
  settled: Promise<void>;
  /** Told with each `job:progress` of the job (a shared queue stores and publishes it). */
  onProgress: ((record: JobRecord) => void) | undefined;
}

/**
 * Runs admitted jobs in this process: queued -> running -> succeeded | failed | cancelled,
 * with progress, persistence at every transition, and the file written through the storage.
 * The live record of an active job is here; the store has it as of its last transition.
 */
export class JobRunner {
  readonly #options: JobRunnerOptions;
  readonly #active = new Map<string, ActiveJob>();
  /** Queued job ids in FIFO order, for `queuePosition`. */
  readonly #queue: string[] = [];

  constructor(options: JobRunnerOptions) {
    this.#options = options;
  }

  /** The live record of a job queued or running here. */
  active(id: string): JobRecord | undefined {
    return this.#active.get(id)?.record;
  }

  /** A record as clients see it, with its queue position when it waits here. */
  view(record: JobRecord): Job {
    const index = record.status === 'queued' ? this.#queue.indexOf(record.id) : -1;
    return toPublicJob(record, index === -1 ? null : index + 1);
  }

  /** Settles once the job is finished; `undefined` when it is not active here. */
  settled(id: string): Promise<void> | undefined {
    return this.#active.get(id)?.settled;
  }

  /** Aborts an active job with `reason` and waits for it to settle. */
  async abort(id: string, reason: ExportError): Promise<void> {
    const active = this.#active.get(id);
    if (!active) return;
    active.controller.abort(reason);
    await active.settled;
  }

  /** Aborts the queued jobs (at shutdown, before the queue closes). */
  abortQueued(reason: () => ExportError): void {
    for (const id of [...this.#queue]) this.#active.get(id)?.controller.abort(reason());
  }

  /** Aborts every active job. */
  abortAll(reason: () => ExportError): void {
    for (const active of this.#active.values()) active.controller.abort(reason());
  }

  /** Settles when every job active now has settled. */
  idle(): Promise<unknown> {
    return Promise.allSettled([...this.#active.values()].map((active) => active.settled));
  }

  /**
   * Runs a stored job. `controller` must be the one whose signal the ticket's queue wait
   * listens to, so that cancelling a queued job gives its place back at once.
   */
  launch(
    record: JobRecord,
    prepared: PreparedExport,
    ticket: Ticket,
    controller: AbortController,
    onProgress?: (record: JobRecord) => void,
  ): void {
    let resolveSettled!: () => void;
    const settled = new Promise<void>((resolve) => {
      resolveSettled = resolve;
    });
    this.#active.set(record.id, { record, controller, settled, onProgress });
    void this.#run(record, prepared, ticket, controller).finally(() => {
      this.#active.delete(record.id);
      resolveSettled();
    });
  }

  async #run(
    record: JobRecord,
    prepared: PreparedExport,
    ticket: Ticket,
    controller: AbortController,
  ): Promise<void> {
    const { signal } = controller;
    const { store, telemetry, emit, now } = this.#options;
    const tracker = telemetry.track({ dataset: record.dataset, format: record.format });
    const context = eventContext(record);
    let release: Release | undefined;
    // The slot (and the owner's share) is given back as soon as the data is written or the
    // export failed, before the manifest write: a client that sees the job finished and asks
    // again must find the slot free.
    const onLost = () => controller.abort(release?.signal?.reason);
    const freeSlot = () => {
      release?.signal?.removeEventListener('abort', onLost);
      release?.();
      release = undefined;
    };
    let startedAt: number | undefined;
    try {
      if (ticket.queued) {
        this.#queue.push(record.id);
        emit('job:queued', this.view(record), context);
        try {
          release = await ticket.slot;
        } finally {
          this.#queue.splice(this.#queue.indexOf(record.id), 1);
        }
      } else {
        release = ticket.release;
      }
      // A shared limiter's permit can be lost (its lease expired): the job ends with its reason.
      release.signal?.addEventListener('abort', onLost, { once: true });
      startedAt = now();
      record.status = 'running';
      record.startedAt = new Date(startedAt).toISOString();
      record.attempts++;
      await store.save(record);
      emit('job:started', this.view(record), context);
      await this.#writeFile(record, prepared, signal, (rows, bytes) => tracker.progress(rows, bytes));
      tracker.rowsTotal(record.rows);
      freeSlot();
      const finishedAt = now();
      const { maxAgeMs } = this.#options;
      // The job only becomes `succeeded` (and its file servable) once the store says so.
      const finished: JobRecord = {
        ...record,
        status: 'succeeded',
        finishedAt: new Date(finishedAt).toISOString(),
        expiresAt: maxAgeMs === undefined ? null : new Date(finishedAt + maxAgeMs).toISOString(),
      };
      await store.save(finished);
      Object.assign(record, finished);
      this.#options.onStoredBytes(record.file?.bytes ?? 0);
      tracker.finish('succeeded', finishedAt - startedAt);
      emit('job:succeeded', this.view(record), context);
    } catch (caught) {
      freeSlot();
      // An abort's reason (CANCELLED, INTERRUPTED) wins over however the abort surfaced.
      const reason: unknown = signal.reason;
      const error =
        signal.aborted && isExportError(reason) ? reason : toExportError(caught, record.dataset, signal);
      const cancelled = error.code === 'CANCELLED';
      record.status = cancelled ? 'cancelled' : 'failed';
      record.error = cancelled ? null : { code: error.code, message: error.message };
      // A file whose succeeded record could not be stored is never served: remove it.
      if (record.file) await this.#options.storage.remove(record.file.name).catch(() => {});
      record.file = null;
      record.finishedAt = new Date(now()).toISOString();
      await store.save(record).catch((persistError: unknown) => {
        emit('warning', `Could not store the failed state of job ${record.id}`, persistError);
      });
      tracker.finish(
        cancelled ? 'cancelled' : 'failed',
        startedAt === undefined ? undefined : now() - startedAt,
      );
      if (cancelled) emit('job:cancelled', this.view(record), context);
      else emit('job:failed', this.view(record), error, context);
    } finally {
      freeSlot();
    }
  }

  async #writeFile(
    record: JobRecord,
    prepared: PreparedExport,
    signal: AbortSignal,
    onProgress: (rows: number, bytes: number) => void,
  ): Promise<void> {
    const { storage, emit, now } = this.#options;
    if (prepared.dataset.count) {
      try {
        const total = await prepared.dataset.count(prepared.params, { signal });
        record.totalRows = typeof total === 'number' && Number.isFinite(total) ? total : null;
      } catch (error) {
        emit('warning', `Counting rows of dataset "${record.dataset}" failed`, error);
      }
    }
    const contentType = contentTypeOf(prepared);
    const write = await storage.createWrite(record.id, {
      extension: extensionOf(prepared),
      contentType,
      // Not the first run: the one before may have left a partial write.
      replace: record.attempts > 1,
    });
    let lastProgress = 0;
    try {
      const result = await runExport(prepared, write.stream, {
        signal,
        batchSize: this.#options.batchSize,
        limits: this.#options.limits,
        kind: 'job',
        end: true,
        hash: true,
        onProgress: (rows, bytes) => {
          record.rows += rows;
          record.bytes += bytes;
          onProgress(rows, bytes);
          const at = now();
          if (at - lastProgress >= this.#options.progressIntervalMs) {
            lastProgress = at;
            emit('job:progress', this.view(record), eventContext(record));
            this.#active.get(record.id)?.onProgress?.(record);
          }
        },
      });
      record.rows = result.rows;
      record.bytes = result.bytes;
      const file = { name: write.name, bytes: result.bytes, sha256: result.sha256 ?? '', contentType };
      try {
        await write.commit(file);
      } catch (error) {
        throw new WriteError('Could not finish the export file', { cause: error });
      }
      record.file = file;
    } catch (error) {
      // A failed cleanup is reported, but must not replace the error that ended the export.
      await write
        .abort()
        .catch((cleanupError: unknown) =>
          emit('warning', `Could not remove the partial file of job ${record.id}`, cleanupError),
        );
      throw error;
    }
  }
}

/** What job events tell beside the job: its owner and `notify` tag. */
export function eventContext(record: JobRecord): JobEventContext {
  return { owner: record.owner ?? undefined, ...(record.notify ? { notify: record.notify } : {}) };
}
