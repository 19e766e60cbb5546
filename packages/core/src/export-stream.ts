import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { createGzip } from 'node:zlib';
import type { RowSource } from './dataset.js';
import {
  CancelledError,
  describeValue,
  isExportError,
  SourceError,
  TimeLimitError,
  WriteError,
} from './errors.js';
import type { RowEncoder } from './formats/types.js';
import { closeSource, readBatches } from './sources.js';

/** Encoded text is handed to the destination in chunks of about this many characters... */
const CHUNK_CHARS = 64 * 1024;
/**
 * ...or sooner, once this long has passed since the last chunk: rows of a slow source reach
 * the client (and an HTTP response gets its headers) without waiting for 64 KiB.
 */
const FLUSH_AFTER_MS = 100;

/** No row for this long from a source that is being read: the source is stuck. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** Nothing drained for this long by a destination that has data waiting: the client stopped reading. */
export const DEFAULT_STALL_TIMEOUT_MS = 60_000;

/**
 * Time limits of an export. Each ends the export with a {@link TimeLimitError}, frees its slot
 * and, for a job, removes its partial file; the export counts as `failed`. `0` turns a limit off.
 */
export interface ExportTimeLimits {
  /**
   * Longest an export may run once it holds a slot (opening the source included); then it
   * fails with `EXPORT_TIMEOUT` (504). Streams and jobs alike; a dataset's own
   * `maxDurationMs` wins.
   * @default undefined (no limit: how long a big export may take depends on its data)
   */
  maxDurationMs?: number;
  /**
   * Longest wait for the next row while the source is being read (opening it included; time
   * spent waiting for a slow destination does not count); then the export fails with
   * `SOURCE_IDLE` (504). Catches a source that trickles bytes but no rows, or hangs. Fires
   * after between 1 and 1.5 times this. A dataset's own `idleTimeoutMs` wins.
   * @default 300_000 (5 minutes: longer than any sane wait for a database's first row)
   */
  idleTimeoutMs?: number;
  /**
   * Longest time a streamed export's destination (the client's response) may have data
   * waiting and drain none of it; then the export fails with `CLIENT_STALLED` (408) and its
   * slot is freed. A client that stops reading would otherwise hold a slot forever. Fires
   * after between 1 and 1.5 times this. Jobs, which write to disk, are not affected.
   * @default 60_000 (a reading client drains a 64 KiB chunk far faster, even on a slow link;
   * one that drains nothing for a minute has stopped reading)
   */
  stallTimeoutMs?: number;
}

/**
 * The limits of one export: the dataset's own, else the manager's, else the defaults. Jobs
 * never get a stall limit.
 *
 * @internal
 */
export function timeLimits(
  dataset: Pick<ExportTimeLimits, 'maxDurationMs' | 'idleTimeoutMs'>,
  manager: ExportTimeLimits,
  kind: 'stream' | 'job',
): ExportTimeLimits {
  return {
    maxDurationMs: dataset.maxDurationMs ?? manager.maxDurationMs ?? 0,
    idleTimeoutMs: dataset.idleTimeoutMs ?? manager.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    stallTimeoutMs: kind === 'job' ? 0 : (manager.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS),
  };
}

/**
 * Checks time limit options: integers >= 0 (milliseconds), or undefined.
 *
 * @internal
 */
export function checkTimeLimits(limits: ExportTimeLimits, prefix = ''): void {
  for (const name of ['maxDurationMs', 'idleTimeoutMs', 'stallTimeoutMs'] as const) {
    const value = limits[name];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
      throw new TypeError(
        `Expected ${prefix}${name} to be an integer >= 0 (milliseconds, 0 for no limit), got ${describeValue(value)}`,
      );
    }
  }
}

export interface WriteExportOptions {
  dataset: string;
  /**
   * Opens the source. Its signal aborts with the export's `signal`, and also when a time limit
   * ends the export, so that a source waiting on I/O stops.
   */
  open: (signal: AbortSignal) => RowSource | Promise<RowSource>;
  encoder: RowEncoder;
  destination: Writable;
  signal: AbortSignal;
  gzip: boolean;
  /** Rows pulled from the source at a time. */
  batchSize: number;
  /** End the destination when the export ends. `false` for stdout or a shared stream. */
  end: boolean;
  /** Compute the sha256 of the bytes written. */
  hash: boolean;
  /** Called after each chunk reaches the pipeline, with the rows and bytes it added. */
  onProgress?: (rows: number, bytes: number) => void;
  /** @default no limits */
  limits?: ExportTimeLimits;
}

export interface WriteExportResult {
  rows: number;
  bytes: number;
  sha256: string | undefined;
}

/**
 * The stream plumbing shared by every format: pulls batches from the source, encodes them,
 * gathers ~64 KiB chunks, optionally gzips, counts (and hashes) the bytes, and writes them to
 * the destination through `pipeline`, which waits for `drain` and tears everything down on
 * error or abort. Rows in memory stay bounded by `batchSize` plus one chunk, however big the
 * export.
 *
 * Errors come out as library errors: the source's as `SourceError` (cause kept), a bad row as
 * `ValidationError`, the destination's as `WriteError`, a time limit as `TimeLimitError`, an
 * abort as the signal's reason when it is an `ExportError`, else `CancelledError`.
 *
 * @internal
 */
export async function writeExport(options: WriteExportOptions): Promise<WriteExportResult> {
  const { encoder } = options;
  const limits = new TimeLimits(options.signal, options.limits ?? {}, options.destination);
  // Everything below listens to this signal: the caller's, or a time limit that was hit.
  const signal = limits.signal;
  try {
    const source = await limits.opening(options.open);
    return await pump(options, encoder, source, signal, limits);
  } finally {
    limits.stop();
  }
}

async function pump(
  options: WriteExportOptions,
  encoder: RowEncoder,
  source: RowSource,
  signal: AbortSignal,
  limits: TimeLimits,
): Promise<WriteExportResult> {
  let rows = 0;
  let pendingRows = 0;
  let sourceError: unknown;
  /** Set once the pipeline failed: no more rows are pulled. */
  let stopped = false;
  /** True while a batch is being pulled from the source (also while a stalled pull's text is flushed). */
  let pulling = false;

  const gzip = options.gzip ? createGzip() : undefined;

  async function* encode(): AsyncGenerator<string, void, undefined> {
    let text = '';
    let lastFlush = performance.now();
    let lingered = false;
    const batches = readBatches(
      source,
      options.batchSize,
      {
        ms: FLUSH_AFTER_MS,
        onLinger: () => {
          lingered = true;
        },
      },
      limits.rowCounter,
    );
    try {
      for (;;) {
        if (stopped || signal.aborted) return;
        let next: IteratorResult<Record<string, unknown>[]>;
        pulling = true;
        limits.waitingForSource(true);
        try {
          const pull = batches.next();
          let result = text.length > 0 ? await stalledAfter(pull, FLUSH_AFTER_MS) : await pull;
          if (result === STALLED) {
            // The source is waiting (an upstream, a database, a parser): send what is encoded.
            yield text;
            text = '';
            lastFlush = performance.now();
            gzip?.flush();
            result = await pull;
          }
          next = result;
        } catch (error) {
          // Remember whether the source failed on its own or because the export was aborted.
          sourceError = signal.aborted ? undefined : error;
          throw error;
        } finally {
          pulling = false;
          limits.waitingForSource(false);
        }
        if (stopped || signal.aborted) return;
        if (next.done) break;
        const batch = next.value;
        text += encoder.encode(batch);
        pendingRows += batch.length;
        const full = text.length >= CHUNK_CHARS;
        if (full || lingered || performance.now() - lastFlush >= FLUSH_AFTER_MS) {
          lingered = false;
          yield text;
          text = '';
          lastFlush = performance.now();
          // gzip holds data back until its window fills; a timed flush pushes it out.
          if (!full) gzip?.flush();
          // Sync sources never wait on I/O by themselves; give timers and sockets a turn.
          await nextMacrotask();
        }
      }
    } finally {
      // Closing `batches` closes the source (`return()` / `destroy()`), also when the pipeline
      // stopped early (abort, destination error).
      await batches.return(undefined);
    }
    text += encoder.finish();
    if (text.length > 0) yield text;
  }

  const meter = new ByteMeter(options.hash ? createHash('sha256') : undefined, (bytes) => {
    rows += pendingRows;
    const added = pendingRows;
    pendingRows = 0;
    options.onProgress?.(added, bytes);
  });

  const stages: NodeJS.ReadWriteStream[] = gzip ? [gzip, meter] : [meter];
  const chunks = encode();
  try {
    await pipeline(chunks, ...(stages as [Transform]), options.destination, {
      signal,
      end: options.end,
    });
  } catch (error) {
    // `pipeline` may settle before it closed the chunk generator, so close it here: the source
    // is closed before the export reports its end. A source stuck in a pull that ignores the
    // signal is not waited for; it is closed as soon as that pull returns.
    stopped = true;
    const closing = chunks.return(undefined).catch(() => {});
    if (!pulling) await closing;
    throw classify(error, sourceError, signal, options.dataset);
  }
  rows += pendingRows;
  return { rows, bytes: meter.bytes, sha256: meter.digest() };
}

/**
 * The time limits of one export, on one signal: aborted by the caller's signal or by the first
 * limit that is hit, with a {@link TimeLimitError} as its reason.
 *
 * Idle and stall limits are watched by a check every quarter of the limit rather than by a
 * timer re-armed per row or per write, which would cost a timer per chunk: a limit fires once
 * five checks in a row saw no progress, so after between 1 and 1.5 times the limit.
 */
class TimeLimits {
  readonly rowCounter = { rows: 0 };
  readonly #controller = new AbortController();
  readonly #outer: AbortSignal;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #cleanups: (() => void)[] = [];
  readonly #forward = () => this.#controller.abort(this.#outer.reason);
  #waiting = false;

  constructor(outer: AbortSignal, limits: ExportTimeLimits, destination: Writable) {
    this.#outer = outer;
    if (outer.aborted) this.#forward();
    else outer.addEventListener('abort', this.#forward, { once: true });
    const { maxDurationMs, idleTimeoutMs, stallTimeoutMs } = limits;
    if (maxDurationMs) {
      this.#timers.push(setTimeout(() => this.#expire('EXPORT_TIMEOUT', maxDurationMs), maxDurationMs));
    }
    if (idleTimeoutMs) {
      let seen = -1;
      this.#watch(idleTimeoutMs, 'SOURCE_IDLE', () => {
        const quiet = this.#waiting && this.rowCounter.rows === seen;
        seen = this.rowCounter.rows;
        return quiet;
      });
    }
    if (stallTimeoutMs) {
      // Progress is a `drain`, or a shorter write buffer (part of a chunk was taken).
      let drains = 0;
      const onDrain = () => {
        drains++;
      };
      destination.on('drain', onDrain);
      let seenDrains = 0;
      let seenLength = Number.POSITIVE_INFINITY;
      this.#watch(stallTimeoutMs, 'CLIENT_STALLED', () => {
        const length = destination.writableLength;
        const quiet =
          destination.writableNeedDrain &&
          drains === seenDrains &&
          length >= seenLength &&
          !destination.destroyed;
        seenDrains = drains;
        seenLength = length;
        return quiet;
      });
      this.#cleanups.push(() => destination.off('drain', onDrain));
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the export is waiting for its source (the idle limit only counts that time). */
  waitingForSource(waiting: boolean): void {
    this.#waiting = waiting;
  }

  /**
   * Opens the source within the limits. A `source()` call that ignores the signal and never
   * returns does not hold the export; if it returns later, what it returned is closed.
   */
  async opening(open: (signal: AbortSignal) => RowSource | Promise<RowSource>): Promise<RowSource> {
    const signal = this.signal;
    if (signal.aborted) throw abortReason(signal);
    this.#waiting = true;
    try {
      const opened = Promise.resolve().then(() => open(signal));
      let onAbort: (() => void) | undefined;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      try {
        return await Promise.race([opened, aborted]);
      } catch (error) {
        if (signal.aborted) {
          opened.then(closeSource, () => {});
          throw abortReason(signal);
        }
        throw error;
      } finally {
        if (onAbort) signal.removeEventListener('abort', onAbort);
      }
    } finally {
      this.#waiting = false;
    }
  }

  stop(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    for (const cleanup of this.#cleanups) cleanup();
    this.#outer.removeEventListener('abort', this.#forward);
  }

  #watch(ms: number, code: TimeLimitError['code'], quiet: () => boolean): void {
    let quietChecks = 0;
    this.#timers.push(
      setInterval(
        () => {
          quietChecks = quiet() ? quietChecks + 1 : 0;
          if (quietChecks >= 5) this.#expire(code, ms);
        },
        Math.max(1, Math.ceil(ms / 4)),
      ),
    );
  }

  #expire(code: TimeLimitError['code'], ms: number): void {
    this.stop();
    this.#controller.abort(new TimeLimitError(code, ms));
  }
}

function abortReason(signal: AbortSignal): unknown {
  return isExportError(signal.reason)
    ? signal.reason
    : new CancelledError(undefined, { cause: signal.reason });
}

const STALLED = Symbol('stalled');

/** `promise`'s value, or `STALLED` when it takes longer than `ms`. */
function stalledAfter<T>(promise: Promise<T>, ms: number): Promise<T | typeof STALLED> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<typeof STALLED>((resolve) => {
    timer = setTimeout(resolve, ms, STALLED);
  });
  return Promise.race([promise, stalled]).finally(() => clearTimeout(timer));
}

function classify(error: unknown, sourceError: unknown, signal: AbortSignal, dataset: string): unknown {
  // A source failure comes first: tearing the pipeline down for it may close the destination,
  // and a consumer may abort in turn; that is a consequence, not the cause.
  if (sourceError !== undefined && error === sourceError) {
    // A bad row is the dataset author's bug, but its message is ours and safe to show.
    return isExportError(error) ? error : new SourceError(dataset, { cause: error });
  }
  if (signal.aborted) {
    return isExportError(signal.reason)
      ? signal.reason
      : new CancelledError(undefined, { cause: signal.reason });
  }
  if (isExportError(error)) return error;
  return new WriteError('Writing the export failed', { cause: error });
}

/** Counts (and optionally hashes) the bytes passing through, after compression. */
class ByteMeter extends Transform {
  bytes = 0;
  readonly #hash: Hash | undefined;
  readonly #onChunk: (bytes: number) => void;

  constructor(hash: Hash | undefined, onChunk: (bytes: number) => void) {
    super();
    this.#hash = hash;
    this.#onChunk = onChunk;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.#hash?.update(chunk);
    this.#onChunk(chunk.length);
    callback(null, chunk);
  }

  digest(): string | undefined {
    return this.#hash?.digest('hex');
  }
}
