import { randomBytes } from 'node:crypto';
import { describeJobStoreContract } from '@spark-export/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobRecord, RedisJobStore } from '../src/index.js';
import { type RedisServer, requireRedisServer, startRedis, uniquePrefix } from './redis-server.js';

const bin = await requireRedisServer();

const jobId = () => `exp_${randomBytes(16).toString('base64url')}`;

function record(fields: Partial<JobRecord> = {}): JobRecord {
  return {
    version: 1,
    id: jobId(),
    status: 'queued',
    dataset: 'orders',
    format: 'csv',
    params: { from: '2025-01-01' },
    columns: null,
    filename: null,
    compression: 'none',
    csv: null,
    owner: 'user-1',
    idempotencyKey: null,
    createdAt: '2025-06-01T12:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    expiresAt: null,
    rows: 0,
    bytes: 0,
    totalRows: null,
    file: null,
    error: null,
    attempts: 0,
    ...fields,
  };
}

/** The listing order every store must give: newest first, ties by id (descending). */
function newestFirst(a: JobRecord, b: JobRecord): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

describe.skipIf(!bin)('RedisJobStore (real redis-server)', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis(bin as string);
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** Two stores over one prefix, each on a connection of its own: two replicas. */
  const replicas = async (prefix = uniquePrefix()) => {
    const stores = [
      new RedisJobStore({ redis: server.client(), prefix }),
      new RedisJobStore({ redis: server.client(), prefix }),
    ] as const;
    await Promise.all(stores.map((store) => store.open()));
    return stores;
  };
  // The shared contract: every case on a prefix of its own; a reopened store reads the same prefix.
  const prefixes = new WeakMap<RedisJobStore, string>();
  const storeOn = (prefix: string) => {
    const store = new RedisJobStore({ redis: server.client(), prefix });
    prefixes.set(store, prefix);
    return store;
  };
  describeJobStoreContract('RedisJobStore', () => storeOn(uniquePrefix()), {
    reopen: (previous) => storeOn(prefixes.get(previous) as string),
  });

  it('answers on any replica for a job created on another; records go in and out as copies', async () => {
    const [a, b] = await replicas();
    const job = record();
    const { record: created, created: isNew } = await a.create(job);
    expect(isNew).toBe(true);
    expect(created).toEqual(job);
    job.rows = 99;
    created.rows = 98;
    const read = await b.get(job.id);
    expect(read).toEqual({ ...job, rows: 0 });

    (read as JobRecord).status = 'running';
    (read as JobRecord).rows = 10;
    await b.save(read as JobRecord);
    (read as JobRecord).rows = 11;
    expect((await a.get(job.id))?.rows).toBe(10);
    expect(await a.get(jobId())).toBeUndefined();
  });

  it('lands the writes of one job in call order', async () => {
    const [a] = await replicas();
    const job = record();
    await a.create(job);
    const writes: Promise<void>[] = [];
    for (let rows = 1; rows <= 50; rows++) {
      job.rows = rows;
      writes.push(a.save(job));
    }
    await Promise.all(writes);
    expect((await a.get(job.id))?.rows).toBe(50);
  });

  it('never brings back a removed job: a save after or racing a remove is a no-op', async () => {
    const [a, b] = await replicas();
    const job = record({ idempotencyKey: 'k-1' });
    await a.create(job);
    await b.remove(job.id);
    await a.save({ ...job, status: 'running' });
    expect(await a.get(job.id)).toBeUndefined();
    expect(await b.get(job.id)).toBeUndefined();

    const raced = record({ idempotencyKey: 'k-2' });
    await a.create(raced);
    await Promise.all([a.save({ ...raced, status: 'running' }), b.remove(raced.id), a.save(raced)]);
    expect(await a.get(raced.id)).toBeUndefined();
    const { records } = await b.list({ owner: 'user-1', limit: 10 });
    expect(records).toEqual([]);
    // Its idempotency key is free again.
    expect(await b.findByIdempotencyKey('user-1', 'k-2')).toBeUndefined();
    const again = record({ idempotencyKey: 'k-2' });
    expect((await b.create(again)).created).toBe(true);
  });

  it('makes one job per owner and idempotency key, even for concurrent creates on two replicas', async () => {
    const [a, b] = await replicas();
    const candidates = Array.from({ length: 6 }, () => record({ idempotencyKey: 'nightly' }));
    const results = await Promise.all(candidates.map((job, i) => (i % 2 ? a : b).create(job)));
    const made = results.filter((result) => result.created);
    expect(made).toHaveLength(1);
    const winner = made[0]?.record as JobRecord;
    for (const result of results) expect(result.record).toEqual(winner);
    expect(await a.findByIdempotencyKey('user-1', 'nightly')).toEqual(winner);
    expect(await b.findByIdempotencyKey('user-2', 'nightly')).toBeUndefined();
    // The same key of another owner, or of nobody, is another job.
    expect((await b.create(record({ owner: 'user-2', idempotencyKey: 'nightly' }))).created).toBe(true);
    expect((await b.create(record({ owner: null, idempotencyKey: 'nightly' }))).created).toBe(true);
    expect((await b.create(record({ owner: 'null', idempotencyKey: 'nightly' }))).created).toBe(true);
    const { records } = await a.list({ owner: 'user-1', limit: 10 });
    expect(records.map((job) => job.id)).toEqual([winner.id]);
  });

  it('keeps owners apart, whatever characters they hold', async () => {
    const [a, b] = await replicas();
    const owners = [null, 'null', 'a:b', 'a', 'b:jobs', '"quoted"', '*'];
    for (const owner of owners) await a.create(record({ owner, idempotencyKey: 'x:y' }));
    for (const owner of owners) {
      const { records } = await b.list({ owner, limit: 10 });
      expect(records.map((job) => job.owner)).toEqual([owner]);
      expect((await b.findByIdempotencyKey(owner, 'x:y'))?.owner).toBe(owner);
    }
  });

  it('lists newest first with ties by id, and pages with `after` over two replicas without loss or repeat', async () => {
    const [a, b] = await replicas();
    const jobs: JobRecord[] = [];
    // Three jobs in each millisecond: the order within one createdAt is by id.
    for (let i = 0; i < 30; i++) {
      const createdAt = new Date(Date.UTC(2025, 5, 1, 12, 0, 0, Math.floor(i / 3))).toISOString();
      jobs.push(record({ createdAt }));
    }
    await Promise.all(jobs.map((job, i) => (i % 2 ? a : b).create(job)));
    await a.create(record({ owner: 'someone-else' }));
    const expected = [...jobs].sort(newestFirst).map((job) => job.id);

    const seen: string[] = [];
    let after: Pick<JobRecord, 'createdAt' | 'id'> | undefined;
    for (let page = 0; ; page++) {
      const { records, more } = await (page % 2 ? a : b).list({ owner: 'user-1', limit: 7, after });
      seen.push(...records.map((job) => job.id));
      const last = records[records.length - 1];
      if (!more) break;
      after = last && { createdAt: last.createdAt, id: last.id };
    }
    expect(seen).toEqual(expected);
    const exact = await a.list({ owner: 'user-1', limit: 30 });
    expect(exact.records).toHaveLength(30);
    expect(exact.more).toBe(false);
  });

  it('filters by status and dataset, also across many non-matching jobs', async () => {
    const [a, b] = await replicas();
    const jobs: JobRecord[] = [];
    for (let i = 0; i < 450; i++) {
      jobs.push(
        record({
          createdAt: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
          status: i % 50 === 0 ? 'running' : 'succeeded',
          dataset: i % 2 ? 'orders' : 'customers',
        }),
      );
    }
    await Promise.all(jobs.map((job) => a.create(job)));
    const running = jobs.filter((job) => job.status === 'running').sort(newestFirst);
    expect(running).toHaveLength(9);

    const first = await b.list({ owner: 'user-1', status: 'running', limit: 4 });
    expect(first.records.map((job) => job.id)).toEqual(running.slice(0, 4).map((job) => job.id));
    expect(first.more).toBe(true);
    const last = first.records[3] as JobRecord;
    const rest = await b.list({ owner: 'user-1', status: 'running', limit: 10, after: last });
    expect(rest.records.map((job) => job.id)).toEqual(running.slice(4).map((job) => job.id));
    expect(rest.more).toBe(false);

    const both = await b.list({ owner: 'user-1', status: 'running', dataset: 'customers', limit: 100 });
    expect(both.records.map((job) => job.id)).toEqual(
      running.filter((job) => job.dataset === 'customers').map((job) => job.id),
    );
    const none = await b.list({ owner: 'user-1', status: 'cancelled', limit: 5 });
    expect(none).toEqual({ records: [], more: false });
  });

  it('iterates every job of its prefix once with all(), by SCAN', async () => {
    const prefix = uniquePrefix();
    const [a, b] = await replicas(prefix);
    const [other] = await replicas();
    const ids = new Set<string>();
    for (let i = 0; i < 1200; i++) {
      const job = record({ owner: `user-${i % 7}` });
      ids.add(job.id);
      void a.create(job);
    }
    await a.close();
    await other.create(record());
    const seen: string[] = [];
    for await (const job of b.all()) seen.push(job.id);
    expect(seen).toHaveLength(1200);
    expect(new Set(seen)).toEqual(ids);
  });

  it('close() lets pending writes land, and leaves the client open', async () => {
    const redis = server.client();
    const store = new RedisJobStore({ redis, prefix: uniquePrefix() });
    await store.open();
    const job = record();
    void store.create(job);
    void store.save({ ...job, status: 'succeeded' });
    await store.close();
    expect(redis.status).toBe('ready');
    expect((await store.get(job.id))?.status).toBe('succeeded');
  });

  it('warns at open() when Redis may evict records', async () => {
    const redis = server.client();
    const warnings: string[] = [];
    const store = new RedisJobStore({
      redis,
      prefix: uniquePrefix(),
      onWarning: (message) => warnings.push(message),
    });
    await redis.config('SET', 'maxmemory-policy', 'allkeys-lru');
    try {
      await store.open();
    } finally {
      await redis.config('SET', 'maxmemory-policy', 'noeviction');
    }
    expect(warnings).toEqual([
      'Redis has maxmemory-policy allkeys-lru: it may evict job records under memory pressure; set noeviction',
    ]);
    warnings.length = 0;
    await store.open();
    expect(warnings).toEqual([]);
  });
});
