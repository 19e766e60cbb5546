import { Readable } from 'node:stream';
import type { Row, RowSource } from '../dataset.js';
import { describeValue, ValidationError } from '../errors.js';

/**
 * Pulls rows from any {@link RowSource} in batches of at most `batchSize`, checking that each
 * row is a plain object. Sync iterables are drained synchronously per batch (no promise per
 * row); closing the returned iterator closes the source (`return()` / `destroy()`).
 *
 * `counter.rows` counts rows as they arrive (an idle timeout watches it).
 *
 * With `linger`, a batch that has rows is handed on without waiting for it to fill once an
 * async source keeps the next row back for `linger.ms` (a slow upstream, a cursor waiting on
 * the database), and `linger.onLinger()` is called so that the caller flushes it too.
 *
 * @internal
 */
export async function* readBatches(
  source: RowSource,
  batchSize: number,
  linger: { ms: number; onLinger: () => void } | undefined = undefined,
  /** Counts every row read as it arrives, also inside a batch that is still filling. */
  counter: { rows: number } = { rows: 0 },
): AsyncGenerator<Row[], void, undefined> {
  let index = 0;
  const check = (row: unknown): Row => {
    counter.rows++;
    if (typeof row !== 'object' || row === null || Array.isArray(row)) {
      throw new ValidationError(`Expected row ${index} to be a plain object, got ${describeValue(row)}`, {
        code: 'INVALID_ROW',
        field: `rows[${index}]`,
      });
    }
    index++;
    return row as Row;
  };

  if (source instanceof Readable) {
    try {
      yield* readReadableBatches(source, batchSize, check);
    } finally {
      if (!source.destroyed) source.destroy();
    }
    return;
  }
  if (isSyncIterable(source)) {
    const iterator = source[Symbol.iterator]();
    let done = false;
    try {
      while (!done) {
        const batch: Row[] = [];
        while (batch.length < batchSize) {
          const next = iterator.next();
          if (next.done) {
            done = true;
            break;
          }
          batch.push(check(next.value));
        }
        if (batch.length > 0) yield batch;
      }
    } finally {
      if (!done) iterator.return?.();
    }
    return;
  }
  if (isAsyncIterable(source)) {
    const iterator = source[Symbol.asyncIterator]();
    let done = false;
    let pending: Promise<IteratorResult<unknown>> | undefined;
    try {
      while (!done) {
        const batch: Row[] = [];
        // One timer per batch, started by its first row; rows then race it.
        let lingering: Promise<typeof LINGERED> | undefined;
        let timer: NodeJS.Timeout | undefined;
        try {
          while (batch.length < batchSize) {
            pending ??= iterator.next();
            const next = lingering ? await Promise.race([pending, lingering]) : await pending;
            if (next === LINGERED) {
              linger?.onLinger();
              break;
            }
            pending = undefined;
            if (next.done) {
              done = true;
              break;
            }
            batch.push(check(next.value));
            if (!lingering && linger) {
              lingering = new Promise((resolve) => {
                timer = setTimeout(resolve, linger.ms, LINGERED);
              });
            }
          }
        } finally {
          clearTimeout(timer);
        }
        if (batch.length > 0) yield batch;
      }
    } finally {
      if (!done) {
        if (pending) {
          // A pull is still in flight (a batch lingered): close the source once it returns,
          // without waiting, so that a source deaf to the abort signal cannot hold the slot.
          void pending.then(() => iterator.return?.()).catch(() => {});
        } else {
          await iterator.return?.();
        }
      }
    }
    return;
  }
  throw new TypeError(
    `Expected the dataset source to return an AsyncIterable, an Iterable or an object-mode Readable, got ${describeValue(source)}`,
  );
}

const LINGERED = Symbol('lingered');

/**
 * Reads whatever an object-mode Readable has buffered synchronously (`read()` until `null`),
 * and only waits for `readable` when its buffer is empty: far fewer promises than
 * `for await` per row.
 */
async function* readReadableBatches(
  stream: Readable,
  batchSize: number,
  check: (row: unknown) => Row,
): AsyncGenerator<Row[], void, undefined> {
  let error: unknown;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  const onError = (err: unknown) => {
    error = err;
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  stream.on('readable', notify);
  stream.on('error', onError);
  stream.on('end', onEnd);
  stream.on('close', notify);
  try {
    let batch: Row[] = [];
    for (;;) {
      if (error) throw error;
      const row: unknown = stream.read();
      if (row !== null) {
        batch.push(check(row));
        if (batch.length >= batchSize) {
          yield batch;
          batch = [];
        }
        continue;
      }
      if (ended || stream.readableEnded) break;
      if (stream.destroyed) {
        if (error) throw error;
        throw stream.errored ?? new Error('The source stream was destroyed before it ended');
      }
      if (batch.length > 0) {
        yield batch;
        batch = [];
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    if (batch.length > 0) yield batch;
  } finally {
    stream.off('readable', notify);
    stream.off('error', onError);
    stream.off('end', onEnd);
    stream.off('close', notify);
  }
}

function isSyncIterable(value: unknown): value is Iterable<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Iterable<unknown>)[Symbol.iterator] === 'function' &&
    typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function'
  );
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  );
}

/**
 * Closes a source that was opened but will never be read (the export ended while its
 * `source()` call was still pending).
 *
 * @internal
 */
export function closeSource(source: RowSource): void {
  try {
    if (source instanceof Readable) source.destroy();
    else {
      const closable = source as { return?: () => unknown };
      if (typeof closable.return === 'function') void Promise.resolve(closable.return()).catch(() => {});
    }
  } catch {
    // Closing is best effort: the export has already ended.
  }
}
