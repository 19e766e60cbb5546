import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Release, Semaphore } from '../src/admission/semaphore.js';
import { BackpressureError, CancelledError } from '../src/errors.js';

/**
 * Model-based test: random command sequences run against a real Semaphore (with fake timers)
 * and against a tiny reference model. After every step the outcome of every acquire, `active`
 * and `pending` must match the model, and the limit invariants must hold.
 */

type Command =
  | { kind: 'acquire'; timeoutMs: number | undefined; abortable: boolean }
  | { kind: 'acquirePreAborted' }
  | { kind: 'abort'; pick: number }
  | { kind: 'release'; pick: number; twice: boolean }
  | { kind: 'releaseAgain'; pick: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'setLimit'; limit: number }
  | { kind: 'setMaxQueued'; maxQueued: number }
  | { kind: 'tryAcquire' }
  | { kind: 'close' };

const timeoutArb = fc.option(fc.constantFrom(0, 1, 5, 10, 50, 200), { nil: undefined });

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('acquire' as const),
      timeoutMs: timeoutArb,
      abortable: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('acquirePreAborted' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }) },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat(), twice: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('releaseAgain' as const), pick: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 100 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('setLimit' as const), limit: fc.integer({ min: 1, max: 5 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('setMaxQueued' as const),
      maxQueued: fc.integer({ min: 0, max: 5 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('tryAcquire' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('close' as const) }) },
);

type Outcome =
  | { state: 'pending' }
  | { state: 'granted' }
  | { state: 'cancelled' }
  | { state: 'rejected'; reason: string; limit: number; inFlight: number };

interface Call {
  id: number;
  /** What the model says should have happened. */
  expected: Outcome;
  /** What the real semaphore did. */
  actual: Outcome;
  settled: number;
  release: Release | undefined;
  controller: AbortController | undefined;
  deadline: number | undefined;
}

class Model {
  active = 0;
  closed = false;
  now = 0;
  readonly queue: Call[] = [];
  /** Calls holding a permit, in grant order. */
  readonly held: Call[] = [];

  constructor(
    public limit: number,
    public maxQueued: number,
  ) {}

  reject(call: Call, reason: string): void {
    call.expected = { state: 'rejected', reason, limit: this.limit, inFlight: this.active };
  }

  grant(call: Call): void {
    this.active++;
    this.held.push(call);
    call.expected = { state: 'granted' };
  }

  acquire(call: Call, timeoutMs: number | undefined): void {
    if (this.closed) {
      this.reject(call, 'shutting_down');
    } else if (this.queue.length === 0 && this.active < this.limit) {
      this.grant(call);
    } else if (this.queue.length >= this.maxQueued) {
      this.reject(call, this.maxQueued === 0 ? 'concurrency_limit' : 'queue_full');
    } else {
      call.deadline = timeoutMs === undefined ? undefined : this.now + timeoutMs;
      this.queue.push(call);
    }
  }

  drop(call: Call): boolean {
    const index = this.queue.indexOf(call);
    if (index === -1) return false;
    this.queue.splice(index, 1);
    return true;
  }

  drain(): void {
    while (!this.closed && this.queue.length > 0 && this.active < this.limit) {
      this.grant(this.queue.shift() as Call);
    }
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function observe(call: Call, promise: Promise<Release>): void {
  promise.then(
    (release) => {
      call.settled++;
      call.release = release;
      call.actual = { state: 'granted' };
    },
    (error: unknown) => {
      call.settled++;
      if (error instanceof CancelledError) {
        call.actual = { state: 'cancelled' };
      } else if (error instanceof BackpressureError) {
        call.actual = {
          state: 'rejected',
          reason: error.reason,
          limit: error.limit,
          inFlight: error.inFlight,
        };
        if (!Number.isInteger(error.retryAfterSeconds) || error.retryAfterSeconds < 1) {
          throw new Error(`bad retryAfterSeconds ${error.retryAfterSeconds}`);
        }
      } else {
        call.actual = { state: 'rejected', reason: `unexpected ${String(error)}`, limit: -1, inFlight: -1 };
      }
    },
  );
}

async function runScenario(limit: number, maxQueued: number, commands: Command[]): Promise<void> {
  // A failed run (while shrinking) may leave timers behind; they must not leak into the next one.
  vi.clearAllTimers();
  const semaphore = new Semaphore({ limit, maxQueued });
  const model = new Model(limit, maxQueued);
  const calls: Call[] = [];
  const released: Call[] = [];

  const newCall = (controller?: AbortController): Call => {
    const call: Call = {
      id: calls.length,
      expected: { state: 'pending' },
      actual: { state: 'pending' },
      settled: 0,
      release: undefined,
      controller,
      deadline: undefined,
    };
    calls.push(call);
    return call;
  };

  const releaseHeld = (call: Call, twice: boolean): void => {
    // The model says this call holds a permit, so the real one must have granted it too.
    expect(call.release, `call ${call.id} should hold a permit`).toBeTypeOf('function');
    call.release?.();
    if (twice) call.release?.();
    model.held.splice(model.held.indexOf(call), 1);
    released.push(call);
    model.active--;
    model.drain();
  };

  const check = (step: string, activeBefore: number, grantsBefore: number): void => {
    for (const call of calls) {
      expect(call.actual, `${step}: call ${call.id}`).toEqual(call.expected);
      expect(call.settled, `${step}: call ${call.id} settled`).toBe(
        call.expected.state === 'pending' ? 0 : 1,
      );
    }
    expect(semaphore.active, step).toBe(model.active);
    expect(semaphore.pending, step).toBe(model.queue.length);
    expect(semaphore.closed, step).toBe(model.closed);
    // Never above the limit, except for permits held from before the limit was lowered...
    expect(semaphore.active, step).toBeLessThanOrEqual(Math.max(semaphore.limit, activeBefore));
    // ...and no new grant happens while active >= limit.
    const grants = calls.filter((call) => call.actual.state === 'granted').length;
    if (grants > grantsBefore) expect(semaphore.active, step).toBeLessThanOrEqual(semaphore.limit);
    // Nobody waits while a permit is free.
    if (!semaphore.closed && semaphore.pending > 0)
      expect(semaphore.active, step).toBeGreaterThanOrEqual(semaphore.limit);
  };

  for (const [index, command] of commands.entries()) {
    const activeBefore = semaphore.active;
    const grantsBefore = calls.filter((call) => call.actual.state === 'granted').length;
    switch (command.kind) {
      case 'acquire': {
        const controller = command.abortable ? new AbortController() : undefined;
        const call = newCall(controller);
        const options = { signal: controller?.signal, timeoutMs: command.timeoutMs };
        observe(call, semaphore.acquire(options));
        model.acquire(call, command.timeoutMs);
        break;
      }
      case 'acquirePreAborted': {
        const controller = new AbortController();
        controller.abort();
        const call = newCall(controller);
        observe(call, semaphore.acquire({ signal: controller.signal }));
        if (model.closed) model.reject(call, 'shutting_down');
        else call.expected = { state: 'cancelled' };
        break;
      }
      case 'abort': {
        const abortable = calls.filter((call) => call.controller);
        const call = abortable[command.pick % Math.max(1, abortable.length)];
        if (!call) break;
        call.controller?.abort();
        if (model.drop(call)) call.expected = { state: 'cancelled' };
        break;
      }
      case 'release': {
        const call = model.held[command.pick % Math.max(1, model.held.length)];
        if (call) releaseHeld(call, command.twice);
        break;
      }
      case 'releaseAgain': {
        const call = released[command.pick % Math.max(1, released.length)];
        call?.release?.();
        break;
      }
      case 'advance': {
        vi.advanceTimersByTime(command.ms);
        model.now += command.ms;
        for (const call of [...model.queue]) {
          if (call.deadline !== undefined && call.deadline <= model.now) {
            model.drop(call);
            model.reject(call, 'queue_timeout');
          }
        }
        break;
      }
      case 'setLimit':
        semaphore.limit = command.limit;
        model.limit = command.limit;
        model.drain();
        break;
      case 'setMaxQueued':
        semaphore.maxQueued = command.maxQueued;
        model.maxQueued = command.maxQueued;
        break;
      case 'tryAcquire': {
        const call = newCall();
        const release = semaphore.tryAcquire();
        // tryAcquire answers synchronously: it counts as settled either way.
        call.settled = 1;
        call.release = release;
        call.actual = release
          ? { state: 'granted' }
          : { state: 'rejected', reason: 'none', limit: 0, inFlight: 0 };
        if (!model.closed && model.queue.length === 0 && model.active < model.limit) model.grant(call);
        else call.expected = { state: 'rejected', reason: 'none', limit: 0, inFlight: 0 };
        break;
      }
      case 'close':
        semaphore.close();
        model.closed = true;
        for (const call of model.queue.splice(0)) model.reject(call, 'shutting_down');
        break;
    }
    await flush();
    check(`step ${index} ${JSON.stringify(command)}`, activeBefore, grantsBefore);
  }

  // Release everything; waiters granted on the way are released in turn.
  while (model.held.length > 0) {
    releaseHeld(model.held[0] as Call, false);
    await flush();
  }
  expect(model.queue).toHaveLength(0);
  // Granted waiters had their timers cleared; nothing is left to fire.
  expect(vi.getTimerCount()).toBe(0);
  vi.runAllTimers();
  await flush();
  check('end', 0, Number.POSITIVE_INFINITY);
  expect(semaphore.active).toBe(0);
  expect(semaphore.pending).toBe(0);
  for (const call of calls) expect(call.settled, `call ${call.id} settled once`).toBe(1);
}

describe('Semaphore (model-based)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('matches the reference model and keeps its invariants for random command sequences', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 0, max: 5 }),
        fc.array(commandArb, { maxLength: 60 }),
        async (limit, maxQueued, commands) => {
          await runScenario(limit, maxQueued, commands);
        },
      ),
      { numRuns: 200 },
    );
  });
});
