import { describe, expect, it } from 'vitest';
import type { Limiter, Release } from '../admission/limiter.js';
import type { ContractCase } from './contract-case.js';

/** Makes a fresh limiter that hands out `limit` permits and shares no permits with any other test. */
export type MakeLimiter = (limit: number) => Limiter | Promise<Limiter>;

export interface LimiterContractOptions {
  /** Runs after each test, once the test's limiters are closed (e.g. to delete the keys they used). */
  cleanup?: () => Promise<void>;
}

export interface LimiterContext {
  /** A limiter from `makeLimiter`, closed after the case. */
  make(limit: number): Promise<Limiter>;
}

/** A call of `acquire()` observed without awaiting it. `outcome` never rejects. */
interface Attempt {
  readonly outcome: Promise<{ granted: true; release: Release } | { granted: false; error: unknown }>;
  /** Set once the call settled, for checks that nothing was granted yet. */
  settled: boolean;
}

function attempt(limiter: Limiter, signal?: AbortSignal): Attempt {
  const tracked: Attempt = {
    settled: false,
    outcome: limiter.acquire(signal ? { signal } : {}).then(
      (release) => {
        tracked.settled = true;
        return { granted: true, release };
      },
      (error: unknown) => {
        tracked.settled = true;
        return { granted: false, error };
      },
    ),
  };
  return tracked;
}

/** The release of a granted attempt; fails the case when it was refused. */
async function granted(tracked: Attempt, what: string): Promise<Release> {
  const outcome = await tracked.outcome;
  expect(outcome.granted, `${what} should get a permit`).toBe(true);
  return (outcome as { release: Release }).release;
}

/**
 * The first `count` of `attempts` to settle, in the order they settled, as "<name> granted" or
 * "<name> refused". Racing all of them makes a wrong order fail the case instead of hanging it.
 */
function firstSettled(attempts: Record<string, Attempt>, count = 1): Promise<string[]> {
  const labels: string[] = [];
  return new Promise((resolve) => {
    for (const [name, tracked] of Object.entries(attempts)) {
      void tracked.outcome.then((outcome) => {
        labels.push(`${name} ${outcome.granted ? 'granted' : 'refused'}`);
        if (labels.length === count) resolve([...labels]);
      });
    }
  });
}

/** A permit through `tryAcquire()`, which must have one free. */
async function take(limiter: Limiter): Promise<Release> {
  const release = await limiter.tryAcquire();
  expect(release, 'tryAcquire() with a free permit should return a release function').toBeTypeOf('function');
  return release as Release;
}

async function expectFull(limiter: Limiter, why: string): Promise<void> {
  expect(await limiter.tryAcquire(), `tryAcquire() should find no free permit: ${why}`).toBeUndefined();
}

/** @internal The cases of {@link describeLimiterContract}, exported for the suite's own tests. */
export const limiterCases: readonly ContractCase<LimiterContext>[] = [
  {
    name: 'starts with its limit, no permit held and nobody waiting',
    async run({ make }) {
      const limiter = await make(3);
      expect(limiter.limit).toBe(3);
      expect(limiter.active).toBe(0);
      expect(limiter.pending).toBe(0);
    },
  },
  {
    name: 'hands out at most `limit` permits, and tryAcquire() returns undefined when full',
    async run({ make }) {
      const limiter = await make(3);
      const releases = [await take(limiter), await take(limiter), await take(limiter)];
      expect(limiter.active).toBe(3);
      await expectFull(limiter, 'all 3 permits are held');
      expect(limiter.active).toBe(3);
      releases[0]?.();
      expect(limiter.active).toBe(2);
      releases.push(await take(limiter));
      await expectFull(limiter, 'all 3 permits are held again');
      for (const release of releases) release();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'acquire() takes a free permit without waiting',
    async run({ make }) {
      const limiter = await make(2);
      const release = await granted(attempt(limiter), 'acquire() with free permits');
      expect(limiter.active).toBe(1);
      expect(limiter.pending).toBe(0);
      release();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'acquire() waits while every permit is held, and waiters are granted in FIFO order on release',
    async run({ make }) {
      const limiter = await make(1);
      let release = await take(limiter);
      const waiters = { first: attempt(limiter), second: attempt(limiter), third: attempt(limiter) };
      expect(limiter.pending).toBe(3);
      expect(limiter.active).toBe(1);
      const order: string[] = [];
      for (const name of ['first', 'second', 'third'] as const) {
        release();
        const next = await firstSettled(
          Object.fromEntries(Object.entries(waiters).filter(([waiter]) => !order.includes(waiter))),
        );
        expect(next, 'the longest waiting caller should get the released permit').toEqual([
          `${name} granted`,
        ]);
        order.push(name);
        release = await granted(waiters[name], `the ${name} waiter`);
        expect(limiter.active).toBe(1);
        expect(limiter.pending).toBe(3 - order.length);
      }
      release();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'tryAcquire() never takes a permit ahead of a waiter',
    async run({ make }) {
      const limiter = await make(1);
      const hold = await take(limiter);
      const waiter = attempt(limiter);
      hold();
      await expectFull(limiter, 'the released permit belongs to the waiter');
      (await granted(waiter, 'the waiter'))();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'calling a release twice gives back one permit',
    async run({ make }) {
      const limiter = await make(2);
      const first = await take(limiter);
      const second = await take(limiter);
      first();
      first();
      expect(limiter.active).toBe(1);
      const third = await take(limiter);
      await expectFull(limiter, 'the second and third permits are held');
      expect(limiter.active).toBe(2);
      second();
      third();
      third();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'a waiter whose signal aborts is refused and gives up its place to the next waiter',
    async run({ make }) {
      const limiter = await make(1);
      const hold = await take(limiter);
      const controller = new AbortController();
      const aborted = attempt(limiter, controller.signal);
      const next = attempt(limiter);
      expect(limiter.pending).toBe(2);
      controller.abort(new Error('the caller left'));
      hold();
      // Either the abort is seen first or the next waiter is granted first; never the aborted one.
      expect(['aborted refused', 'next granted']).toContain((await firstSettled({ aborted, next }))[0]);
      const release = await granted(next, 'the waiter behind the aborted one');
      expect(limiter.pending, 'the aborted waiter should have left the line').toBe(0);
      expect(limiter.active).toBe(1);
      // Released before the aborted waiter is awaited, so that one which kept its place gets
      // this permit and fails the case, instead of waiting for ever.
      release();
      expect((await aborted.outcome).granted, 'the aborted waiter should be refused').toBe(false);
      expect(limiter.active).toBe(0);
      // The aborted waiter holds no ghost place: the permit is free for anyone.
      (await take(limiter))();
    },
  },
  {
    name: 'acquire() with an already aborted signal is refused and takes no place',
    async run({ make }) {
      const limiter = await make(1);
      const hold = await take(limiter);
      const aborted = attempt(limiter, AbortSignal.abort(new Error('gone before asking')));
      const next = attempt(limiter);
      hold();
      expect(['aborted refused', 'next granted']).toContain((await firstSettled({ aborted, next }))[0]);
      (await granted(next, 'the waiter behind the aborted call'))();
      expect((await aborted.outcome).granted, 'an acquire() with an aborted signal should be refused').toBe(
        false,
      );
      expect(limiter.pending).toBe(0);
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'raising the limit wakes waiters at once',
    async run({ make }) {
      const limiter = await make(1);
      const hold = await take(limiter);
      const waiters = { first: attempt(limiter), second: attempt(limiter), third: attempt(limiter) };
      expect(limiter.pending).toBe(3);
      limiter.limit = 3;
      expect(limiter.limit).toBe(3);
      // No release happens: only the raised limit can let two waiters in, and the first two in line.
      expect((await firstSettled(waiters, 2)).sort()).toEqual(['first granted', 'second granted']);
      const first = await granted(waiters.first, 'the first waiter');
      const second = await granted(waiters.second, 'the second waiter');
      expect(limiter.active).toBe(3);
      expect(limiter.pending).toBe(1);
      hold();
      const third = await granted(waiters.third, 'the third waiter, on a release');
      expect(limiter.pending).toBe(0);
      for (const release of [first, second, third]) release();
      expect(limiter.active).toBe(0);
    },
  },
  {
    name: 'lowering the limit takes no permit back and grants nothing until below the new limit',
    async run({ make }) {
      const limiter = await make(3);
      const releases = [await take(limiter), await take(limiter), await take(limiter)];
      limiter.limit = 1;
      expect(limiter.limit).toBe(1);
      expect(limiter.active, 'permits held when the limit was lowered stay held').toBe(3);
      const waiter = attempt(limiter);
      expect(limiter.pending).toBe(1);
      releases[0]?.();
      expect(limiter.active).toBe(2);
      await expectFull(limiter, '2 permits are held over a limit of 1');
      releases[1]?.();
      expect(limiter.active).toBe(1);
      await expectFull(limiter, '1 permit is held under a limit of 1');
      expect(waiter.settled, 'the waiter should wait until the held permits drop below the limit').toBe(
        false,
      );
      releases[2]?.();
      (await granted(waiter, 'the waiter, once every old permit is back'))();
      expect(limiter.active).toBe(0);
      expect(limiter.pending).toBe(0);
    },
  },
  {
    name: 'close() refuses new permits, while permits already held stay valid',
    async run({ make }) {
      const limiter = await make(2);
      const held = await take(limiter);
      await limiter.close();
      expect(limiter.active, 'a permit held at close() stays held').toBe(1);
      await expectFull(limiter, 'the limiter is closed');
      // An acquire() after close() must not be granted; it may be refused at once or wait to be aborted.
      const controller = new AbortController();
      const late = attempt(limiter, controller.signal);
      controller.abort(new Error('giving up'));
      expect((await late.outcome).granted, 'acquire() after close() should be refused').toBe(false);
      held();
      expect(limiter.active).toBe(0);
      await expectFull(limiter, 'the limiter is closed, though every permit is back');
    },
  },
  {
    name: 'a waiter at close() is never granted, even when a permit comes back',
    async run({ make }) {
      const limiter = await make(1);
      const held = await take(limiter);
      const controller = new AbortController();
      const waiter = attempt(limiter, controller.signal);
      await limiter.close();
      held();
      // close() may refuse the waiter at once, or leave it to its signal; either way it gets nothing.
      controller.abort(new Error('giving up'));
      expect((await waiter.outcome).granted, 'a waiter at close() should be refused').toBe(false);
      expect(limiter.pending).toBe(0);
      expect(limiter.active).toBe(0);
    },
  },
];

/**
 * Runs one case against limiters from `makeLimiter`, then closes them and runs `cleanup`.
 * @internal
 */
export async function runLimiterCase(
  contractCase: ContractCase<LimiterContext>,
  makeLimiter: MakeLimiter,
  options: LimiterContractOptions = {},
): Promise<void> {
  const made: Limiter[] = [];
  try {
    await contractCase.run({
      async make(limit) {
        const limiter = await makeLimiter(limit);
        made.push(limiter);
        return limiter;
      },
    });
  } finally {
    // Cases that test close() have closed theirs already; a second close() is not part of the
    // contract, so its failure is no failure of the case.
    for (const limiter of made) await Promise.resolve(limiter.close()).catch(() => {});
    await options.cleanup?.();
  }
}

/**
 * Registers a vitest suite that checks a {@link Limiter} against its contract: at most `limit`
 * permits, `tryAcquire()` never queues, `acquire()` waits in FIFO order, a release counts once,
 * an abort gives the place up, raising the limit wakes waiters, lowering it and `close()` take
 * nothing back, and `active`/`pending` follow along. Call it at the top level of a test file.
 *
 * The cases hold and release permits by hand and use no timers, and await every `tryAcquire()`
 * and `close()`, so that a limiter answering over the network can pass. They assume what
 * {@link Limiter} promises per object: `active` and `pending` count this object's callers and
 * change as soon as a call starts waiting, is granted or is released; a release is seen by this
 * object's next calls; and an aborted waiter's promise rejects at once, even if the shared
 * queue hands it a permit later (the limiter gives that one back itself).
 *
 * @param name Shown in the suite title.
 * @param makeLimiter A fresh limiter of `limit` permits for each test, sharing no permits with others.
 *
 * @example
 * ```ts
 * import { Semaphore } from '@spark-export/core';
 * import { describeLimiterContract } from '@spark-export/core/testing';
 *
 * describeLimiterContract('Semaphore', (limit) => new Semaphore({ limit, maxQueued: Number.MAX_SAFE_INTEGER }));
 *
 * // Your shared limiter: a key of its own for each test, deleted afterwards.
 * describeLimiterContract('RedisLimiter', (limit) => new RedisLimiter(redis, { key: `test:${randomUUID()}`, limit }), {
 *   cleanup: async () => void (await redis.del(await redis.keys('test:*'))),
 * });
 * ```
 */
export function describeLimiterContract(
  name: string,
  makeLimiter: MakeLimiter,
  options: LimiterContractOptions = {},
): void {
  describe(`Limiter contract: ${name}`, () => {
    for (const contractCase of limiterCases) {
      it(contractCase.name, () => runLimiterCase(contractCase, makeLimiter, options));
    }
  });
}
