import { Writable } from 'node:stream';
import { BackpressureError, CancelledError, ExportManager } from '@spark-export/core';
import { deferred, describeLimiterContract } from '@spark-export/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseLostError, RedisLimiter, type RedisLimiterOptions, type RedisRelease } from '../src/index.js';
import { type RedisServer, requireRedisServer, startRedis, uniquePrefix } from './redis-server.js';

const bin = await requireRedisServer();

describe.skipIf(!bin)('RedisLimiter (real redis-server)', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis(bin as string);
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** A limiter on a connection of its own: one "replica". */
  const replica = (options: Partial<RedisLimiterOptions> & { prefix: string }) =>
    new RedisLimiter({ redis: server.client(), limit: 1, retryIntervalMs: 20, ...options });
  describeLimiterContract('RedisLimiter', (limit) => replica({ limit, prefix: uniquePrefix() }));

  it('never grants more than the limit across two replicas', async () => {
    const prefix = uniquePrefix();
    const a = replica({ prefix, limit: 3 });
    const b = replica({ prefix, limit: 3 });
    const probe = replica({ prefix, limit: 3 });
    let holders = 0;
    let most = 0;
    const held: RedisRelease[] = [];
    let granted = 0;
    let onGrant: { count: number; resolve: () => void } | undefined;
    const grants = (count: number) => {
      if (granted >= count) return Promise.resolve();
      const wait = deferred();
      onGrant = { count, resolve: wait.resolve };
      return wait.promise;
    };
    const tasks = Array.from({ length: 10 }, async (_, i) => {
      const release = await (i % 2 === 0 ? a : b).acquire({});
      holders++;
      most = Math.max(most, holders);
      held.push(release);
      granted++;
      if (onGrant && granted >= onGrant.count) onGrant.resolve();
    });

    await grants(3);
    expect(holders).toBe(3);
    // The cluster is full: a third replica with nobody waiting gets nothing either.
    expect(await probe.tryAcquire()).toBeUndefined();
    expect(await probe.held()).toBe(3);
    for (let next = 4; next <= 10; next++) {
      holders--;
      (held.shift() as RedisRelease)();
      await grants(next);
    }
    await Promise.all(tasks);
    for (const release of held.splice(0)) {
      holders--;
      release();
    }
    expect(most).toBe(3);
    expect(a.active + b.active).toBe(0);
    await Promise.all([a.close(), b.close(), probe.close()]);
    expect(await probe.held()).toBe(0);
  });

  it('grants exactly the limit to a burst of single attempts from two replicas', async () => {
    const prefix = uniquePrefix();
    const a = replica({ prefix, limit: 3 });
    const b = replica({ prefix, limit: 3 });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).tryAcquire()));
    const permits = results.filter((release) => release !== undefined);
    expect(permits).toHaveLength(3);
    expect(a.active + b.active).toBe(3);
    for (const release of permits) release();
    await Promise.all([a.close(), b.close()]);
  });

  it('gives up the place in line when the wait is aborted', async () => {
    const prefix = uniquePrefix();
    const a = replica({ prefix });
    const b = replica({ prefix });
    const holder = await a.acquire({});
    const first = new AbortController();
    const leaving = b.acquire({ signal: first.signal });
    const staying = b.acquire({});
    expect(b.pending).toBe(2);

    first.abort(new Error('client left'));
    const error = await leaving.catch((reason: unknown) => reason);
    expect(error).toBeInstanceOf(CancelledError);
    expect((error as CancelledError).cause).toEqual(new Error('client left'));
    expect(b.pending).toBe(1);

    holder();
    // The permit goes to the waiter behind the one that left.
    const release = await staying;
    expect(b.active).toBe(1);
    expect(b.pending).toBe(0);
    release();
    await Promise.all([a.close(), b.close()]);
  });

  it('rejects at once for a signal that is already aborted', async () => {
    const limiter = replica({ prefix: uniquePrefix() });
    const error = await limiter.acquire({ signal: AbortSignal.abort() }).catch((reason: unknown) => reason);
    expect(error).toBeInstanceOf(CancelledError);
    expect(limiter.pending).toBe(0);
    await limiter.close();
  });

  it('frees the permits of a replica that died after lockTimeoutMs, and tells that replica', async () => {
    const prefix = uniquePrefix();
    const lost = deferred<LeaseLostError>();
    const deadClient = server.client();
    const dying = new RedisLimiter({
      redis: deadClient,
      limit: 1,
      prefix,
      lockTimeoutMs: 1000,
      refreshIntervalMs: 300,
      onLeaseLost: lost.resolve,
    });
    const survivor = replica({ prefix, lockTimeoutMs: 1000, refreshIntervalMs: 300 });
    const permit = await dying.acquire({});
    const waiting = survivor.acquire({});

    // The replica is gone without releasing: its connection closes, its refreshes fail.
    deadClient.disconnect();
    const release = await waiting;
    expect(survivor.active).toBe(1);
    const error = await lost.promise;
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(error.code).toBe('INTERRUPTED');
    expect(permit.signal.aborted).toBe(true);
    expect(permit.signal.reason).toBe(error);
    release();
    permit();
    await Promise.all([survivor.close(), dying.close()]);
  });

  it('reports a lease that Redis no longer holds at the next refresh', async () => {
    const prefix = uniquePrefix();
    const lost = deferred<LeaseLostError>();
    const limiter = replica({
      prefix,
      lockTimeoutMs: 5000,
      refreshIntervalMs: 100,
      onLeaseLost: lost.resolve,
    });
    const permit = await limiter.acquire({});
    // As if another replica had pruned it as expired (a clock far ahead, a long stall here).
    await server.client().del(`${prefix}limiter`);
    const error = await lost.promise;
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(permit.signal.reason).toBe(error);
    // Still counted here until the export holding it gives it back.
    expect(limiter.active).toBe(1);
    permit();
    expect(limiter.active).toBe(0);
    await limiter.close();
  });

  it('wakes waiters when the limit is raised, and checks the new value', async () => {
    const prefix = uniquePrefix();
    const a = replica({ prefix });
    const b = replica({ prefix, retryIntervalMs: 60_000 });
    const holder = await a.acquire({});
    const waiting = b.acquire({});
    expect(() => {
      b.limit = 0;
    }).toThrow('Expected limit to be a positive integer, got 0 (number)');
    // Without the wake-up this waits a minute for its next attempt.
    b.limit = 2;
    const release = await waiting;
    expect(b.limit).toBe(2);
    release();
    holder();
    await Promise.all([a.close(), b.close()]);
  });

  it('closes without waiting for held permits; drained() waits until the last one is back in Redis', async () => {
    const prefix = uniquePrefix();
    const other = replica({ prefix });
    const limiter = replica({ prefix, limit: 1, refreshIntervalMs: 100, lockTimeoutMs: 1000 });
    const permit = await limiter.acquire({});
    const waiting = limiter.acquire({}).catch((reason: unknown) => reason);
    // Resolves while the permit is held: its holder may await close() before releasing.
    await limiter.close();
    const refused = await waiting;
    expect(refused).toBeInstanceOf(BackpressureError);
    expect((refused as BackpressureError).reason).toBe('shutting_down');
    expect(await limiter.tryAcquire()).toBeUndefined();
    await expect(limiter.acquire({})).rejects.toBeInstanceOf(BackpressureError);
    expect(limiter.active).toBe(1);
    let drained = false;
    const draining = limiter.drained().then(() => {
      drained = true;
    });
    // Still held (and refreshed) after close: nobody else gets it.
    expect(await other.tryAcquire()).toBeUndefined();
    expect(await other.held()).toBe(1);
    expect(drained).toBe(false);
    const released = permit();
    expect(permit(), 'a second release is the same release').toBe(released);
    let removed = false;
    void released.then(() => {
      removed = true;
    });
    await draining;
    expect(limiter.active).toBe(0);
    expect(removed, 'drained() should wait until the lease is removed, not only released').toBe(true);
    expect(await other.held()).toBe(0);
    const next = await other.tryAcquire();
    expect(next).toBeDefined();
    await next?.();
    await other.close();
  });

  it('close() waits for a tryAcquire() on its way, whose lease goes back to Redis', async () => {
    const prefix = uniquePrefix();
    const other = replica({ prefix });
    const limiter = replica({ prefix, limit: 1 });
    let settled = false;
    const trying = limiter.tryAcquire().finally(() => {
      settled = true;
    });
    await limiter.close();
    expect(settled, 'close() should resolve after the attempt on its way').toBe(true);
    expect(await trying, 'close() during the round trip wins').toBeUndefined();
    expect(limiter.active).toBe(0);
    expect(await other.held()).toBe(0);
    await limiter.drained();
    await other.close();
  });

  it('a stream whose lease is lost ends with the LeaseLostError and frees its slot', async () => {
    const prefix = uniquePrefix();
    const lost = deferred<LeaseLostError>();
    const started = deferred();
    const gate = deferred();
    const limiter = replica({
      prefix,
      limit: 1,
      lockTimeoutMs: 5000,
      refreshIntervalMs: 100,
      onLeaseLost: lost.resolve,
    });
    const datasets = {
      held: {
        // Deaf to the abort signal: the slot must come free all the same.
        source: async function* () {
          yield { n: 1 };
          started.resolve();
          await gate.promise;
          yield { n: 2 };
        },
      },
      quick: {
        source: async function* () {
          yield { n: 1 };
        },
      },
    };
    const manager = new ExportManager({ limiter, maxQueued: 0, metrics: false, datasets });
    const running = manager
      .stream({ dataset: 'held', format: 'ndjson' }, sink())
      .catch((reason: unknown) => reason);
    await started.promise;
    expect(limiter.active).toBe(1);
    const full = await manager
      .stream({ dataset: 'quick', format: 'ndjson' }, sink())
      .catch((reason: unknown) => reason);
    expect((full as BackpressureError).reason, 'the only slot is held').toBe('concurrency_limit');

    // As if another replica had pruned the lease as expired: the next refresh is refused.
    await server.client().del(`${prefix}limiter`);
    const error = await running;
    expect(error).toBe(await lost.promise);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as LeaseLostError).code).toBe('INTERRUPTED');
    expect(limiter.active, 'the stream gave its permit back').toBe(0);

    const next = await manager.stream({ dataset: 'quick', format: 'ndjson' }, sink());
    expect(next.rows).toBe(1);
    gate.resolve();
    await manager.close();
    await limiter.close();
    await limiter.drained();
    expect(await limiter.held()).toBe(0);
  });

  it('checks its options', () => {
    const redis = server.client();
    expect(() => new RedisLimiter({ redis, limit: 1.5 })).toThrow(
      'Expected limit to be a positive integer, got 1.5 (number)',
    );
    expect(() => new RedisLimiter({ redis, limit: 1, lockTimeoutMs: 1000, refreshIntervalMs: 1000 })).toThrow(
      'Expected refreshIntervalMs to be less than lockTimeoutMs (1000), got 1000 (number)',
    );
    expect(() => new RedisLimiter({ redis: {} as never, limit: 1 })).toThrow(
      'Expected redis to be an ioredis client, got an object',
    );
    redis.disconnect();
  });

  it('two ExportManagers sharing one limit of 2: the third concurrent stream is refused (429) by either', async () => {
    const prefix = uniquePrefix();
    const gate = deferred();
    const bothStarted = deferred();
    let started = 0;
    const datasets = {
      held: {
        source: async function* () {
          started++;
          if (started === 2) bothStarted.resolve();
          yield { n: 1 };
          await gate.promise;
          yield { n: 2 };
        },
      },
    };
    const limiters = [replica({ prefix, limit: 2 }), replica({ prefix, limit: 2 })];
    const managers = limiters.map(
      (limiter) => new ExportManager({ limiter, maxQueued: 0, metrics: false, datasets }),
    );
    const [one, two] = managers as [ExportManager, ExportManager];
    const running = [
      one.stream({ dataset: 'held', format: 'ndjson' }, sink()),
      two.stream({ dataset: 'held', format: 'ndjson' }, sink()),
    ];
    await bothStarted.promise;
    for (const manager of managers) {
      const error = await manager
        .stream({ dataset: 'held', format: 'ndjson' }, sink())
        .catch((reason: unknown) => reason);
      expect(error).toBeInstanceOf(BackpressureError);
      expect((error as BackpressureError).statusCode).toBe(429);
      expect((error as BackpressureError).reason).toBe('concurrency_limit');
      expect((error as BackpressureError).limit).toBe(2);
    }
    gate.resolve();
    const results = await Promise.all(running);
    expect(results.map((result) => result.rows)).toEqual([2, 2]);
    await Promise.all(managers.map((manager) => manager.close()));
    await Promise.all(limiters.map((limiter) => limiter.close()));
    expect(await limiters[0]?.held()).toBe(0);
  });
});

function sink(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}
