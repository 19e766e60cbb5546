import { BackpressureError, CancelledError, type Limiter } from '@spark-export/core';
import type { Redis } from 'ioredis';
import { checkPositiveInteger, checkPrefix, describeValue } from './checks.js';
import type { LeaseLostError } from './errors.js';
import { DEFAULT_PREFIX, redisKeys } from './keys.js';
import { Lease } from './lease.js';

export interface RedisLimiterOptions {
  /**
   * The ioredis client the leases are taken, refreshed and released on. The limiter never
   * closes it: close it yourself after `await limiter.close()` and `await limiter.drained()`.
   */
  redis: Redis;
  /**
   * Exports that may run at once across the whole cluster. Every replica must be given the
   * same value: each replica's acquisitions compare the cluster's lease count with its own limit.
   */
  limit: number;
  /**
   * Prefix of the key of the leases (`<prefix>limiter`).
   * @default 'spark-export:'
   */
  prefix?: string;
  /**
   * How long a lease lives without a refresh: how long a replica that died keeps its permits
   * from the rest of the cluster. Shorter frees them sooner but loses leases to event-loop
   * stalls, GC pauses and Redis fail-overs longer than this; replica clocks must also agree to
   * well within `lockTimeoutMs - refreshIntervalMs`, as expiry is judged by the acquiring
   * replica's clock.
   * @default 10_000
   */
  lockTimeoutMs?: number;
  /**
   * How often a held lease is refreshed. At 3 s under a 10 s lease, two refreshes in a row may
   * fail or run late before the lease expires.
   * @default 3_000
   */
  refreshIntervalMs?: number;
  /**
   * Milliseconds between attempts while callers wait for a permit (one round trip per attempt
   * for the whole process, not per waiter), plus up to half of it again as jitter so that
   * replicas do not retry in lockstep. A release in this process retries at once.
   * @default 100
   */
  retryIntervalMs?: number;
  /**
   * Told when a held lease is lost: Redis refused its refresh (another replica counted it as
   * expired) or it could not be refreshed for `lockTimeoutMs`. The export holding it would run
   * outside the cluster-wide limit from then on, so the permit's `signal` aborts with the same
   * error, and `ExportManager` ends that export with it (`INTERRUPTED`). For logs and alerts.
   * @default () => {}
   */
  onLeaseLost?: (error: LeaseLostError) => void;
  /**
   * Told about round trips that failed without failing a caller: refreshes (the lease is kept
   * while it may still be valid), releases (the lease then expires after `lockTimeoutMs`), and
   * attempts made for waiters (they keep waiting).
   * @default () => {}
   */
  onError?: (error: unknown) => void;
  /** Random source in [0, 1) for the retry jitter; injectable for tests. @default Math.random */
  random?: () => number;
}

/**
 * A permit of a {@link RedisLimiter}, as core's `Release`: call it to release (a second call
 * counts for nothing and returns the same promise). The promise settles once the lease is
 * removed from Redis and never rejects (a failed removal goes to `onError`, and the lease then
 * expires). `signal` aborts with a {@link LeaseLostError} if the lease is lost while held.
 */
export type RedisRelease = (() => Promise<void>) & { readonly signal: AbortSignal };

interface Waiter {
  resolve: (release: RedisRelease) => void;
  reject: (error: unknown) => void;
  cleanup: () => void;
}

/**
 * One export limit for a whole cluster of replicas, over Redis: each permit is a lease (a member
 * of a sorted set, through redis-semaphore) that its replica refreshes while it holds it, so the
 * permits of a replica that dies come free after `lockTimeoutMs`. Waiting is by polling: this
 * process tries once per `retryIntervalMs` for the first of its waiters, which are served in
 * FIFO order; across replicas there is no order. `active` and `pending` count this process.
 *
 * @example
 * ```ts
 * const redis = new Redis(process.env.REDIS_URL);
 * const limiter = new RedisLimiter({ redis, limit: 10, onLeaseLost: (error) => log.error(error) });
 * const manager = new ExportManager({ limiter, maxQueued: 20, directory: './exports' });
 * ```
 */
export class RedisLimiter implements Limiter {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #lockTimeoutMs: number;
  readonly #refreshIntervalMs: number;
  readonly #retryIntervalMs: number;
  readonly #onLeaseLost: (error: LeaseLostError) => void;
  readonly #onError: (error: unknown) => void;
  readonly #random: () => number;
  readonly #waiters: Waiter[] = [];
  readonly #releasing = new Set<Promise<void>>();
  /** Attempts of {@link tryAcquire} on their way: close() waits for them, one may take a lease. */
  readonly #trying = new Set<Promise<unknown>>();
  /** Callers of {@link drained} waiting for the last held permit to be released. */
  readonly #drainWaiters: (() => void)[] = [];
  #limit: number;
  #active = 0;
  #polling = false;
  #pollDone: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Set by {@link nudge} during an attempt: the sleep after it is skipped. */
  #nudged = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: RedisLimiterOptions) {
    if (typeof options?.redis?.evalsha !== 'function') {
      throw new TypeError(`Expected redis to be an ioredis client, got ${describeValue(options?.redis)}`);
    }
    this.#redis = options.redis;
    this.#limit = checkPositiveInteger('limit', options.limit);
    this.#key = redisKeys(checkPrefix(options.prefix ?? DEFAULT_PREFIX)).limiter;
    this.#lockTimeoutMs = checkPositiveInteger('lockTimeoutMs', options.lockTimeoutMs ?? 10_000);
    this.#refreshIntervalMs = checkPositiveInteger('refreshIntervalMs', options.refreshIntervalMs ?? 3_000);
    if (this.#refreshIntervalMs >= this.#lockTimeoutMs) {
      throw new TypeError(
        `Expected refreshIntervalMs to be less than lockTimeoutMs (${this.#lockTimeoutMs}), got ${describeValue(this.#refreshIntervalMs)}`,
      );
    }
    this.#retryIntervalMs = checkPositiveInteger('retryIntervalMs', options.retryIntervalMs ?? 100);
    this.#onLeaseLost = options.onLeaseLost ?? (() => {});
    this.#onError = options.onError ?? (() => {});
    this.#random = options.random ?? Math.random;
  }

  /** The cluster-wide limit this process acquires against. Raising it retries waiters at once. */
  get limit(): number {
    return this.#limit;
  }

  set limit(value: number) {
    this.#limit = checkPositiveInteger('limit', value);
    this.#nudge();
  }

  /** Permits held in this process (including ones whose lease was lost and not yet released). */
  get active(): number {
    return this.#active;
  }

  /** Callers in this process waiting in {@link acquire}. */
  get pending(): number {
    return this.#waiters.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * One attempt, no waiting: a permit if the cluster has one free and nobody in this process
   * waits ahead. Rejects when Redis cannot be reached.
   */
  tryAcquire(): Promise<RedisRelease | undefined> {
    if (this.#closed || this.#waiters.length > 0) return Promise.resolve(undefined);
    const trying = (async () => {
      const lease = await this.#attempt();
      if (!lease) return undefined;
      // A close() during the round trip wins.
      if (this.#closed) {
        this.#giveBack(lease);
        return undefined;
      }
      return this.#grant(lease);
    })();
    this.#trying.add(trying);
    void trying.then(
      () => this.#trying.delete(trying),
      () => this.#trying.delete(trying),
    );
    return trying;
  }

  /**
   * Waits, without a bound, until a permit is free; rejects with a `CancelledError` (its cause
   * the signal's reason) when `signal` aborts, giving up the place in line, and with a
   * `shutting_down` `BackpressureError` when the limiter closes.
   */
  acquire(options: { signal?: AbortSignal } = {}): Promise<RedisRelease> {
    const { signal } = options;
    if (this.#closed) return Promise.reject(this.#shuttingDown());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<RedisRelease>((resolve, reject) => {
      const onAbort = () => this.#drop(waiter, abortReason(signal as AbortSignal));
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      this.#waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#poll();
    });
  }

  /**
   * Stops handing out permits: waiting and new callers are turned away (`shutting_down`) at
   * once. Permits already held stay valid, and their leases are refreshed, until they are
   * released. The promise resolves once no permit can be granted any more (the attempts that
   * were on their way have ended, a lease one of them took is given back) and the releases
   * already on their way have reached Redis; it does not wait for held permits, because their
   * holders may well await close() before they release (see {@link drained}). Safe to call more
   * than once.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    for (const waiter of this.#waiters.splice(0)) {
      waiter.cleanup();
      waiter.reject(this.#shuttingDown());
    }
    this.#nudge();
    this.#closing = (async () => {
      await Promise.allSettled([this.#pollDone, ...this.#trying]);
      await Promise.allSettled([...this.#releasing]);
    })();
    return this.#closing;
  }

  /**
   * Resolves once this process holds no permit and every release has reached Redis (or failed,
   * told to `onError`): after this the connection can be closed without leaving a lease behind
   * to expire. Call it after {@link close}; on an open limiter it resolves at the first moment
   * nothing is held, though permits may be granted again afterwards.
   *
   * @example
   * ```ts
   * await manager.close(); // ends the exports, which release their permits
   * await limiter.close();
   * await limiter.drained();
   * redis.disconnect();
   * ```
   */
  async drained(): Promise<void> {
    await this.#closing;
    for (;;) {
      if (this.#active > 0) {
        await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
      } else if (this.#releasing.size > 0) {
        await Promise.allSettled([...this.#releasing]);
      } else {
        return;
      }
    }
  }

  /** The leases held across the cluster right now (expired ones not counted), for dashboards. */
  async held(): Promise<number> {
    return this.#redis.zcount(this.#key, Date.now() - this.#lockTimeoutMs, '+inf');
  }

  async #attempt(): Promise<Lease | undefined> {
    const lease = new Lease({
      redis: this.#redis,
      key: this.#key,
      limit: this.#limit,
      lockTimeoutMs: this.#lockTimeoutMs,
      refreshIntervalMs: this.#refreshIntervalMs,
      onLost: (error) => this.#report(this.#onLeaseLost, error),
      onError: (error) => this.#report(this.#onError, error),
    });
    return (await lease.take()) ? lease : undefined;
  }

  /** One polling loop per process serves every waiter, first come first served. */
  #poll(): void {
    // A new waiter does not wake the loop: it would not make a permit any likelier to be free.
    if (this.#polling) return;
    this.#polling = true;
    this.#pollDone = this.#pollLoop();
  }

  async #pollLoop(): Promise<void> {
    try {
      while (!this.#closed && this.#waiters.length > 0) {
        let lease: Lease | undefined;
        this.#nudged = false;
        try {
          lease = await this.#attempt();
        } catch (error) {
          this.#report(this.#onError, error);
        }
        if (lease) {
          // The waiter it was taken for may have left during the round trip: the next one gets it.
          const waiter = this.#closed ? undefined : this.#waiters.shift();
          if (waiter) {
            waiter.cleanup();
            waiter.resolve(this.#grant(lease));
          } else {
            this.#giveBack(lease);
          }
          continue;
        }
        await this.#sleep(this.#retryIntervalMs * (1 + this.#random() / 2));
      }
    } finally {
      // In the same turn as the last look at the waiters, so that no new waiter goes unserved.
      this.#polling = false;
    }
  }

  /**
   * Sleeps for `ms`, or less when nudged (a release here, a raised limit, close), also by a
   * nudge that came while the attempt before was on its way.
   */
  #sleep(ms: number): Promise<void> {
    if (this.#nudged) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  #nudge(): void {
    this.#nudged = true;
    this.#wake?.();
  }

  #grant(lease: Lease): RedisRelease {
    this.#active++;
    let released: Promise<void> | undefined;
    const release = () => {
      if (released) return released;
      this.#active--;
      released = this.#giveBack(lease);
      // Commands on one connection run in order: the next attempt sees this permit free.
      this.#nudge();
      if (this.#active === 0) for (const resolve of this.#drainWaiters.splice(0)) resolve();
      return released;
    };
    return Object.assign(release, { signal: lease.signal });
  }

  /** Removes the lease from Redis; the promise never rejects (a failure goes to `onError`). */
  #giveBack(lease: Lease): Promise<void> {
    const released = lease.giveBack().catch((error: unknown) => this.#report(this.#onError, error));
    this.#releasing.add(released);
    void released.finally(() => this.#releasing.delete(released));
    return released;
  }

  #drop(waiter: Waiter, error: unknown): void {
    const index = this.#waiters.indexOf(waiter);
    if (index === -1) return;
    this.#waiters.splice(index, 1);
    waiter.cleanup();
    waiter.reject(error);
  }

  #shuttingDown(): BackpressureError {
    return new BackpressureError({
      reason: 'shutting_down',
      limit: this.#limit,
      inFlight: this.#active,
    });
  }

  /** A listener that throws must not become an unhandled rejection inside a timer. */
  #report<T>(listener: (value: T) => void, value: T): void {
    try {
      listener(value);
    } catch {
      // the listener's own bug; nothing sensible to do with it here
    }
  }
}

function abortReason(signal: AbortSignal): CancelledError {
  return new CancelledError('Aborted while waiting for an export slot', { cause: signal.reason });
}
