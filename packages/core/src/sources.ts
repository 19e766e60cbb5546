import { Readable } from 'node:stream';
import { chain } from 'stream-chain';
import jsonlParser from 'stream-chain/jsonl/parser.js';
import { parser } from 'stream-json';
import { pick } from 'stream-json/filters/pick.js';
import { streamArray } from 'stream-json/streamers/stream-array.js';
import type { Row } from './dataset.js';
import { describeValue } from './errors.js';

type ByteSource = Readable | AsyncIterable<Uint8Array | string>;

export interface JsonArrayOptions {
  /**
   * Dot-separated path of the array inside the document, e.g. `data.items` for
   * `{"data":{"items":[...]}}`. Without it, the document itself must be an array.
   */
  path?: string;
}

/**
 * Parses a JSON array incrementally (stream-json) and yields its elements one at a time, so a
 * multi-gigabyte upstream body never sits in memory whole. Malformed JSON fails the stream.
 *
 * @example
 * ```ts
 * const response = await fetch(url, { signal });
 * return fromJsonArray(Readable.fromWeb(response.body), { path: 'data.items' });
 * ```
 */
export function fromJsonArray(input: ByteSource, options: JsonArrayOptions = {}): Readable {
  const path = options.path;
  if (path !== undefined && (typeof path !== 'string' || path === '')) {
    throw new TypeError(`Expected path to be a non-empty dot-separated string, got ${describeValue(path)}`);
  }
  const steps: unknown[] = [toReadable(input), parser()];
  if (path) steps.push(pick({ filter: path }));
  steps.push(streamArray(), (item: { value: unknown }) => item.value);
  return chain(steps as never) as unknown as Readable;
}

/**
 * Parses NDJSON (one JSON value per line; blank lines skipped) and yields each value.
 * A malformed line fails the stream.
 */
export function fromNdjson(input: ByteSource): Readable {
  return chain([
    toReadable(input),
    jsonlParser(),
    (item: { value: unknown }) => item.value,
  ] as never) as unknown as Readable;
}

function toReadable(input: ByteSource): Readable {
  if (input instanceof Readable) return input;
  if (input && typeof (input as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
    return Readable.from(input, { objectMode: false });
  }
  throw new TypeError(`Expected a Readable or an async iterable of bytes, got ${describeValue(input)}`);
}

export interface BatchSourceOptions {
  /** The next batch of rows, or `null` at the end. Never called again while one call is pending. */
  readBatch(): Row[] | null | Promise<Row[] | null>;
  /** Frees the cursor or connection. Called once, after the last `readBatch` settled. */
  close(): void | Promise<void>;
  /** Rows buffered ahead of the export. @default 1000 */
  highWaterMark?: number;
  /** Destroys the source (and so closes the cursor) when aborted: pass the source context's signal. */
  signal: AbortSignal;
  /** Turns an error of `readBatch` into the error the source fails with. */
  mapError?: (error: unknown) => unknown;
}

/**
 * A row source over a cursor that reads batches (a database cursor, a paginated API): an
 * object-mode Readable that reads one batch per event-loop turn. The export drains what is
 * buffered without a promise per row; the turn before each batch keeps a synchronous driver
 * (better-sqlite3) from holding the event loop while several exports run.
 *
 * @example
 * ```ts
 * source: (params, { signal }) => {
 *   const rows = db.prepare('select * from orders').iterate();
 *   return fromBatches({ signal, readBatch: () => take(rows, 100), close: () => rows.return?.() });
 * }
 * ```
 */
export function fromBatches(options: BatchSourceOptions): Readable {
  let pending: Promise<unknown> | undefined;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await pending?.catch(() => {});
    await options.close();
  };
  const stream = new Readable({
    objectMode: true,
    highWaterMark: options.highWaterMark ?? 1000,
    read() {
      if (pending) return;
      pending = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => (stream.destroyed ? null : options.readBatch()))
        .then(
          (rows) => {
            pending = undefined;
            if (stream.destroyed) return;
            if (rows === null) {
              stream.push(null);
              return;
            }
            for (const row of rows) stream.push(row);
            // An empty batch is not the end; ask again.
            if (rows.length === 0) stream.read(0);
          },
          (error: unknown) => {
            pending = undefined;
            stream.destroy((options.mapError?.(error) ?? error) as Error);
          },
        );
    },
    destroy(error, callback) {
      options.signal.removeEventListener('abort', onAbort);
      close().then(
        () => callback(error),
        (closeError: unknown) => callback(error ?? (closeError as Error)),
      );
    },
  });
  const onAbort = () => stream.destroy();
  if (options.signal.aborted) stream.destroy();
  else options.signal.addEventListener('abort', onAbort, { once: true });
  return stream;
}
