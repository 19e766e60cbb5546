import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RetryAfterEstimator } from '../src/admission/retry-after.js';

/** A random source that returns the given values in turn. */
function sequence(...values: number[]): () => number {
  let index = 0;
  return () => values[index++ % values.length]!;
}

describe('RetryAfterEstimator', () => {
  it('starts from initialSeconds (5 by default) for one export ahead of one slot', () => {
    expect(new RetryAfterEstimator({ random: () => 0 }).estimate(1, 1)).toBe(5);
    expect(new RetryAfterEstimator({ random: () => 0, initialSeconds: 12 }).estimate(1, 1)).toBe(12);
  });

  it('keeps an exponentially weighted average of observed durations (alpha 0.2 by default)', () => {
    const estimator = new RetryAfterEstimator({ random: () => 0 });
    estimator.observe(15_000);
    expect(estimator.averageSeconds).toBeCloseTo(7); // 5 + 0.2 * (15 - 5)
    estimator.observe(15_000);
    expect(estimator.averageSeconds).toBeCloseTo(8.6); // 7 + 0.2 * (15 - 7)
    expect(estimator.estimate(1, 1)).toBe(9);
    const fast = new RetryAfterEstimator({ alpha: 1, random: () => 0 });
    fast.observe(42_000);
    expect(fast.averageSeconds).toBe(42);
  });

  it('scales with the exports ahead divided by the limit', () => {
    const estimator = new RetryAfterEstimator({ initialSeconds: 10, random: () => 0 });
    expect(estimator.estimate(10, 5)).toBe(20);
    expect(estimator.estimate(15, 5)).toBe(30);
    expect(estimator.estimate(5, 5)).toBe(10);
    // Nothing ahead still means one export's worth; a limit of 0 is treated as 1.
    expect(estimator.estimate(0, 5)).toBe(2);
    expect(estimator.estimate(3, 0)).toBe(30);
  });

  it('adds up to 25% jitter so that rejected clients do not return in lockstep', () => {
    const estimator = new RetryAfterEstimator({
      initialSeconds: 40,
      random: sequence(0, 0.25, 0.5, 0.75, 0.999),
    });
    const estimates = Array.from({ length: 5 }, () => estimator.estimate(1, 1));
    expect(estimates).toEqual([40, 43, 45, 48, 50]);
    const noJitter = new RetryAfterEstimator({ initialSeconds: 40, jitter: 0, random: () => 0.9 });
    expect(noJitter.estimate(1, 1)).toBe(40);
  });

  it('answers a whole number of seconds, at least 1 and at most maxSeconds', () => {
    expect(new RetryAfterEstimator({ initialSeconds: 0.01, random: () => 0 }).estimate(1, 100)).toBe(1);
    expect(new RetryAfterEstimator({ initialSeconds: 0, random: () => 0.5 }).estimate(0, 1)).toBe(1);
    expect(new RetryAfterEstimator({ initialSeconds: 10_000, random: () => 0 }).estimate(1, 1)).toBe(3600);
    expect(
      new RetryAfterEstimator({ initialSeconds: 100, maxSeconds: 60, random: () => 0.5 }).estimate(9, 1),
    ).toBe(60);
    expect(new RetryAfterEstimator({ initialSeconds: 1.2, random: () => 0 }).estimate(1, 1)).toBe(2);
  });

  it('keeps every estimate whole, >= 1 and within the jitter band (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 7_200_000 }), { maxLength: 20 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (durations, ahead, limit, random) => {
          const estimator = new RetryAfterEstimator({ random: () => random });
          for (const duration of durations) estimator.observe(duration);
          const estimate = estimator.estimate(ahead, limit);
          const base = (estimator.averageSeconds * Math.max(1, ahead)) / limit;
          expect(Number.isInteger(estimate)).toBe(true);
          expect(estimate).toBeGreaterThanOrEqual(1);
          expect(estimate).toBeLessThanOrEqual(3600);
          expect(estimate).toBeGreaterThanOrEqual(Math.min(3600, Math.ceil(base - 1e-9)));
          expect(estimate).toBeLessThanOrEqual(Math.max(1, Math.ceil(Math.min(3600, base * 1.25) + 1e-9)));
        },
      ),
    );
  });

  it('ignores durations that are not finite non-negative numbers', () => {
    const estimator = new RetryAfterEstimator({ random: () => 0 });
    for (const bad of [Number.NaN, -1, Number.POSITIVE_INFINITY]) estimator.observe(bad);
    expect(estimator.averageSeconds).toBe(5);
    expect(estimator.estimate(1, 1)).toBe(5);
  });

  it.each([0, -0.1, 1.5, Number.NaN])('rejects alpha %s', (alpha) => {
    expect(() => new RetryAfterEstimator({ alpha })).toThrow(TypeError);
    expect(() => new RetryAfterEstimator({ alpha })).toThrow(`Expected alpha to be in (0, 1], got ${alpha}`);
  });
});
