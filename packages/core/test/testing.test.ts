import { describe, expect, it } from 'vitest';
import * as testing from '../src/testing/index.js';
import { type Deferred, deferred } from '../src/testing/index.js';

describe('@spark-export/core/testing', () => {
  it('exports the three contract suites and deferred(), nothing else', () => {
    expect(Object.keys(testing).sort()).toEqual([
      'deferred',
      'describeExportStorageContract',
      'describeJobStoreContract',
      'describeLimiterContract',
    ]);
  });

  it('deferred() settles when the test says so', async () => {
    const order: string[] = [];
    const gate: Deferred = deferred();
    const waiting = gate.promise.then(() => order.push('opened'));
    await Promise.resolve();
    order.push('before');
    gate.resolve();
    await waiting;
    expect(order).toEqual(['before', 'opened']);

    const value = deferred<number>();
    value.resolve(42);
    await expect(value.promise).resolves.toBe(42);

    const failure = deferred<string>();
    const error = new Error('refused');
    failure.reject(error);
    await expect(failure.promise).rejects.toBe(error);
  });
});
