import { CancelledError } from '@spark-export/core';

/**
 * A permit's lease in Redis ran out before it was released: the replica could not refresh it
 * in time (Redis unreachable, an event loop blocked for longer than the lease), so the cluster
 * no longer counts the export that holds it, which would run outside the cluster-wide limit.
 * The permit's `signal` aborts with this error and `ExportManager` ends that export with it: a
 * stream fails, a job is marked failed. Its code is `INTERRUPTED`, so such a job reads as one
 * that was cut short.
 *
 * @example
 * ```ts
 * // ExportManager does this itself; code that holds a permit of its own ends its work alike.
 * const release = await limiter.acquire({});
 * release.signal.addEventListener('abort', () => work.abort(release.signal.reason));
 * ```
 */
export class LeaseLostError extends CancelledError {
  constructor(
    message = 'The export lost its cluster-wide slot: its lease in Redis expired',
    cause?: unknown,
  ) {
    super(message, { code: 'INTERRUPTED', cause });
  }
}
