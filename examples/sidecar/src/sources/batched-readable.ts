import { Readable } from 'node:stream';
import type { Row } from '@spark-export/core';

export interface BatchedReadableOptions {
  /** Next batch of rows, or `null` at the end. Never called again while one call is pending. */
  readBatch(): Row[] | null | Promise<Row[] | null>;
  /** Frees the cursor/connection. Called once, after the last `readBatch` settled. */
  close(): void | Promise<void>;
  /** Rows buffered ahead of the consumer. */
  highWaterMark: number;
  /** Destroys the stream (and so closes the source) when aborted. */
  signal: AbortSignal;
  /** Turns a source error into the error the stream fails with. */
  mapError?: (error: unknown) => unknown;
}

/**
 * An object-mode Readable that pulls rows from a cursor one batch per event-loop turn. The core
 * drains whatever is buffered synchronously, so rows cost no promise each; the `setImmediate`
 * before each synchronous batch is what keeps `/export/status` answering while several exports
 * run on one thread.
 */
export function batchedReadable(options: BatchedReadableOptions): Readable {
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
    highWaterMark: options.highWaterMark,
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
