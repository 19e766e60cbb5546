import type { Redis } from 'ioredis';
import { Semaphore } from 'redis-semaphore';
import { LeaseLostError } from './errors.js';

export interface LeaseOptions {
  redis: Redis;
  key: string;
  limit: number;
  lockTimeoutMs: number;
  refreshIntervalMs: number;
  /** Called once when the lease is lost (refresh refused, or not confirmed for `lockTimeoutMs`). */
  onLost: (error: LeaseLostError) => void;
  /** A refresh round trip failed; the lease is kept while it may still be valid. */
  onError: (error: unknown) => void;
}

/**
 * One permit of the cluster-wide limit: one member of redis-semaphore's sorted set, refreshed
 * while held. Three things differ from a plain redis-semaphore `Semaphore`:
 * - the key is ours as given (redis-semaphore would name it `semaphore:<key>`);
 * - a refresh that throws (Redis unreachable, a command timeout) is reported, not left as an
 *   unhandled rejection from redis-semaphore's refresh timer, which would end the process;
 * - a lease whose refresh has not been confirmed for `lockTimeoutMs` counts as lost even when
 *   the refresh never answers, because by then other replicas treat it as expired.
 */
export class Lease extends Semaphore {
  /** Aborts with a {@link LeaseLostError} when the lease is lost. */
  readonly signal: AbortSignal;
  readonly #lost = new AbortController();
  readonly #options: LeaseOptions;
  #watchdog: NodeJS.Timeout | undefined;

  constructor(options: LeaseOptions) {
    super(options.redis, options.key, options.limit, {
      lockTimeout: options.lockTimeoutMs,
      refreshInterval: options.refreshIntervalMs,
      // One attempt per call: the limiter does its own waiting, abortable and with jitter.
      acquireAttemptsLimit: 1,
      acquireTimeout: options.lockTimeoutMs,
      retryInterval: 0,
      onLockLost: (error) => this?.lost(error),
    });
    this._key = options.key;
    this.#options = options;
    this.signal = this.#lost.signal;
  }

  /** One attempt to take a permit; true if taken (then refreshed until {@link giveBack}). */
  async take(): Promise<boolean> {
    const taken = await this.tryAcquire();
    if (taken) this.#confirmed();
    return taken;
  }

  /** Removes the lease from Redis and stops refreshing it, also after it was lost. */
  async giveBack(): Promise<void> {
    this.stopRefresh();
    clearTimeout(this.#watchdog);
    // Marked released first, so that a refresh still in flight that fails is not a "lost lease".
    this._acquired = false;
    // Also after a loss: a late refresh may have put the member back, so it is removed anyway.
    await this._release();
  }

  protected override async _refresh(): Promise<boolean> {
    try {
      const refreshed = await super._refresh();
      if (refreshed) this.#confirmed();
      return refreshed;
    } catch (error) {
      this.#options.onError(error);
      // Kept for now: the watchdog declares it lost once it has gone unconfirmed too long.
      return !this.#lost.signal.aborted;
    }
  }

  #confirmed(): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      this.stopRefresh();
      this._acquired = false;
      this.lost(new Error(`The lease was not refreshed for ${this.#options.lockTimeoutMs} ms`));
    }, this.#options.lockTimeoutMs);
    this.#watchdog.unref();
  }

  /** Marks the lease lost (once): aborts {@link signal} and tells `onLost`. */
  lost(cause: unknown): void {
    if (this.#lost.signal.aborted) return;
    clearTimeout(this.#watchdog);
    const error = new LeaseLostError(undefined, cause);
    this.#lost.abort(error);
    this.#options.onLost(error);
  }
}
