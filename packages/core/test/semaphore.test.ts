import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Release, Semaphore } from '../src/admission/semaphore.js';
import { BackpressureError, CancelledError } from '../src/errors.js';
import { deferred } from '../src/testing/deferred.js';

interface Tracked<T> {
  state: 'pending' | 'fulfilled' | 'rejected';
  /** How many times the promise settled; a promise must settle exactly once. */
  settled: number;
  value: T | undefined;
  error: unknown;
}

/** Observes a promise without awaiting it, so a test can look at it while it is still pending. */
function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked: Tracked<T> = { state: 'pending', settled: 0, value: undefined, error: undefined };
  promise.then(
    (value) => {
      tracked.settled++;
      tracked.state = 'fulfilled';
      tracked.value = value;
    },
    (error: unknown) => {
      tracked.settled++;
      tracked.state = 'rejected';
      tracked.error = error;
    },
  );
  return tracked;
}

/** Lets already-settled promises run their callbacks. Uses microtasks only, no clock. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

/** Takes every free permit through tryAcquire and returns their releases. */
function fill(semaphore: Semaphore): Release[] {
  const releases: Release[] = [];
  for (let release = semaphore.tryAcquire(); release; release = semaphore.tryAcquire())
    releases.push(release);
  return releases;
}

function backpressure(tracked: Tracked<unknown>): BackpressureError {
  expect(tracked.state).toBe('rejected');
  expect(tracked.error).toBeInstanceOf(BackpressureError);
  return tracked.error as BackpressureError;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('Semaphore constructor and setters', () => {
  it('uses limit 5 and maxQueued 0 by default', () => {
    const semaphore = new Semaphore();
    expect(semaphore.limit).toBe(5);
    expect(semaphore.maxQueued).toBe(0);
    expect(fill(semaphore)).toHaveLength(5);
  });

  it.each([
    [{ limit: -1 }, 'Expected limit to be a positive integer, got -1 (number)'],
    [{ limit: 0 }, 'Expected limit to be a positive integer, got 0 (number)'],
    [{ limit: 1.5 }, 'Expected limit to be a positive integer, got 1.5 (number)'],
    [{ limit: Number.NaN }, 'Expected limit to be a positive integer, got NaN (number)'],
    [{ limit: '3' as unknown as number }, 'Expected limit to be a positive integer, got "3" (string)'],
    [{ maxQueued: -1 }, 'Expected maxQueued to be a non-negative integer, got -1 (number)'],
    [{ maxQueued: 2.5 }, 'Expected maxQueued to be a non-negative integer, got 2.5 (number)'],
    [
      { maxQueued: Number.POSITIVE_INFINITY },
      'Expected maxQueued to be a non-negative integer, got Infinity (number)',
    ],
  ])('rejects %o with a TypeError that says what was expected and given', (options, message) => {
    expect(() => new Semaphore(options)).toThrow(new TypeError(message));
  });

  it('accepts maxQueued 0 and limit 1', () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 0 });
    expect(semaphore.limit).toBe(1);
    expect(semaphore.maxQueued).toBe(0);
  });

  it('validates the limit and maxQueued setters and keeps the old values on error', () => {
    const semaphore = new Semaphore({ limit: 2, maxQueued: 3 });
    expect(() => {
      semaphore.limit = 0;
    }).toThrow(new TypeError('Expected limit to be a positive integer, got 0 (number)'));
    expect(() => {
      semaphore.maxQueued = -2;
    }).toThrow(new TypeError('Expected maxQueued to be a non-negative integer, got -2 (number)'));
    expect(semaphore.limit).toBe(2);
    expect(semaphore.maxQueued).toBe(3);
  });

  it('rejects (does not throw) when timeoutMs is invalid, without taking a permit or a queue place', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    let promise: Promise<Release> | undefined;
    expect(() => {
      promise = semaphore.acquire({ timeoutMs: -1 });
    }).not.toThrow();
    await expect(promise).rejects.toThrow(
      new TypeError('Expected timeoutMs to be a non-negative integer, got -1 (number)'),
    );
    expect(semaphore.active).toBe(0);
    expect(semaphore.pending).toBe(0);
  });
});

describe('Semaphore.tryAcquire', () => {
  it('hands out permits up to the limit, then returns undefined without queueing', () => {
    const semaphore = new Semaphore({ limit: 2, maxQueued: 5 });
    const first = semaphore.tryAcquire();
    const second = semaphore.tryAcquire();
    expect(first).toBeTypeOf('function');
    expect(second).toBeTypeOf('function');
    expect(semaphore.tryAcquire()).toBeUndefined();
    expect(semaphore.active).toBe(2);
    expect(semaphore.pending).toBe(0);

    first?.();
    expect(semaphore.active).toBe(1);
    expect(semaphore.tryAcquire()).toBeTypeOf('function');
    expect(semaphore.active).toBe(2);
  });

  it('does not let a caller jump ahead of waiters when a permit is released', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const [release] = fill(semaphore);
    const waiter = track(semaphore.acquire());
    release?.();
    // The freed permit went to the waiter at once, not to whoever asks next.
    expect(semaphore.tryAcquire()).toBeUndefined();
    await flush();
    expect(waiter.state).toBe('fulfilled');
    expect(semaphore.active).toBe(1);
  });
});

describe('Semaphore.run', () => {
  it('returns what the task returns and holds a permit only while it runs', async () => {
    const semaphore = new Semaphore({ limit: 1 });
    const task = deferred<string>();
    const result = track(semaphore.run(() => task.promise));
    await flush();
    expect(semaphore.active).toBe(1);
    expect(result.state).toBe('pending');

    task.resolve('done');
    await flush();
    expect(result.state).toBe('fulfilled');
    expect(result.value).toBe('done');
    expect(semaphore.active).toBe(0);
  });

  it('releases the permit when the task throws synchronously, and hands it to the next waiter', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const boom = new Error('boom');
    const failing = track(
      semaphore.run(() => {
        throw boom;
      }),
    );
    const next = track(semaphore.run(() => 'next'));
    await flush();
    expect(failing.state).toBe('rejected');
    expect(failing.error).toBe(boom);
    expect(next.state).toBe('fulfilled');
    expect(next.value).toBe('next');
    expect(semaphore.active).toBe(0);
    expect(semaphore.pending).toBe(0);
  });

  it('releases the permit when the task rejects', async () => {
    const semaphore = new Semaphore({ limit: 1 });
    const boom = new Error('async boom');
    await expect(semaphore.run(() => Promise.reject(boom))).rejects.toBe(boom);
    expect(semaphore.active).toBe(0);
    expect(semaphore.tryAcquire()).toBeTypeOf('function');
  });

  it('does not run the task when no permit can be had', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 0 });
    fill(semaphore);
    const task = vi.fn();
    await expect(semaphore.run(task)).rejects.toMatchObject({ reason: 'concurrency_limit' });
    expect(task).not.toHaveBeenCalled();
    expect(semaphore.active).toBe(1);
  });
});

describe('Semaphore abort signal', () => {
  it('gives up the queue place when the signal aborts while waiting; the next waiter gets the permit later', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 5 });
    const [release] = fill(semaphore);
    const controller = new AbortController();
    const aborted = track(semaphore.acquire({ signal: controller.signal }));
    const next = track(semaphore.acquire());
    expect(semaphore.pending).toBe(2);

    const reason = new Error('client went away');
    controller.abort(reason);
    await flush();
    expect(aborted.state).toBe('rejected');
    expect(aborted.error).toBeInstanceOf(CancelledError);
    expect(aborted.error).toMatchObject({ code: 'CANCELLED', statusCode: 499, cause: reason });
    expect(semaphore.pending).toBe(1);
    expect(semaphore.active).toBe(1);
    expect(next.state).toBe('pending');

    release?.();
    await flush();
    expect(next.state).toBe('fulfilled');
    expect(semaphore.active).toBe(1);
    expect(semaphore.pending).toBe(0);
    expect(aborted.settled).toBe(1);
  });

  it('rejects at once without taking a permit when the signal is already aborted', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const signal = AbortSignal.abort();
    await expect(semaphore.acquire({ signal })).rejects.toBeInstanceOf(CancelledError);
    expect(semaphore.active).toBe(0);
    expect(semaphore.pending).toBe(0);

    // Also when every permit is held: it is not queued either.
    fill(semaphore);
    await expect(semaphore.acquire({ signal })).rejects.toBeInstanceOf(CancelledError);
    expect(semaphore.pending).toBe(0);
    expect(semaphore.active).toBe(1);
  });

  it('does not take the permit back when the signal aborts after the grant', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const [release] = fill(semaphore);
    const controller = new AbortController();
    const waiter = track(semaphore.acquire({ signal: controller.signal }));
    release?.();
    await flush();
    expect(waiter.state).toBe('fulfilled');

    controller.abort();
    await flush();
    expect(semaphore.active).toBe(1);
    expect(waiter.settled).toBe(1);
    waiter.value?.();
    expect(semaphore.active).toBe(0);
  });
});

describe('Semaphore release handle', () => {
  it('counts only the first call: active does not go negative', () => {
    const semaphore = new Semaphore({ limit: 2 });
    const [first] = fill(semaphore);
    first?.();
    first?.();
    expect(semaphore.active).toBe(1);
    // If the second call had counted, two more permits would be free here.
    expect(fill(semaphore)).toHaveLength(1);
    expect(semaphore.active).toBe(2);
  });

  it('grants only one waiter when a permit is released twice', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 3 });
    const [release] = fill(semaphore);
    const a = track(semaphore.acquire());
    const b = track(semaphore.acquire());
    release?.();
    release?.();
    await flush();
    expect(a.state).toBe('fulfilled');
    expect(b.state).toBe('pending');
    expect(semaphore.active).toBe(1);
    expect(semaphore.pending).toBe(1);
  });
});

describe('Semaphore timeout', () => {
  it('rejects with queue_timeout (429, QUEUE_TIMEOUT) once timeoutMs has passed', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 2 });
    const [release] = fill(semaphore);
    const waiter = track(semaphore.acquire({ timeoutMs: 1_000 }));

    await vi.advanceTimersByTimeAsync(999);
    expect(waiter.state).toBe('pending');
    expect(semaphore.pending).toBe(1);

    await vi.advanceTimersByTimeAsync(1);
    const error = backpressure(waiter);
    expect(error).toMatchObject({
      reason: 'queue_timeout',
      code: 'QUEUE_TIMEOUT',
      statusCode: 429,
      limit: 1,
      inFlight: 1,
      retryAfterSeconds: 1,
    });
    expect(semaphore.pending).toBe(0);

    // The timed-out caller no longer gets a permit.
    release?.();
    await flush();
    expect(semaphore.active).toBe(0);
    expect(waiter.settled).toBe(1);
  });

  it('cancels the timer when the permit is granted in time', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const [release] = fill(semaphore);
    const waiter = track(semaphore.acquire({ timeoutMs: 1_000 }));
    expect(vi.getTimerCount()).toBe(1);

    release?.();
    await flush();
    expect(waiter.state).toBe('fulfilled');
    expect(vi.getTimerCount()).toBe(0);

    await vi.advanceTimersByTimeAsync(5_000);
    expect(waiter.settled).toBe(1);
    expect(semaphore.active).toBe(1);
  });

  it('grants at once with timeoutMs 0 when a permit is free', async () => {
    const semaphore = new Semaphore({ limit: 1 });
    await expect(semaphore.acquire({ timeoutMs: 0 })).resolves.toBeTypeOf('function');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps waiting for a timeout longer than the 2^31 - 1 ms setTimeout can hold', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    fill(semaphore);
    const thirtyDays = 30 * 24 * 60 * 60 * 1_000;
    const waiter = track(semaphore.acquire({ timeoutMs: thirtyDays }));

    await vi.advanceTimersByTimeAsync(1_000);
    expect(waiter.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(thirtyDays - 1_001);
    expect(waiter.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(backpressure(waiter).reason).toBe('queue_timeout');
  });

  it('clears a chained long timer when the permit is granted', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1 });
    const [release] = fill(semaphore);
    const waiter = track(semaphore.acquire({ timeoutMs: 2 ** 32 }));
    await vi.advanceTimersByTimeAsync(2 ** 31);
    expect(waiter.state).toBe('pending');
    release?.();
    await flush();
    expect(waiter.state).toBe('fulfilled');
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('Semaphore FIFO order', () => {
  it('grants waiters in the order they asked', async () => {
    const semaphore = new Semaphore({ limit: 2, maxQueued: 10 });
    const held = fill(semaphore);
    const granted: number[] = [];
    const releases = new Map<number, Release>();
    for (let i = 0; i < 6; i++) {
      void semaphore.acquire().then((release) => {
        granted.push(i);
        releases.set(i, release);
      });
    }
    await flush();
    expect(granted).toEqual([]);

    held[1]?.();
    await flush();
    expect(granted).toEqual([0]);
    held[0]?.();
    await flush();
    expect(granted).toEqual([0, 1]);

    // Releasing out of order still grants in queue order.
    releases.get(1)?.();
    releases.get(0)?.();
    await flush();
    expect(granted).toEqual([0, 1, 2, 3]);
    for (const i of [3, 2]) releases.get(i)?.();
    await flush();
    expect(granted).toEqual([0, 1, 2, 3, 4, 5]);
    expect(semaphore.active).toBe(2);
    expect(semaphore.pending).toBe(0);
  });
});

describe('Semaphore queue bounds', () => {
  it('rejects at once with concurrency_limit when maxQueued is 0', async () => {
    const semaphore = new Semaphore({ limit: 2, maxQueued: 0 });
    fill(semaphore);
    const rejected = track(semaphore.acquire({ timeoutMs: 10_000 }));
    await flush();
    const error = backpressure(rejected);
    expect(error).toMatchObject({
      reason: 'concurrency_limit',
      code: 'BACKPRESSURE',
      statusCode: 429,
      limit: 2,
      inFlight: 2,
      retryAfterSeconds: 1,
    });
    expect(error.message).toBe('Too many exports in progress (2 of 2); retry later');
    expect(semaphore.pending).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects the (N+1)th waiter with queue_full and keeps the first N queued', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 3 });
    fill(semaphore);
    const waiters = [1, 2, 3].map(() => track(semaphore.acquire()));
    const overflow = track(semaphore.acquire());
    await flush();
    for (const waiter of waiters) expect(waiter.state).toBe('pending');
    const error = backpressure(overflow);
    expect(error).toMatchObject({ reason: 'queue_full', code: 'BACKPRESSURE', statusCode: 429 });
    expect(error.limit).toBe(1);
    expect(error.inFlight).toBe(1);
    expect(Number.isInteger(error.retryAfterSeconds)).toBe(true);
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(semaphore.pending).toBe(3);
  });

  it('puts the retryAfterSeconds option on the error, rounded up, and asks it with the reason', async () => {
    const retryAfterSeconds = vi.fn((reason: string) => (reason === 'queue_full' ? 7.2 : 42));
    const semaphore = new Semaphore({ limit: 1, maxQueued: 1, retryAfterSeconds });
    fill(semaphore);
    const queued = track(semaphore.acquire());
    await expect(semaphore.acquire()).rejects.toMatchObject({ reason: 'queue_full', retryAfterSeconds: 8 });
    expect(retryAfterSeconds).toHaveBeenCalledWith('queue_full');

    semaphore.close();
    await expect(semaphore.acquire()).rejects.toMatchObject({
      reason: 'shutting_down',
      retryAfterSeconds: 42,
    });
    expect(backpressure(queued).retryAfterSeconds).toBe(42);
    expect(retryAfterSeconds).toHaveBeenCalledWith('shutting_down');
  });
});

describe('Semaphore limit changes', () => {
  it('wakes waiters at once, in FIFO order, when the limit is raised', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 5 });
    fill(semaphore);
    const order: string[] = [];
    const a = track(semaphore.acquire().then(() => order.push('a')));
    const b = track(semaphore.acquire().then(() => order.push('b')));
    const c = track(semaphore.acquire().then(() => order.push('c')));

    semaphore.limit = 3;
    expect(semaphore.active).toBe(3);
    expect(semaphore.pending).toBe(1);
    await flush();
    expect(order).toEqual(['a', 'b']);
    expect(a.state).toBe('fulfilled');
    expect(b.state).toBe('fulfilled');
    expect(c.state).toBe('pending');
  });

  it('does not take permits back when the limit is lowered, and grants again only below the new limit', async () => {
    const semaphore = new Semaphore({ limit: 3, maxQueued: 5 });
    const held = fill(semaphore);
    expect(held).toHaveLength(3);
    const waiter = track(semaphore.acquire());

    semaphore.limit = 1;
    expect(semaphore.active).toBe(3);
    expect(semaphore.tryAcquire()).toBeUndefined();

    held[0]?.();
    await flush();
    expect(semaphore.active).toBe(2);
    expect(waiter.state).toBe('pending');

    held[1]?.();
    await flush();
    expect(semaphore.active).toBe(1);
    expect(waiter.state).toBe('pending');
    expect(semaphore.tryAcquire()).toBeUndefined();

    held[2]?.();
    await flush();
    expect(waiter.state).toBe('fulfilled');
    expect(semaphore.active).toBe(1);
    expect(semaphore.pending).toBe(0);
  });
});

describe('Semaphore.close', () => {
  it('rejects waiters and new callers with shutting_down (503) while held permits stay valid', async () => {
    const semaphore = new Semaphore({ limit: 1, maxQueued: 5 });
    const [release] = fill(semaphore);
    const controller = new AbortController();
    const plain = track(semaphore.acquire());
    const timed = track(semaphore.acquire({ timeoutMs: 1_000 }));
    const abortable = track(semaphore.acquire({ signal: controller.signal }));

    semaphore.close();
    expect(semaphore.closed).toBe(true);
    expect(semaphore.pending).toBe(0);
    await flush();
    for (const waiter of [plain, timed, abortable]) {
      expect(backpressure(waiter)).toMatchObject({
        reason: 'shutting_down',
        code: 'SHUTTING_DOWN',
        statusCode: 503,
        limit: 1,
        inFlight: 1,
      });
    }
    expect(vi.getTimerCount()).toBe(0);

    // Late events on rejected waiters change nothing.
    controller.abort();
    await vi.advanceTimersByTimeAsync(5_000);
    for (const waiter of [plain, timed, abortable]) expect(waiter.settled).toBe(1);

    await expect(semaphore.acquire()).rejects.toMatchObject({ reason: 'shutting_down', statusCode: 503 });
    await expect(semaphore.run(() => 'never')).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    expect(semaphore.tryAcquire()).toBeUndefined();

    expect(semaphore.active).toBe(1);
    release?.();
    expect(semaphore.active).toBe(0);
    // Still closed: a freed permit is not handed out.
    expect(semaphore.tryAcquire()).toBeUndefined();
  });

  it('reports shutting_down before an already-aborted signal', async () => {
    const semaphore = new Semaphore();
    semaphore.close();
    await expect(semaphore.acquire({ signal: AbortSignal.abort() })).rejects.toMatchObject({
      reason: 'shutting_down',
    });
  });

  it('lets a task that holds a permit finish after close', async () => {
    const semaphore = new Semaphore({ limit: 1 });
    const task = deferred<number>();
    const running = semaphore.run(() => task.promise);
    await flush();
    semaphore.close();
    task.resolve(7);
    await expect(running).resolves.toBe(7);
    expect(semaphore.active).toBe(0);
  });
});
