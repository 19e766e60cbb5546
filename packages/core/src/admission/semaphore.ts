import { BackpressureError, type BackpressureReason, CancelledError, describeValue } from '../errors.js';

/** Gives a permit back. Safe to call more than once: only the first call counts. */
export type Release = () => void;

export interface SemaphoreOptions {
  /**
   * How many permits may be held at once. Can be changed later through {@link Semaphore.limit}.
   * @default 5
   */
  limit?: number;
  /**
   * How many callers may wait for a permit. `0` rejects at once when every permit is held.
   * @default 0
   */
  maxQueued?: number;
  /**
   * Seconds a rejected caller should wait before retrying, put on the {@link BackpressureError}.
   * The export manager plugs its duration-based estimate in here.
   * @default () => 1
   */
  retryAfterSeconds?: (reason: BackpressureReason) => number;
}

export interface AcquireOptions {
  /** Aborting it while waiting gives up the place in the queue (rejects with `CancelledError`). */
  signal?: AbortSignal;
  /** Longest wait for a permit; then the call rejects with reason `queue_timeout`. */
  timeoutMs?: number;
  /**
   * Wait even when the queue is full. For work that was admitted earlier and must not be
   * turned away now, such as jobs resumed after a restart.
   * @default false
   */
  ignoreQueueLimit?: boolean;
}

interface Waiter {
  grant: (release: Release) => void;
  reject: (error: unknown) => void;
  cleanup: () => void;
}

/**
 * A bounded, FIFO counting semaphore with a bounded wait queue. It never aborts work that
 * holds a permit: lowering the limit only delays new grants, and `close()` only turns new
 * and waiting callers away.
 *
 * @example
 * ```ts
 * const exports = new Semaphore({ limit: 5, maxQueued: 10 });
 * await exports.run(() => writeExport(), { timeoutMs: 30_000 });
 * ```
 */
export class Semaphore {
  #limit: number;
  #maxQueued: number;
  #active = 0;
  #closed = false;
  readonly #waiters: Waiter[] = [];
  readonly #retryAfterSeconds: (reason: BackpressureReason) => number;

  constructor(options: SemaphoreOptions = {}) {
    this.#limit = checkCount('limit', options.limit ?? 5, 1);
    this.#maxQueued = checkCount('maxQueued', options.maxQueued ?? 0, 0);
    this.#retryAfterSeconds = options.retryAfterSeconds ?? (() => 1);
  }

  /** Permits held right now. May exceed `limit` for a while after the limit was lowered. */
  get active(): number {
    return this.#active;
  }

  /** Callers waiting for a permit. */
  get pending(): number {
    return this.#waiters.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get limit(): number {
    return this.#limit;
  }

  /** Raising the limit wakes waiters at once; lowering it never takes permits back. */
  set limit(value: number) {
    this.#limit = checkCount('limit', value, 1);
    this.#drain();
  }

  get maxQueued(): number {
    return this.#maxQueued;
  }

  set maxQueued(value: number) {
    this.#maxQueued = checkCount('maxQueued', value, 0);
  }

  /** Takes a permit if one is free and nobody is waiting ahead; `undefined` otherwise. */
  tryAcquire(): Release | undefined {
    if (this.#closed || this.#waiters.length > 0 || this.#active >= this.#limit) return undefined;
    return this.#grant();
  }

  /**
   * Takes a permit, waiting in FIFO order when none is free.
   * @throws {BackpressureError} `concurrency_limit` (no queue), `queue_full`, `queue_timeout`, `shutting_down`
   * @throws {CancelledError} when `signal` aborts while waiting
   */
  acquire(options: AcquireOptions = {}): Promise<Release> {
    const { signal, timeoutMs } = options;
    if (timeoutMs !== undefined) {
      // A bad option is the caller's bug, but it must still surface through the promise like
      // every other failure, or `acquire(...).catch()` would miss it.
      try {
        checkCount('timeoutMs', timeoutMs, 0);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (this.#closed) return Promise.reject(this.#rejection('shutting_down'));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const release = this.tryAcquire();
    if (release) return Promise.resolve(release);
    if (!options.ignoreQueueLimit && this.#waiters.length >= this.#maxQueued) {
      return Promise.reject(this.#rejection(this.#maxQueued === 0 ? 'concurrency_limit' : 'queue_full'));
    }

    return new Promise<Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => this.#dropWaiter(waiter, abortError(signal as AbortSignal));
      const waiter: Waiter = {
        grant: resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      this.#waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      // setTimeout fires after 1 ms when given more than 2^31 - 1 ms, so long waits are chained.
      const arm = (remainingMs: number) => {
        timer = setTimeout(
          () =>
            remainingMs > MAX_TIMER_MS
              ? arm(remainingMs - MAX_TIMER_MS)
              : this.#dropWaiter(waiter, this.#rejection('queue_timeout')),
          Math.min(remainingMs, MAX_TIMER_MS),
        );
      };
      if (timeoutMs !== undefined) arm(timeoutMs);
    });
  }

  /** Runs `fn` with a permit and releases it in `finally`, whatever `fn` does. */
  async run<T>(fn: () => T | PromiseLike<T>, options?: AcquireOptions): Promise<T> {
    const release = await this.acquire(options);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Turns waiting and new callers away with reason `shutting_down`. Permits already held stay
   * valid until released.
   */
  close(): void {
    this.#closed = true;
    const waiters = this.#waiters.splice(0);
    for (const waiter of waiters) {
      waiter.cleanup();
      waiter.reject(this.#rejection('shutting_down'));
    }
  }

  #grant(): Release {
    this.#active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active--;
      this.#drain();
    };
  }

  #drain(): void {
    while (!this.#closed && this.#waiters.length > 0 && this.#active < this.#limit) {
      const waiter = this.#waiters.shift() as Waiter;
      waiter.cleanup();
      waiter.grant(this.#grant());
    }
  }

  #dropWaiter(waiter: Waiter, error: unknown): void {
    const index = this.#waiters.indexOf(waiter);
    if (index === -1) return;
    this.#waiters.splice(index, 1);
    waiter.cleanup();
    waiter.reject(error);
  }

  #rejection(reason: BackpressureReason): BackpressureError {
    return new BackpressureError({
      reason,
      limit: this.#limit,
      inFlight: this.#active,
      retryAfterSeconds: this.#retryAfterSeconds(reason),
    });
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1;

function abortError(signal: AbortSignal): CancelledError {
  return new CancelledError('Aborted while waiting for an export slot', { cause: signal.reason });
}

function checkCount(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    const expected = min === 0 ? 'a non-negative integer' : 'a positive integer';
    throw new TypeError(`Expected ${name} to be ${expected}, got ${describeValue(value)}`);
  }
  return value;
}
