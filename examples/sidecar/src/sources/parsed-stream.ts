import type { Readable } from 'node:stream';
import type { Row } from '@spark-export/core';

/**
 * Reads an object-mode stream (a stream-json pipeline) in batches: whatever is buffered is
 * taken synchronously, and only an empty buffer waits for `readable`. Resolves `null` at the end,
 * rejects with the stream's error.
 */
export function streamBatchReader(stream: Readable, batchSize: number): () => Promise<Row[] | null> {
  let error: unknown;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  stream.on('readable', notify);
  stream.on('end', () => {
    ended = true;
    notify();
  });
  stream.on('error', (err) => {
    error = err;
    notify();
  });
  stream.on('close', notify);
  return async () => {
    for (;;) {
      if (error !== undefined) throw error;
      const rows: Row[] = [];
      while (rows.length < batchSize) {
        const row = stream.read() as Row | null;
        if (row === null) break;
        rows.push(row);
      }
      if (rows.length > 0) return rows;
      if (ended || stream.readableEnded) return null;
      if (stream.destroyed) throw stream.errored ?? new Error('The source stream closed before it ended');
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  };
}
