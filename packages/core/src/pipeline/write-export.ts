import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { type Compression, type Compressor, createCompressor } from '../compression.js';
import type { RowSource } from '../dataset.js';
import { CancelledError, isExportError, SourceError, WriteError } from '../errors.js';
import type { AnyRowEncoder } from '../formats/types.js';
import { readBatches } from './read-batches.js';
import { type ExportTimeLimits, TimeLimits } from './time-limits.js';

/** Encoded output is handed to the destination in chunks of about this many characters (or bytes)... */
const CHUNK_CHARS = 64 * 1024;
/**
 * ...or sooner, once this long has passed since the last chunk: rows of a slow source reach
 * the client (and an HTTP response gets its headers) without waiting for 64 KiB.
 */
const FLUSH_AFTER_MS = 100;
/**
 * The time all running exports of this process together may spend in one event-loop turn
 * before they let timers, sockets and the host app's requests run. Each export's share is this
 * divided by the number of running exports, so five exports do not each take a full slice back
 * to back (which is what chunks of a fixed size did).
 */
const TURN_BUDGET_MS = 4;
/** The exports of this process currently encoding (their number sets each one's share of a turn). */
let runningExports = 0;

export interface WriteExportOptions {
  dataset: string;
  /**
   * Opens the source. Its signal aborts with the export's `signal`, and also when a time limit
   * ends the export, so that a source waiting on I/O stops.
   */
  open: (signal: AbortSignal) => RowSource | Promise<RowSource>;
  /** A text encoder, or a byte encoder for binary files (XLSX, Parquet). */
  encoder: AnyRowEncoder;
  destination: Writable;
  signal: AbortSignal;
  /** gzip or zstd (at a level) after the encoder, or `'none'`. */
  compression: Compression;
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
  // A bad level or a zstd this Node lacks fails before the source is opened (the request was
  // checked already; a job record resumed on an older Node is checked again here).
  // gzip or zstd: both hold data back and flush alike.
  const gzip = createCompressor(options.compression);
  const limits = new TimeLimits(options.signal, options.limits ?? {}, options.destination);
  // Everything below listens to this signal: the caller's, or a time limit that was hit.
  const signal = limits.signal;
  let source: RowSource | undefined;
  // A Readable source that never pushes holds its pull forever, and on Node 22+ the pipeline
  // waits for that pull before it settles: an aborted export (a time limit, a cancel) closes
  // its source at once rather than when the pull returns.
  const closeOnAbort = () => {
    if (source instanceof Readable && !source.destroyed) source.destroy();
  };
  signal.addEventListener('abort', closeOnAbort, { once: true });
  try {
    source = await limits.opening(options.open);
    if (signal.aborted) closeOnAbort();
    return await pump(options, encoder, source, signal, limits, gzip);
  } finally {
    signal.removeEventListener('abort', closeOnAbort);
    limits.stop();
  }
}

async function pump(
  options: WriteExportOptions,
  encoder: AnyRowEncoder,
  source: RowSource,
  signal: AbortSignal,
  limits: TimeLimits,
  gzip: Compressor | undefined,
): Promise<WriteExportResult> {
  let rows = 0;
  let pendingRows = 0;
  let sourceError: unknown;
  /** Set once the pipeline failed: no more rows are pulled. */
  let stopped = false;
  /** True while a batch is being pulled from the source (also while a stalled pull's text is flushed). */
  let pulling = false;

  async function* encode(): AsyncGenerator<string | Uint8Array, void, undefined> {
    const text = new PendingOutput();
    let lastFlush = performance.now();
    /** When this export last gave the event loop a turn. */
    let sliceStart = lastFlush;
    let lingered = false;
    runningExports++;
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
            yield text.take();
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
        text.add(encoder.encode(batch));
        pendingRows += batch.length;
        const full = text.length >= CHUNK_CHARS;
        let now = performance.now();
        if (full || lingered || now - lastFlush >= FLUSH_AFTER_MS) {
          lingered = false;
          yield text.take();
          now = performance.now();
          lastFlush = now;
          // gzip holds data back until its window fills; a timed flush pushes it out.
          if (!full) gzip?.flush();
        }
        // Bound the work per event-loop turn by time, not by bytes: sync sources never wait on
        // I/O by themselves, and a drained destination resumes every export in the same turn.
        if (now - sliceStart >= TURN_BUDGET_MS / runningExports) {
          await nextMacrotask();
          sliceStart = performance.now();
        }
      }
    } finally {
      runningExports--;
      // Closing `batches` closes the source (`return()` / `destroy()`), also when the pipeline
      // stopped early (abort, destination error).
      await batches.return(undefined);
    }
    text.add(encoder.finish());
    if (text.length > 0) yield text.take();
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
 * The output encoded since the last chunk: text from a text encoder, or the byte arrays of a
 * byte encoder (an encoder gives one kind only), with its length in characters or bytes.
 */
class PendingOutput {
  #text = '';
  #bytes: Uint8Array[] = [];
  #byteLength = 0;

  get length(): number {
    return this.#text.length + this.#byteLength;
  }

  add(output: string | Uint8Array): void {
    if (typeof output === 'string') this.#text += output;
    else if (output.length > 0) {
      this.#bytes.push(output);
      this.#byteLength += output.length;
    }
  }

  take(): string | Uint8Array {
    if (this.#byteLength === 0) {
      const text = this.#text;
      this.#text = '';
      return text;
    }
    const bytes = this.#bytes.length === 1 ? this.#bytes[0]! : Buffer.concat(this.#bytes, this.#byteLength);
    this.#bytes = [];
    this.#byteLength = 0;
    return bytes;
  }
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
