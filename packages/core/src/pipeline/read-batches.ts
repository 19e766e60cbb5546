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
    yield* readAsyncBatches(source[Symbol.asyncIterator](), batchSize, linger, check);
    return;
  }
  throw new TypeError(
    `Expected the dataset source to return an AsyncIterable, an Iterable or an object-mode Readable, got ${describeValue(source)}`,
  );
}

/**
 * Batches of an async source. Each row is one plain `await` of the source: no promise per row
 * of our own, no `Promise.race` (whose reactions piled up on the batch's timer, about 0.2 s of
 * CPU per million rows). A producer fills the batch; a batch's first row starts one timer,
 * which hands the partial batch on by itself when the source keeps the next row back for
 * `linger.ms`, while the producer still waits for that row.
 *
 * The producer fills a batch while the consumer waits for it, as a generator would (only rows
 * arriving after a partial batch was handed on start the next one early), and a failure
 * reaches the consumer after the batches before it.
 */
async function* readAsyncBatches(
  iterator: AsyncIterator<unknown>,
  batchSize: number,
  linger: { ms: number; onLinger: () => void } | undefined,
  check: (row: unknown) => Row,
): AsyncGenerator<Row[], void, undefined> {
  const producer = new BatchProducer(iterator, batchSize, linger, check);
  try {
    for (;;) {
      const batch = producer.take() ?? (await producer.next());
      if (batch === undefined) return;
      yield batch;
    }
  } finally {
    await producer.close();
  }
}

class BatchProducer {
  readonly #iterator: AsyncIterator<unknown>;
  readonly #batchSize: number;
  readonly #linger: { ms: number; onLinger: () => void } | undefined;
  readonly #check: (row: unknown) => Row;
  #batch: Row[] = [];
  /** Batches handed on and not taken yet: at most one full batch, or partial ones. */
  readonly #ready: Row[][] = [];
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  /** The source ended (or failed): nothing more will be handed on. */
  #ended = false;
  #failure: { error: unknown } | undefined;
  /** A pull of the source is in flight; when it returns after `close()`, the source is closed. */
  #pull: Promise<IteratorResult<unknown>> | undefined;
  #closed = false;
  /** The source must not be closed any more: it ended, or its `next()` rejected. */
  #sourceDone = false;
  #wakeConsumer: (() => void) | undefined;
  #wakeProducer: (() => void) | undefined;

  constructor(
    iterator: AsyncIterator<unknown>,
    batchSize: number,
    linger: { ms: number; onLinger: () => void } | undefined,
    check: (row: unknown) => Row,
  ) {
    this.#iterator = iterator;
    this.#batchSize = batchSize;
    this.#linger = linger;
    this.#check = check;
  }

  /** A batch handed on already, if any, without waiting. */
  take(): Row[] | undefined {
    return this.#ready.shift();
  }

  /** The next batch, or `undefined` once the source ended; rejects with the source's failure. */
  async next(): Promise<Row[] | undefined> {
    if (!this.#started) {
      this.#started = true;
      void this.#produce();
    }
    for (;;) {
      const batch = this.take();
      if (batch !== undefined) return batch;
      if (this.#failure) throw this.#failure.error;
      if (this.#ended) return undefined;
      // Rows are pulled while the consumer waits for them, not while it encodes the batch
      // before: every row pulled early stays alive longer, and the garbage collector copies it.
      this.#wakeProducer?.();
      this.#wakeProducer = undefined;
      await new Promise<void>((resolve) => {
        this.#wakeConsumer = resolve;
      });
    }
  }

  /** Stops producing and closes the source (at once, or when a pull in flight returns). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#wakeProducer?.();
    if (this.#sourceDone) return;
    this.#sourceDone = true;
    const iterator = this.#iterator;
    if (this.#pull) {
      // A pull is still in flight (a batch lingered): close the source once it returns,
      // without waiting, so that a source deaf to the abort signal cannot hold the slot.
      void this.#pull.then(() => iterator.return?.()).catch(() => {});
    } else {
      await iterator.return?.();
    }
  }

  async #produce(): Promise<void> {
    const iterator = this.#iterator;
    try {
      for (;;) {
        if (this.#ready.length > 0 && this.#batch.length === 0) {
          // A batch is ready: wait until the consumer has taken it and asks for the next one.
          await new Promise<void>((resolve) => {
            this.#wakeProducer = resolve;
          });
        }
        if (this.#closed) return;
        const pull = iterator.next();
        this.#pull = pull;
        let next: IteratorResult<unknown>;
        try {
          next = await pull;
        } catch (error) {
          // A source whose next() rejected is finished; it is not closed again.
          this.#sourceDone = true;
          throw error;
        } finally {
          this.#pull = undefined;
        }
        if (this.#closed) return;
        if (next.done) {
          this.#sourceDone = true;
          if (this.#batch.length > 0) this.#hand();
          return;
        }
        const batch = this.#batch;
        batch.push(this.#check(next.value));
        if (batch.length >= this.#batchSize) this.#hand();
        else if (batch.length === 1 && this.#linger) {
          this.#timer = setTimeout(this.#onLinger, this.#linger.ms);
        }
      }
    } catch (error) {
      this.#failure = { error };
    } finally {
      clearTimeout(this.#timer);
      this.#ended = true;
      this.#wakeConsumer?.();
      this.#wakeConsumer = undefined;
    }
  }

  /** Hands the batch being filled on to the consumer. */
  #hand(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#ready.push(this.#batch);
    this.#batch = [];
    this.#wakeConsumer?.();
    this.#wakeConsumer = undefined;
  }

  readonly #onLinger = (): void => {
    this.#timer = undefined;
    if (this.#batch.length === 0 || this.#closed) return;
    this.#hand();
    this.#linger?.onLinger();
  };
}

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
