import { CancelledError } from '@spark-export/core';

/**
 * A permit's lease in Redis ran out before it was released: the replica could not refresh it
 * in time (Redis unreachable, an event loop blocked for longer than the lease), so the cluster
 * no longer counts the export that holds it. That export should be failed: it runs outside the
 * cluster-wide limit now. Its code is `INTERRUPTED`, so a job failed with it reads as one that
 * was cut short.
 *
 * @example
 * ```ts
 * const limiter = new RedisLimiter({ redis, limit: 10, onLeaseLost: (error) => log.error(error) });
 * const release = await limiter.acquire({});
 * release.signal.addEventListener('abort', () => exportController.abort(release.signal.reason));
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
