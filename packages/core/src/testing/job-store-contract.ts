import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../jobs/job.js';
import type { JobQuery, JobStore } from '../jobs/job-store.js';
import type { ContractCase } from './contract-case.js';

/** Makes a fresh, empty store that shares no jobs with any other test. The suite opens and closes it. */
export type MakeJobStore<S extends JobStore = JobStore> = () => S | Promise<S>;

export interface JobStoreContractOptions<S extends JobStore = JobStore> {
  /**
   * A new store over the data of `previous` (already closed by the suite), as a restarted
   * process or another replica would see it. Without it, the case "a store opened again sees
   * the same jobs" is skipped.
   */
  reopen?: (previous: S) => S | Promise<S>;
  /** Runs after each test, once its stores are closed (e.g. to remove a temp dir or Redis keys). */
  cleanup?: () => Promise<void>;
}

export interface JobStoreContext {
  /** An opened store from `makeStore`, empty. */
  readonly store: JobStore;
  /** Closes the current store and opens a new one over the same data; `undefined` without `reopen`. */
  readonly reopen: (() => Promise<JobStore>) | undefined;
}

/** Job ids in ascending order, sharing a random prefix so that no two tests make the same id. */
function jobIds(count: number): string[] {
  const prefix = randomBytes(9).toString('base64url');
  return Array.from({ length: count }, (_, index) => `exp_${prefix}${String(index).padStart(10, '0')}`);
}

/** An ISO timestamp `seconds` after a fixed instant, so that order and ties are chosen by the test. */
function at(seconds: number): string {
  return new Date(Date.UTC(2026, 2, 1, 10, 0, seconds)).toISOString();
}

function makeRecord(id: string, overrides: Partial<JobRecord> = {}): JobRecord {
  return {
    version: 1,
    id,
    status: 'queued',
    dataset: 'orders',
    format: 'csv',
    params: { region: 'eu', limit: 10 },
    columns: ['id', 'total'],
    filename: null,
    compression: 'none',
    csv: null,
    owner: 'alice',
    idempotencyKey: null,
    createdAt: at(0),
    startedAt: null,
    finishedAt: null,
    expiresAt: null,
    rows: 0,
    bytes: 0,
    totalRows: null,
    file: null,
    error: null,
    attempts: 0,
    ...overrides,
  };
}

function succeeded(id: string, overrides: Partial<JobRecord> = {}): JobRecord {
  return makeRecord(id, {
    status: 'succeeded',
    startedAt: at(1),
    finishedAt: at(2),
    expiresAt: at(3600),
    rows: 2,
    bytes: 24,
    file: { name: `${id}.csv`, bytes: 24, sha256: 'a'.repeat(64), contentType: 'text/csv; charset=utf-8' },
    ...overrides,
  });
}

/** Changes every part of a record that a shared object could leak through. */
function scribble(record: JobRecord): void {
  record.status = 'failed';
  record.rows = 999;
  record.params.region = 'scribbled';
  record.columns?.push('scribbled');
  if (record.file) record.file.bytes = -1;
}

async function createAll(store: JobStore, records: JobRecord[]): Promise<void> {
  for (const record of records) {
    const { created } = await store.create(record);
    expect(created, `create() of the new job ${record.id}`).toBe(true);
  }
}

async function listIds(
  store: JobStore,
  query: Omit<JobQuery, 'limit'> & { limit?: number },
): Promise<string[]> {
  const { records } = await store.list({ limit: 1000, ...query });
  return records.map((record) => record.id);
}

async function collect(store: JobStore): Promise<JobRecord[]> {
  const records: JobRecord[] = [];
  for await (const record of store.all()) records.push(record);
  return records;
}

async function allIds(store: JobStore): Promise<string[]> {
  return (await collect(store)).map((record) => record.id).sort();
}

/** @internal The cases of {@link describeJobStoreContract}, exported for the suite's own tests. */
export const jobStoreCases: readonly ContractCase<JobStoreContext>[] = [
  {
    name: 'create() stores a copy that get() returns; changing a passed or returned record changes nothing stored',
    async run({ store }) {
      const [id] = jobIds(1) as [string];
      const record = makeRecord(id);
      const original = structuredClone(record);
      const result = await store.create(record);
      expect(result.created).toBe(true);
      expect(result.record).toEqual(original);
      scribble(record);
      scribble(result.record);
      const got = await store.get(id);
      expect(got).toEqual(original);
      scribble(got as JobRecord);
      expect(await store.get(id)).toEqual(original);
    },
  },
  {
    name: 'get() of an unknown job is undefined',
    async run({ store }) {
      const [known, unknown] = jobIds(2) as [string, string];
      await createAll(store, [makeRecord(known)]);
      expect(await store.get(unknown)).toBeUndefined();
    },
  },
  {
    name: 'save() replaces the stored record with a copy',
    async run({ store }) {
      const [id] = jobIds(1) as [string];
      await createAll(store, [makeRecord(id)]);
      const next = makeRecord(id, { status: 'running', startedAt: at(5), attempts: 1, rows: 40, bytes: 900 });
      const saved = structuredClone(next);
      await store.save(next);
      expect(await store.get(id)).toEqual(saved);
      scribble(next);
      expect(await store.get(id)).toEqual(saved);
      const done = succeeded(id, { attempts: 1 });
      await store.save(done);
      expect(await store.get(id)).toEqual(done);
    },
  },
  {
    name: "create() with an owner's existing idempotency key stores nothing and returns the stored job",
    async run({ store }) {
      const [firstId, secondId, thirdId] = jobIds(3) as [string, string, string];
      const first = makeRecord(firstId, { idempotencyKey: 'key-1' });
      await createAll(store, [first]);
      const again = await store.create(makeRecord(secondId, { idempotencyKey: 'key-1', dataset: 'users' }));
      expect(again).toEqual({ record: first, created: false });
      expect(await store.get(secondId)).toBeUndefined();
      // The job as it is stored now, not as it was created.
      const running = makeRecord(firstId, { idempotencyKey: 'key-1', status: 'running', attempts: 1 });
      await store.save(running);
      expect(await store.create(makeRecord(thirdId, { idempotencyKey: 'key-1' }))).toEqual({
        record: running,
        created: false,
      });
      expect(await allIds(store)).toEqual([firstId]);
    },
  },
  {
    name: 'concurrent create() calls with one owner and key make exactly one job',
    async run({ store }) {
      const ids = jobIds(5);
      const results = await Promise.all(
        ids.map((id) => store.create(makeRecord(id, { idempotencyKey: 'same-key' }))),
      );
      const created = results.filter((result) => result.created);
      expect(created, 'exactly one of the concurrent creates should store its job').toHaveLength(1);
      const winner = created[0]?.record as JobRecord;
      for (const result of results) expect(result.record).toEqual(winner);
      expect(await allIds(store)).toEqual([winner.id]);
      expect(await store.findByIdempotencyKey('alice', 'same-key')).toEqual(winner);
    },
  },
  {
    name: 'the same idempotency key for another owner, or for no owner, makes another job',
    async run({ store }) {
      const [aliceId, bobId, nobodyId] = jobIds(3) as [string, string, string];
      const alice = makeRecord(aliceId, { owner: 'alice', idempotencyKey: 'key' });
      const bob = makeRecord(bobId, { owner: 'bob', idempotencyKey: 'key' });
      const nobody = makeRecord(nobodyId, { owner: null, idempotencyKey: 'key' });
      await createAll(store, [alice, bob, nobody]);
      expect(await store.findByIdempotencyKey('alice', 'key')).toEqual(alice);
      expect(await store.findByIdempotencyKey('bob', 'key')).toEqual(bob);
      expect(await store.findByIdempotencyKey(null, 'key')).toEqual(nobody);
    },
  },
  {
    name: 'jobs without an idempotency key never match one another',
    async run({ store }) {
      const [firstId, secondId] = jobIds(2) as [string, string];
      await createAll(store, [makeRecord(firstId), makeRecord(secondId)]);
      expect(await allIds(store)).toEqual([firstId, secondId]);
    },
  },
  {
    name: 'findByIdempotencyKey() finds the job of that owner and key only, as a copy',
    async run({ store }) {
      const [id] = jobIds(1) as [string];
      const record = makeRecord(id, { owner: 'alice', idempotencyKey: 'key' });
      await createAll(store, [record]);
      expect(await store.findByIdempotencyKey('alice', 'other-key')).toBeUndefined();
      expect(await store.findByIdempotencyKey('bob', 'key')).toBeUndefined();
      expect(await store.findByIdempotencyKey(null, 'key')).toBeUndefined();
      const found = await store.findByIdempotencyKey('alice', 'key');
      expect(found).toEqual(record);
      scribble(found as JobRecord);
      expect(await store.get(id)).toEqual(record);
    },
  },
  {
    name: 'save() of a job that was never created, or was removed, stores nothing',
    async run({ store }) {
      const [neverId, removedId] = jobIds(2) as [string, string];
      await store.save(makeRecord(neverId, { status: 'running' }));
      expect(await store.get(neverId)).toBeUndefined();
      const removed = makeRecord(removedId, { idempotencyKey: 'key' });
      await createAll(store, [removed]);
      await store.remove(removedId);
      // A late progress write of a job that retention removed meanwhile.
      await store.save({ ...removed, status: 'running', rows: 10 });
      expect(await store.get(removedId)).toBeUndefined();
      expect(await store.findByIdempotencyKey('alice', 'key')).toBeUndefined();
      expect(await listIds(store, { owner: 'alice' })).toEqual([]);
      expect(await allIds(store)).toEqual([]);
    },
  },
  {
    name: 'writes of one job land in call order: the last of many saves not awaited wins',
    async run({ store }) {
      const [id, goneId] = jobIds(2) as [string, string];
      await createAll(store, [makeRecord(id), makeRecord(goneId)]);
      const writes: Promise<void>[] = [];
      for (let rows = 1; rows <= 20; rows++)
        writes.push(store.save(makeRecord(id, { status: 'running', rows })));
      // A remove is a write too: saves issued before it must not bring the job back.
      writes.push(store.save(makeRecord(goneId, { rows: 1 })), store.remove(goneId));
      await Promise.all(writes);
      expect((await store.get(id))?.rows).toBe(20);
      expect(await store.get(goneId)).toBeUndefined();
    },
  },
  {
    name: 'remove() deletes the job and frees its idempotency key; removing an unknown job is no error',
    async run({ store }) {
      const [id, nextId, unknownId] = jobIds(3) as [string, string, string];
      await createAll(store, [makeRecord(id, { idempotencyKey: 'key' })]);
      await store.remove(id);
      expect(await store.get(id)).toBeUndefined();
      expect(await store.findByIdempotencyKey('alice', 'key')).toBeUndefined();
      expect(await listIds(store, { owner: 'alice' })).toEqual([]);
      await store.remove(unknownId);
      const next = makeRecord(nextId, { idempotencyKey: 'key' });
      expect(await store.create(next)).toEqual({ record: next, created: true });
    },
  },
  {
    name: "list() returns one owner's jobs, and jobs without an owner apart",
    async run({ store }) {
      const ids = jobIds(5) as [string, string, string, string, string];
      await createAll(store, [
        makeRecord(ids[0], { owner: 'alice', createdAt: at(1) }),
        makeRecord(ids[1], { owner: 'bob', createdAt: at(2) }),
        makeRecord(ids[2], { owner: null, createdAt: at(3) }),
        makeRecord(ids[3], { owner: 'alice', createdAt: at(4) }),
        makeRecord(ids[4], { owner: null, createdAt: at(5) }),
      ]);
      expect(await listIds(store, { owner: 'alice' })).toEqual([ids[3], ids[0]]);
      expect(await listIds(store, { owner: 'bob' })).toEqual([ids[1]]);
      expect(await listIds(store, { owner: null })).toEqual([ids[4], ids[2]]);
      expect(await store.list({ owner: 'carol', limit: 10 })).toEqual({ records: [], more: false });
    },
  },
  {
    name: 'list() filters by status and by dataset',
    async run({ store }) {
      const ids = jobIds(5) as [string, string, string, string, string];
      await createAll(store, [
        makeRecord(ids[0], { status: 'queued', dataset: 'orders', createdAt: at(1) }),
        makeRecord(ids[1], { status: 'running', dataset: 'orders', createdAt: at(2) }),
        succeeded(ids[2], { dataset: 'users', createdAt: at(3) }),
        makeRecord(ids[3], { status: 'failed', dataset: 'orders', createdAt: at(4) }),
        makeRecord(ids[4], { status: 'queued', dataset: 'users', createdAt: at(5), owner: 'bob' }),
      ]);
      expect(await listIds(store, { owner: 'alice', status: 'queued' })).toEqual([ids[0]]);
      expect(await listIds(store, { owner: 'alice', status: 'failed' })).toEqual([ids[3]]);
      expect(await listIds(store, { owner: 'alice', dataset: 'users' })).toEqual([ids[2]]);
      expect(await listIds(store, { owner: 'alice', dataset: 'orders' })).toEqual([ids[3], ids[1], ids[0]]);
      expect(await listIds(store, { owner: 'alice', status: 'queued', dataset: 'orders' })).toEqual([ids[0]]);
      expect(await listIds(store, { owner: 'alice', status: 'succeeded', dataset: 'orders' })).toEqual([]);
      expect(await listIds(store, { owner: 'bob', status: 'queued', dataset: 'users' })).toEqual([ids[4]]);
    },
  },
  {
    name: 'list() returns copies, newest first by createdAt, ties broken by the greater id first',
    async run({ store }) {
      const ids = jobIds(6) as [string, string, string, string, string, string];
      // Created out of order, three of them at the same instant.
      await createAll(store, [
        makeRecord(ids[3], { createdAt: at(0) }),
        makeRecord(ids[1], { createdAt: at(20) }),
        makeRecord(ids[5], { createdAt: at(20) }),
        makeRecord(ids[2], { createdAt: at(10) }),
        makeRecord(ids[0], { createdAt: at(20) }),
        makeRecord(ids[4], { createdAt: at(30) }),
      ]);
      expect(await listIds(store, { owner: 'alice' })).toEqual([
        ids[4],
        ids[5],
        ids[1],
        ids[0],
        ids[2],
        ids[3],
      ]);
      const { records } = await store.list({ owner: 'alice', limit: 1 });
      scribble(records[0] as JobRecord);
      expect((await store.get(ids[4]))?.params.region).toBe('eu');
    },
  },
  {
    name: 'list() pages with `after` (the last job of a page) and says whether `more` follow',
    async run({ store }) {
      const ids = jobIds(7);
      const times = [5, 3, 5, 1, 4, 5, 2];
      await createAll(
        store,
        ids.map((id, index) => makeRecord(id, { createdAt: at(times[index] as number) })),
      );
      const [i0, i1, i2, i3, i4, i5, i6] = ids;
      const order = [i5, i2, i0, i4, i1, i6, i3];
      const page = async (limit: number, after?: string) => {
        const cursor = after === undefined ? undefined : await store.get(after);
        const result = await store.list({
          owner: 'alice',
          limit,
          after: cursor && { createdAt: cursor.createdAt, id: cursor.id },
        });
        return { ids: result.records.map((record) => record.id), more: result.more };
      };
      expect(await page(3)).toEqual({ ids: order.slice(0, 3), more: true });
      expect(await page(3, order[2])).toEqual({ ids: order.slice(3, 6), more: true });
      expect(await page(3, order[5])).toEqual({ ids: order.slice(6), more: false });
      expect(await page(7)).toEqual({ ids: order, more: false });
      expect(await page(6)).toEqual({ ids: order.slice(0, 6), more: true });
      expect(await page(4, order[2])).toEqual({ ids: order.slice(3), more: false });
      // A cursor stays valid when its job is removed meanwhile (retention between two pages).
      const removed = (await store.get(order[2] as string)) as JobRecord;
      await store.remove(removed.id);
      const afterRemoved = await store.list({
        owner: 'alice',
        limit: 10,
        after: { createdAt: removed.createdAt, id: removed.id },
      });
      expect(afterRemoved.records.map((record) => record.id)).toEqual(order.slice(3));
      expect(afterRemoved.more).toBe(false);
    },
  },
  {
    name: 'all() yields every job of every owner, as copies',
    async run({ store }) {
      const ids = jobIds(4) as [string, string, string, string];
      const records = [
        makeRecord(ids[0], { owner: 'alice' }),
        makeRecord(ids[1], { owner: 'bob', status: 'running' }),
        makeRecord(ids[2], { owner: null }),
        succeeded(ids[3], { owner: 'carol' }),
      ];
      await createAll(store, records);
      const yielded = await collect(store);
      expect(yielded.map((record) => record.id).sort()).toEqual([...ids].sort());
      for (const record of records) expect(yielded.find((each) => each.id === record.id)).toEqual(record);
      for (const record of yielded) scribble(record);
      for (const record of records) expect(await store.get(record.id)).toEqual(record);
    },
  },
  {
    name: 'a store opened again over the same data sees the same jobs',
    needs: 'reopen',
    async run({ store, reopen }) {
      const [keptId, savedId, removedId, busyId] = jobIds(4) as [string, string, string, string];
      const kept = makeRecord(keptId, { idempotencyKey: 'key', createdAt: at(1) });
      const saved = succeeded(savedId, { owner: null, createdAt: at(2) });
      await createAll(store, [
        kept,
        makeRecord(savedId, { owner: null, createdAt: at(2) }),
        makeRecord(removedId, { createdAt: at(3) }),
        makeRecord(busyId, { createdAt: at(4) }),
      ]);
      await store.save(saved);
      await store.remove(removedId);
      // Not awaited: close() (inside reopen) lets pending writes land, in call order. Earlier
      // records are larger, so that writes racing one another would finish out of order.
      const busyRecord = (rows: number) =>
        makeRecord(busyId, {
          createdAt: at(4),
          status: 'running',
          rows,
          params: { region: 'eu', pad: 'x'.repeat((20 - rows) * 20_000) },
        });
      const writes: Promise<void>[] = [];
      for (let rows = 1; rows <= 20; rows++) writes.push(store.save(busyRecord(rows)));
      const again = await (reopen as () => Promise<JobStore>)();
      await Promise.all(writes);
      const busy = busyRecord(20);
      expect(await again.get(keptId)).toEqual(kept);
      expect(await again.get(savedId)).toEqual(saved);
      expect(await again.get(removedId)).toBeUndefined();
      expect(await again.get(busyId)).toEqual(busy);
      expect(await listIds(again, { owner: 'alice' })).toEqual([busyId, keptId]);
      expect(await listIds(again, { owner: null })).toEqual([savedId]);
      expect(await allIds(again)).toEqual([keptId, savedId, busyId].sort());
      expect(await again.findByIdempotencyKey('alice', 'key')).toEqual(kept);
      expect(await again.create(makeRecord(removedId, { idempotencyKey: 'key' }))).toEqual({
        record: kept,
        created: false,
      });
    },
  },
];

/**
 * Runs one case against a store from `makeStore` (opened first, closed after), then `cleanup`.
 * @internal
 */
export async function runJobStoreCase<S extends JobStore>(
  contractCase: ContractCase<JobStoreContext>,
  makeStore: MakeJobStore<S>,
  options: JobStoreContractOptions<S> = {},
): Promise<void> {
  let current = await makeStore();
  let open = false;
  try {
    await current.open();
    open = true;
    const { reopen } = options;
    await contractCase.run({
      store: current,
      reopen:
        reopen &&
        (async () => {
          open = false;
          await current.close();
          current = await reopen(current);
          await current.open();
          open = true;
          return current;
        }),
    });
  } finally {
    if (open) await current.close();
    await options.cleanup?.();
  }
}

/**
 * Registers a vitest suite that checks a {@link JobStore} against its contract: records go in
 * and out as copies, `create()` is atomic per owner and idempotency key, `save()` of a removed
 * job does nothing and writes of one job land in call order, `list()` filters, orders newest
 * first (ties by id) and pages with `after`/`more`, `all()` yields every job, and (with
 * `reopen`) a new store over the same data sees the same jobs. Each test gets a store from
 * `makeStore`, which the suite opens and closes. Call it at the top level of a test file.
 *
 * @param name Shown in the suite title.
 * @param makeStore A fresh, empty store for each test.
 *
 * @example
 * ```ts
 * import { mkdtemp } from 'node:fs/promises';
 * import { tmpdir } from 'node:os';
 * import { join } from 'node:path';
 * import { FileJobStore } from '@spark-export/core';
 * import { describeJobStoreContract } from '@spark-export/core/testing';
 *
 * describeJobStoreContract('FileJobStore', async () => new FileJobStore(await mkdtemp(join(tmpdir(), 'jobs-'))), {
 *   reopen: (previous) => new FileJobStore(previous.directory),
 * });
 * ```
 */
export function describeJobStoreContract<S extends JobStore>(
  name: string,
  makeStore: MakeJobStore<S>,
  options: JobStoreContractOptions<S> = {},
): void {
  describe(`JobStore contract: ${name}`, () => {
    for (const contractCase of jobStoreCases) {
      const skip = contractCase.needs === 'reopen' && !options.reopen;
      it.skipIf(skip)(contractCase.name, () => runJobStoreCase(contractCase, makeStore, options));
    }
  });
}
