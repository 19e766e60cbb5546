import { describe, expect, it } from 'vitest';
import type { RowSource } from '../src/dataset.js';
import { readBatches } from '../src/pipeline/read-batches.js';
import { type Deferred, deferred } from '../src/testing/deferred.js';

/**
 * An async source whose rows the test hands out one `next()` at a time: `pulls` lists the
 * pending pulls in order, each resolved by the test.
 */
function controlledSource() {
  const pulls: Deferred<IteratorResult<unknown>>[] = [];
  let returned = 0;
  let pulled = 0;
  const iterator: AsyncIterator<unknown> = {
    next: () => {
      pulled++;
      const pull = deferred<IteratorResult<unknown>>();
      pulls.push(pull);
      return pull.promise;
    },
    return: async () => {
      returned++;
      return { done: true, value: undefined };
    },
  };
  return {
    // Rows are checked by readBatches itself: the source may hand it anything.
    source: { [Symbol.asyncIterator]: () => iterator } as RowSource,
    pulls,
    pulled: () => pulled,
    returned: () => returned,
  };
}

/** An async source of `count` rows that counts how many were pulled. */
function countingSource(count: number) {
  const state = { pulled: 0 };
  async function* rows() {
    for (let id = 0; id < count; id++) {
      state.pulled++;
      yield { id };
    }
  }
  return { source: rows(), state };
}

/** Lets pending promise reactions run (no timers). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

describe('readBatches over an async source', () => {
  it('hands a partial batch on once the next row lingers, while that row is still awaited', async () => {
    const { source, pulls, returned } = controlledSource();
    let lingered = 0;
    const batches = readBatches(source, 100, { ms: 5, onLinger: () => lingered++ });
    const first = batches.next();
    await settle();
    pulls[0]!.resolve({ done: false, value: { id: 1 } });
    await settle();
    pulls[1]!.resolve({ done: false, value: { id: 2 } });
    await settle();
    // The third row never comes in time: the two rows go on by the batch's timer.
    expect(await first).toEqual({ done: false, value: [{ id: 1 }, { id: 2 }] });
    expect(lingered).toBe(1);
    expect(pulls).toHaveLength(3);

    const second = batches.next();
    pulls[2]!.resolve({ done: false, value: { id: 3 } });
    await settle();
    pulls[3]!.resolve({ done: true, value: undefined });
    expect(await second).toEqual({ done: false, value: [{ id: 3 }] });
    expect(await batches.next()).toEqual({ done: true, value: undefined });
    // A source that ended is not closed again.
    expect(returned()).toBe(0);
  });

  it('pulls the next batch only when the consumer asks for it', async () => {
    const { source, state } = countingSource(10_000);
    const batches = readBatches(source, 50);
    expect((await batches.next()).value).toHaveLength(50);
    // Every microtask runs before a macrotask: the producer has gone as far as it will go.
    await new Promise((resolve) => setImmediate(resolve));
    expect(state.pulled).toBe(50);
    expect((await batches.next()).value).toHaveLength(50);
    await new Promise((resolve) => setImmediate(resolve));
    expect(state.pulled).toBe(100);
    let rows = 100;
    for await (const batch of batches) rows += batch.length;
    expect(rows).toBe(10_000);
  });

  it('closes the source when the consumer stops, once a pull in flight returns', async () => {
    const { source, pulls, returned } = controlledSource();
    const batches = readBatches(source, 100, { ms: 1, onLinger: () => {} });
    const first = batches.next();
    await settle();
    pulls[0]!.resolve({ done: false, value: { id: 1 } });
    expect((await first).value).toEqual([{ id: 1 }]);
    // The second pull is in flight; closing does not wait for it.
    await batches.return(undefined);
    expect(returned()).toBe(0);
    pulls[1]!.resolve({ done: false, value: { id: 2 } });
    await settle();
    expect(returned()).toBe(1);
  });

  it('gives the batches before a failure, then the failure, and does not close a failed source', async () => {
    const { source, pulls, returned } = controlledSource();
    const batches = readBatches(source, 2);
    const first = batches.next();
    await settle();
    pulls[0]!.resolve({ done: false, value: { id: 1 } });
    await settle();
    pulls[1]!.resolve({ done: false, value: { id: 2 } });
    expect((await first).value).toEqual([{ id: 1 }, { id: 2 }]);
    const second = batches.next();
    await settle();
    pulls[2]!.reject(new Error('cursor lost'));
    await expect(second).rejects.toThrow('cursor lost');
    expect(returned()).toBe(0);
  });

  it('closes the source after a row that is not an object', async () => {
    const { source, pulls, returned } = controlledSource();
    const batches = readBatches(source, 10);
    const first = batches.next();
    await settle();
    pulls[0]!.resolve({ done: false, value: 'not a row' });
    await expect(first).rejects.toThrow('Expected row 0 to be a plain object');
    expect(returned()).toBe(1);
  });
});
