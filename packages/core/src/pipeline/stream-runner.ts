import { PassThrough, type Writable } from 'node:stream';
import type { Admission } from '../admission/admission.js';
import type { Release } from '../admission/limiter.js';
import { CancelledError, type ExportError, isExportError } from '../errors.js';
import type { ExportOutcome } from '../metrics.js';
import { contentTypeOf, downloadName, type PreparedExport } from '../request.js';
import type { EmitEvent, ExportResult, OpenedExport, OpenOptions } from '../types.js';
import { runExport, toExportError } from './run-export.js';
import type { ExportTelemetry } from './telemetry.js';
import type { ExportTimeLimits } from './time-limits.js';

export interface StreamRunnerOptions {
  admission: Admission;
  telemetry: ExportTelemetry;
  batchSize: number;
  /** The manager's time limits (a dataset's own win). */
  limits: ExportTimeLimits;
  /** Longest wait of a queued stream for a slot. */
  queueTimeoutMs: number | undefined;
  now: () => number;
  emit: EmitEvent;
}

interface RunningStream {
  controller: AbortController;
  done: Promise<unknown>;
}

/**
 * Exports streamed straight to a caller (an HTTP response, a file, stdout), under the same
 * admission, metrics and shutdown as jobs.
 */
export class StreamRunner {
  readonly #options: StreamRunnerOptions;
  readonly #running = new Set<RunningStream>();

  constructor(options: StreamRunnerOptions) {
    this.#options = options;
  }

  /** Exports into `destination`; resolves or rejects when the export ended. */
  async stream(
    prepared: PreparedExport,
    destination: Writable,
    options: { signal?: AbortSignal | undefined; end?: boolean },
  ): Promise<ExportResult> {
    const release = await this.#acquire(prepared, options.signal);
    return this.#run(prepared, release, destination, options.signal, options.end ?? true);
  }

  /** Takes a slot, then hands back a readable body; destroying it aborts the export and frees the slot. */
  async open(prepared: PreparedExport, options: OpenOptions): Promise<OpenedExport> {
    // On-the-wire coding only for an uncompressed export: a `.gz` file is not gzipped twice.
    const contentEncoding = prepared.compression === 'none' ? options.contentEncoding : undefined;
    const release = await this.#acquire(prepared, options.signal);
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
    // The same pipeline compresses, with its flushes for slow sources; the type stays the format's.
    const running = contentEncoding === undefined ? prepared : { ...prepared, compression: contentEncoding };
    const run = this.#run(running, release, body, controller.signal, true, () => firstBytes());
    const done = run.then(
      (result) => result,
      (error: unknown) => {
        body.destroy(isExportError(error) && error.code === 'CANCELLED' ? undefined : (error as Error));
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
      contentEncoding,
      filename: downloadName(prepared.filename, prepared, this.#options.now()),
      ready,
      done,
    };
  }

  /** Aborts every running stream. */
  abortAll(reason: () => ExportError): void {
    for (const stream of this.#running) stream.controller.abort(reason());
  }

  /** Settles when every stream running now has ended. */
  idle(): Promise<unknown> {
    return Promise.allSettled([...this.#running].map((stream) => stream.done));
  }

  async #acquire(prepared: PreparedExport, signal: AbortSignal | undefined): Promise<Release> {
    if (signal?.aborted) throw new CancelledError(undefined, { cause: signal.reason });
    const ticket = await this.#options.admission.admit(
      { dataset: prepared.dataset.name, owner: prepared.owner, kind: 'stream' },
      { signal, queueTimeoutMs: this.#options.queueTimeoutMs },
    );
    return ticket.queued ? ticket.slot : ticket.release;
  }

  #run(
    prepared: PreparedExport,
    release: Release,
    destination: Writable,
    signal: AbortSignal | undefined,
    end: boolean,
    onFirstBytes?: () => void,
  ): Promise<ExportResult> {
    const { telemetry, emit, now } = this.#options;
    const labels = { dataset: prepared.dataset.name, format: prepared.format.name };
    const controller = new AbortController();
    const onAbort = () => controller.abort(new CancelledError('The client went away'));
    signal?.addEventListener('abort', onAbort, { once: true });
    // A shared limiter's permit can be lost (its lease expired): the export ends with its reason.
    const lost = release.signal;
    const onLost = () => controller.abort(lost?.reason);
    lost?.addEventListener('abort', onLost, { once: true });
    const started = now();
    const tracker = telemetry.track(labels);
    emit('stream:started', { ...labels, owner: prepared.owner });
    let outcome: ExportOutcome = 'failed';
    let rows = 0;
    let bytes = 0;
    let failure: ExportError | undefined;
    const entry: RunningStream = { controller, done: Promise.resolve() };
    const run = (async () => {
      try {
        const result = await runExport(prepared, destination, {
          signal: controller.signal,
          batchSize: this.#options.batchSize,
          limits: this.#options.limits,
          kind: 'stream',
          end,
          hash: false,
          onProgress: (addedRows, addedBytes) => {
            if (bytes === 0) onFirstBytes?.();
            rows += addedRows;
            bytes += addedBytes;
            tracker.progress(addedRows, addedBytes);
          },
        });
        tracker.rowsTotal(result.rows);
        rows = result.rows;
        outcome = 'succeeded';
        return result;
      } catch (error) {
        failure = toExportError(error, prepared.dataset.name, controller.signal);
        outcome = failure.code === 'CANCELLED' ? 'cancelled' : 'failed';
        if (!destination.destroyed && end) destination.destroy();
        throw failure;
      } finally {
        signal?.removeEventListener('abort', onAbort);
        lost?.removeEventListener('abort', onLost);
        release();
        const durationMs = now() - started;
        tracker.finish(outcome, durationMs);
        this.#running.delete(entry);
        emit('stream:finished', {
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
    this.#running.add(entry);
    return run;
  }
}
