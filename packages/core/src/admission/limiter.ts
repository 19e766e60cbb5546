/**
 * Gives a permit back. Safe to call more than once: only the first call counts. A shared
 * limiter may release with a round trip (the caller does not wait for it), and may carry a
 * `signal` that aborts when the permit is lost (a lease that expired while its replica was cut
 * off): the export holding it is then ended.
 */
export type Release = (() => void | Promise<void>) & { readonly signal?: AbortSignal };

/**
 * The seam for "how many exports may run at once". The built-in {@link Semaphore} counts in
 * this process; a shared limiter (e.g. over Redis, with leases that expire when a replica dies)
 * counts across processes. Admission decides queueing, owner limits, timeouts and refusals;
 * a limiter only hands out permits.
 */
export interface Limiter {
  /** Permits that may be held at once. Raising it wakes waiters; lowering it never takes permits back. */
  limit: number;
  /** Permits held through this limiter object (in this process). */
  readonly active: number;
  /** Callers of this limiter object waiting in {@link acquire}. */
  readonly pending: number;
  /** A permit if one is free now and nobody waits ahead, else `undefined`. May take a round trip. */
  tryAcquire(): Release | undefined | Promise<Release | undefined>;
  /**
   * Waits in FIFO order, without a bound, until a permit is free. Rejects when `signal` aborts
   * (and gives up the place in line). A permit granted after an abort must be released.
   */
  acquire(options: { signal?: AbortSignal }): Promise<Release>;
  /** No more permits are handed out; permits already held stay valid. */
  close(): void | Promise<void>;
}
