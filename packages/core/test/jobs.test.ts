import { mkdirSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  BackpressureError,
  type ExportError,
  JobStateError,
  NotFoundError,
  ValidationError,
} from '../src/errors.js';
import type { ExportManager } from '../src/export-manager.js';
import { FileJobStore } from '../src/jobs/file-job-store.js';
import type { Job, JobRecord } from '../src/jobs/job.js';
import { deferred } from '../src/testing/deferred.js';
import {
  createManager,
  Gates,
  listDir,
  ManualClock,
  nextJobEvent,
  removeDir,
  sha256Of,
  tempDir,
} from './jobs.helpers.js';

let directory: string;
let gates: Gates;
const managers: ExportManager[] = [];

function manager(options: Parameters<typeof createManager>[2] = {}): ExportManager {
  const created = createManager(directory, gates, options);
  managers.push(created);
  return created;
}

async function rejection(promise: Promise<unknown>): Promise<ExportError> {
  try {
    await promise;
  } catch (error) {
    return error as ExportError;
  }
  throw new Error('Expected the promise to reject');
}

async function sum(metric: { get(): Promise<{ values: { value: number; labels: object }[] }> }, labels = {}) {
  const { values } = await metric.get();
  return values
    .filter((value) =>
      Object.entries(labels).every(([key, wanted]) => (value.labels as never)[key] === wanted),
    )
    .reduce((total, value) => total + value.value, 0);
}

beforeEach(async () => {
  directory = await tempDir();
  gates = new Gates();
});

afterEach(async () => {
  vi.restoreAllMocks();
  // Gated sources end on abort, so closing interrupts whatever a failed test left running.
  await Promise.allSettled(managers.splice(0).map((created) => created.close({ drainTimeoutMs: 0 })));
  await removeDir(directory);
});

describe('start, wait, get', () => {
  it('returns at once with a running job that ends succeeded with a file whose sha256 matches', async () => {
    const jobs = manager({ maxConcurrent: 2 });
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a', rows: 3 } });
    expect(job.status).toBe('running');
    expect(job.id).toMatch(/^exp_[A-Za-z0-9_-]{22}$/);
    expect(job.queuePosition).toBeNull();
    expect(job.file).toBeNull();
    expect(job.startedAt).not.toBeNull();

    const running = await jobs.get(job.id);
    expect(running.status).toBe('running');
    gates.open('a');
    const done = await jobs.wait(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.progress.rows).toBe(3);
    expect(done.file).toMatchObject({
      name: `${job.id}.csv`,
      contentType: expect.stringContaining('text/csv'),
    });
    const path = join(directory, `${job.id}.csv`);
    expect(done.file?.bytes).toBe((await stat(path)).size);
    expect(done.file?.sha256).toBe(await sha256Of(path));
    expect((await readFile(path, 'utf8')).split(/\r?\n/)[0]).toBe('id,name,pad');
    expect(await listDir(directory)).toEqual([`${job.id}.csv`, `${job.id}.json`]);

    const manifest = JSON.parse(await readFile(join(directory, `${job.id}.json`), 'utf8')) as JobRecord;
    expect(manifest).toMatchObject({
      id: job.id,
      status: 'succeeded',
      dataset: 'gated',
      rows: 3,
      bytes: done.file?.bytes,
      file: { sha256: done.file?.sha256 },
      attempts: 1,
      owner: null,
    });

    const info = await jobs.file(job.id);
    expect(info).toMatchObject({ path, size: done.file?.bytes, sha256: done.file?.sha256 });
    expect(info.filename).toMatch(/^gated-.*\.csv$/);
  });

  it('writes gzip files whose sha256 is that of the compressed bytes', async () => {
    const jobs = manager();
    const job = await jobs.start({
      dataset: 'plain',
      format: 'ndjson',
      params: { rows: 2000 },
      compression: 'gzip',
    });
    const done = await jobs.wait(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.file?.name).toBe(`${job.id}.ndjson.gz`);
    expect(done.file?.contentType).toBe('application/gzip');
    expect(done.file?.sha256).toBe(await sha256Of(join(directory, `${job.id}.ndjson.gz`)));
    expect(done.progress.rows).toBe(2000);
  });

  it('keeps a JSON export apart from the job manifest <id>.json, also across a restart', async () => {
    const jobs = manager();
    const job = await jobs.wait(
      (await jobs.start({ dataset: 'plain', format: 'json', params: { rows: 3 } })).id,
    );
    expect(job.file?.name).toBe(`${job.id}.data.json`);
    expect(await listDir(directory)).toEqual([`${job.id}.data.json`, `${job.id}.json`]);
    const info = await jobs.file(job.id);
    expect(JSON.parse(await readFile(info.path ?? '', 'utf8'))).toHaveLength(3);
    expect((JSON.parse(await readFile(join(directory, `${job.id}.json`), 'utf8')) as JobRecord).status).toBe(
      'succeeded',
    );
    await jobs.close();
    const reopened = manager();
    expect(await reopened.get(job.id)).toMatchObject({ status: 'succeeded', file: job.file });
    expect(await sha256Of((await reopened.file(job.id)).path ?? '')).toBe(job.file?.sha256);
  });

  it('returns from start() with the job as queued or running, even when the source fails at once', async () => {
    // Regression: start() used to return the job as it was after the manifest write, by
    // which time an export that fails (or finishes) at once had already moved on.
    const jobs = manager({
      datasets: {
        broken: {
          source: () => {
            throw new Error('connection refused at 10.0.0.7');
          },
        },
      },
    });
    const started = await Promise.all(
      Array.from({ length: 5 }, () => jobs.start({ dataset: 'broken', format: 'csv' })),
    );
    for (const job of started) expect(job.status).toBe('running');
    for (const job of started) {
      const done = await jobs.wait(job.id);
      expect(done.status).toBe('failed');
      // The source's message (an internal address) is never shown to clients.
      expect(done.error).toEqual({
        code: 'SOURCE_FAILED',
        message: 'The data source of dataset "broken" failed',
      });
      expect(done.file).toBeNull();
    }
    expect(jobs.inFlight).toBe(0);
    expect((await listDir(directory)).filter((name) => !name.endsWith('.json'))).toEqual([]);
  });

  it('names files from ids only, whatever filename the client asked for', async () => {
    const jobs = manager();
    const job = await jobs.start({ dataset: 'plain', format: 'csv', filename: '../../etc/passwd' });
    await jobs.wait(job.id);
    expect(await listDir(directory)).toEqual([`${job.id}.csv`, `${job.id}.json`]);
    expect((await jobs.file(job.id)).filename).toBe('../../etc/passwd.csv');
  });

  it('generates distinct random ids', async () => {
    const jobs = manager({ maxConcurrent: 50 });
    const ids = await Promise.all(
      Array.from({ length: 50 }, async () => (await jobs.start({ dataset: 'plain', format: 'csv' })).id),
    );
    expect(new Set(ids).size).toBe(50);
    for (const id of ids) expect(id).toMatch(/^exp_[A-Za-z0-9_-]{22}$/);
    await Promise.all(ids.map((id) => jobs.wait(id)));
  });

  it.each([
    '../../etc/passwd',
    'exp_short',
    'exp_AAAAAAAAAAAAAAAAAAAAA/',
    'exp_AAAAAAAAAAAAAAAAAAAAAA.json',
    'EXP_AAAAAAAAAAAAAAAAAAAAAA',
    '',
  ])('rejects the id %j as not found before it touches the filesystem', async (id) => {
    const jobs = manager();
    await jobs.ready;
    for (const call of [
      () => jobs.get(id),
      () => jobs.wait(id),
      () => jobs.cancel(id),
      () => jobs.delete(id),
      () => jobs.file(id),
    ]) {
      const error = await rejection(call());
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error.statusCode).toBe(404);
    }
    expect(() => new FileJobStore(directory).manifestPath(id)).toThrow(TypeError);
  });

  it('reports an unknown but well-formed id as not found', async () => {
    const jobs = manager();
    expect(await rejection(jobs.get('exp_AAAAAAAAAAAAAAAAAAAAAA'))).toBeInstanceOf(NotFoundError);
  });

  it('validates the request before taking a slot', async () => {
    const jobs = manager({ maxConcurrent: 1 });
    expect((await rejection(jobs.start({ dataset: 'nope', format: 'csv' }))).code).toBe('UNKNOWN_DATASET');
    expect(
      (await rejection(jobs.start({ dataset: 'plain', format: 'csv', params: { rows: 'ten' } }))).code,
    ).toBe('INVALID_PARAMS');
    expect(jobs.inFlight).toBe(0);
    expect(await listDir(directory)).toEqual([]);
  });

  it('wait() gives up when its signal aborts, without touching the job', async () => {
    const jobs = manager();
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'w' } });
    const controller = new AbortController();
    const waiting = jobs.wait(job.id, { signal: controller.signal });
    controller.abort(new Error('client left'));
    expect((await rejection(waiting)).message).toBe('client left');
    expect((await jobs.get(job.id)).status).toBe('running');
    gates.open('w');
    expect((await jobs.wait(job.id)).status).toBe('succeeded');
  });
});

describe('files are only handed out with a succeeded manifest', () => {
  it('answers JOB_NOT_READY while the job runs', async () => {
    const jobs = manager();
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'r', rows: 1000 } });
    await gates.waiting('r');
    const error = await rejection(jobs.file(job.id));
    expect(error).toBeInstanceOf(JobStateError);
    expect(error).toMatchObject({ code: 'JOB_NOT_READY', statusCode: 409 });
    gates.open('r');
    await jobs.wait(job.id);
  });

  it('keeps the job running until its succeeded manifest is on disk', async () => {
    // Regression: the job was marked succeeded in memory (and its file served) before the
    // manifest saying so was written; a crash in between deleted a file already handed out.
    const hold = deferred();
    const reached = deferred();
    const save = FileJobStore.prototype.save;
    vi.spyOn(FileJobStore.prototype, 'save').mockImplementation(async function (this: FileJobStore, record) {
      if (record.status === 'succeeded') {
        reached.resolve();
        await hold.promise;
      }
      return save.call(this, record);
    });
    const jobs = manager();
    const job = await jobs.start({ dataset: 'plain', format: 'csv' });
    await reached.promise;
    try {
      expect((await jobs.get(job.id)).status).toBe('running');
      expect((await rejection(jobs.file(job.id))).code).toBe('JOB_NOT_READY');
      expect(await listDir(directory)).toContain(`${job.id}.csv`);
    } finally {
      hold.resolve();
    }
    expect((await jobs.wait(job.id)).status).toBe('succeeded');
    expect((await jobs.file(job.id)).size).toBeGreaterThan(0);
  });
});

describe('bounded queue', () => {
  it('queues beyond maxConcurrent with queue positions, then rejects with queue_full', async () => {
    const jobs = manager({ maxConcurrent: 1, maxQueued: 2, metrics: {} });
    const queuedEvents: Job[] = [];
    jobs.on('job:queued', (job) => queuedEvents.push(job));
    const a = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    const b = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'b' } });
    const c = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'c' } });
    expect([a.status, b.status, c.status]).toEqual(['running', 'queued', 'queued']);
    expect([a.queuePosition, b.queuePosition, c.queuePosition]).toEqual([null, 1, 2]);
    expect(queuedEvents.map((job) => [job.id, job.queuePosition])).toEqual([
      [b.id, 1],
      [c.id, 2],
    ]);
    expect(jobs.queued).toBe(2);
    expect(await sum(jobs.metrics!.queued)).toBe(2);

    const error = await rejection(jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'd' } }));
    expect(error).toBeInstanceOf(BackpressureError);
    expect(error).toMatchObject({ code: 'BACKPRESSURE', statusCode: 429, reason: 'queue_full', limit: 1 });
    expect((error as BackpressureError).retryAfterSeconds).toBeGreaterThanOrEqual(1);

    const bStarted = nextJobEvent(jobs, 'job:started', (job) => job.id === b.id);
    gates.open('a');
    await bStarted;
    expect((await jobs.get(b.id)).queuePosition).toBeNull();
    expect((await jobs.get(c.id)).queuePosition).toBe(1);
    gates.open('b');
    gates.open('c');
    expect((await jobs.wait(c.id)).status).toBe('succeeded');
    expect(jobs.inFlight).toBe(0);
    expect(jobs.queued).toBe(0);
    expect(await sum(jobs.metrics!.queued)).toBe(0);
    expect(await sum(jobs.metrics!.inFlight)).toBe(0);
  });

  it('rejects at once with concurrency_limit when maxQueued is 0 (the default)', async () => {
    const jobs = manager({ maxConcurrent: 1 });
    const rejected: string[] = [];
    jobs.on('rejected', (event) => rejected.push(event.reason));
    await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    const error = await rejection(jobs.start({ dataset: 'plain', format: 'csv' }));
    expect(error).toMatchObject({ reason: 'concurrency_limit', statusCode: 429 });
    expect(rejected).toEqual(['concurrency_limit']);
    gates.open('a');
  });

  it('fails a queued job with QUEUE_TIMEOUT when no slot frees up in queueTimeoutMs', async () => {
    const jobs = manager({ maxConcurrent: 1, maxQueued: 1, queueTimeoutMs: 1 });
    const a = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    const b = await jobs.start({ dataset: 'plain', format: 'csv' });
    expect(b.status).toBe('queued');
    const failed = await jobs.wait(b.id);
    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBe('QUEUE_TIMEOUT');
    expect(failed.startedAt).toBeNull();
    expect(jobs.queued).toBe(0);
    expect((await jobs.get(a.id)).status).toBe('running');
    gates.open('a');
    expect((await jobs.wait(a.id)).status).toBe('succeeded');
  });

  it('estimates retryAfterSeconds from the durations of finished exports', async () => {
    const clock = new ManualClock();
    const jobs = manager({ maxConcurrent: 1, now: clock.now, random: () => 0 });
    const first = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    // Before anything finished: the initial estimate of 5 s for one export ahead.
    expect(
      ((await rejection(jobs.start({ dataset: 'plain', format: 'csv' }))) as BackpressureError)
        .retryAfterSeconds,
    ).toBe(5);
    clock.advance(45_000);
    gates.open('a');
    await jobs.wait(first.id);
    // 5 + 0.2 * (45 - 5) = 13 s on average; one export ahead of one slot.
    await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'b' } });
    const error = (await rejection(jobs.start({ dataset: 'plain', format: 'csv' }))) as BackpressureError;
    expect(error.retryAfterSeconds).toBe(13);
    gates.open('b');
  });
});

describe('progress', () => {
  it('counts rows and bytes per batch and throttles progress events to progressIntervalMs', async () => {
    const clock = new ManualClock();
    const jobs = manager({ now: clock.now });
    const events: Job[] = [];
    jobs.on('job:progress', (job) => events.push(job));
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'p', rows: 3010 } });
    await gates.waiting('p');
    // Several 64 KiB chunks went through, but the clock did not move: one event only.
    const current = await jobs.get(job.id);
    expect(current.status).toBe('running');
    expect(current.progress.rows).toBeGreaterThan(0);
    expect(current.progress.bytes).toBeGreaterThanOrEqual(64 * 1024);
    expect(events).toHaveLength(1);
    expect(events[0]?.progress.rows).toBeGreaterThan(0);
    clock.advance(250);
    gates.open('p');
    const done = await jobs.wait(job.id);
    expect(events).toHaveLength(2);
    expect(done.progress).toEqual({ rows: 3010, bytes: done.file?.bytes, totalRows: null });
  });

  it('emits a progress event per chunk when the interval has passed each time', async () => {
    let time = 0;
    const jobs = manager({ now: () => (time += 1000), progressIntervalMs: 250 });
    const events: Job[] = [];
    jobs.on('job:progress', (job) => events.push(job));
    const job = await jobs.start({ dataset: 'plain', format: 'csv', params: { rows: 3000 } });
    const done = await jobs.wait(job.id);
    expect(events.length).toBeGreaterThanOrEqual(5);
    const rowCounts = events.map((event) => event.progress.rows);
    expect(rowCounts).toEqual([...rowCounts].sort((a, b) => a - b));
    expect(events.at(-1)?.progress.bytes).toBeLessThanOrEqual(done.progress.bytes);
  });

  it('reports totalRows when the dataset can count, and carries on when counting fails', async () => {
    const warnings: string[] = [];
    const jobs = manager({
      datasets: {
        counted: {
          params: { rows: { type: 'integer', default: 7 } },
          source: (params) => Array.from({ length: params.rows as number }, (_, id) => ({ id })),
          count: (params) => params.rows as number,
        },
        miscounted: {
          source: () => [{ id: 1 }],
          count: () => {
            throw new Error('count(*) timed out');
          },
        },
      },
    });
    jobs.on('warning', (message) => warnings.push(message));
    const counted = await jobs.wait(
      (await jobs.start({ dataset: 'counted', format: 'csv', params: { rows: 7 } })).id,
    );
    expect(counted.progress).toMatchObject({ rows: 7, totalRows: 7 });
    const miscounted = await jobs.wait((await jobs.start({ dataset: 'miscounted', format: 'csv' })).id);
    expect(miscounted.status).toBe('succeeded');
    expect(miscounted.progress).toMatchObject({ rows: 1, totalRows: null });
    expect(warnings).toEqual(['Counting rows of dataset "miscounted" failed']);
  });
});

describe('cancel and delete', () => {
  it('cancels a running job: aborts the source, removes the partial file, frees the slot', async () => {
    const jobs = manager({ maxConcurrent: 1, metrics: {} });
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a', rows: 1000 } });
    await gates.waiting('a');
    const cancelledEvent = nextJobEvent(jobs, 'job:cancelled');
    const cancelled = await jobs.cancel(job.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.error).toBeNull();
    expect(cancelled.file).toBeNull();
    expect(cancelled.finishedAt).not.toBeNull();
    expect((await cancelledEvent).id).toBe(job.id);
    expect(gates.closed.has('a')).toBe(true);
    expect(await listDir(directory)).toEqual([`${job.id}.json`]);
    expect(jobs.inFlight).toBe(0);
    expect(await sum(jobs.metrics!.jobsCompleted, { outcome: 'cancelled' })).toBe(1);
    expect(await sum(jobs.metrics!.inFlight)).toBe(0);
    const manifest = JSON.parse(await readFile(join(directory, `${job.id}.json`), 'utf8')) as JobRecord;
    expect(manifest.status).toBe('cancelled');

    // The slot is free again.
    const next = await jobs.start({ dataset: 'plain', format: 'csv' });
    expect(next.status).toBe('running');
    expect((await jobs.wait(next.id)).status).toBe('succeeded');
    // Cancelling a finished job changes nothing.
    expect((await jobs.cancel(next.id)).status).toBe('succeeded');
  });

  it('cancels a queued job and gives its queue place back', async () => {
    // Regression: a cancelled queued job kept its place in the semaphore's wait queue until a
    // slot freed up, so `queued` stayed up and new jobs were turned away with queue_full.
    const jobs = manager({ maxConcurrent: 1, maxQueued: 2, metrics: {} });
    const a = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    const b = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'b' } });
    const c = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'c' } });
    expect((await jobs.cancel(b.id)).status).toBe('cancelled');
    expect((await jobs.get(b.id)).startedAt).toBeNull();
    expect((await jobs.get(c.id)).queuePosition).toBe(1);
    expect(jobs.queued).toBe(1);
    expect(await sum(jobs.metrics!.queued)).toBe(1);
    const d = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'd' } });
    expect(d).toMatchObject({ status: 'queued', queuePosition: 2 });
    expect(gates.closed.has('b')).toBe(false); // its source never opened

    gates.open('a');
    gates.open('c');
    gates.open('d');
    expect((await jobs.wait(d.id)).status).toBe('succeeded');
    expect((await jobs.get(a.id)).status).toBe('succeeded');
    expect((await jobs.get(b.id)).status).toBe('cancelled');
    expect(jobs.queued).toBe(0);
    expect(jobs.inFlight).toBe(0);
    expect(await sum(jobs.metrics!.queued)).toBe(0);
  });

  it('deletes a running job: cancels it, removes its file and manifest; then it is not found', async () => {
    const jobs = manager({ maxConcurrent: 1 });
    const job = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a', rows: 1000 } });
    await gates.waiting('a');
    await jobs.delete(job.id);
    expect(gates.closed.has('a')).toBe(true);
    expect(await listDir(directory)).toEqual([]);
    expect(await rejection(jobs.get(job.id))).toBeInstanceOf(NotFoundError);
    expect((await jobs.list()).jobs).toEqual([]);
    expect(jobs.inFlight).toBe(0);
  });

  it('deletes a succeeded job and its file, and lowers export_storage_bytes', async () => {
    const jobs = manager({ metrics: {} });
    const job = await jobs.wait((await jobs.start({ dataset: 'plain', format: 'csv' })).id);
    expect(await sum(jobs.metrics!.storageBytes)).toBe(job.file?.bytes);
    await jobs.delete(job.id);
    expect(await listDir(directory)).toEqual([]);
    expect(await sum(jobs.metrics!.storageBytes)).toBe(0);
    expect(await rejection(jobs.file(job.id))).toBeInstanceOf(NotFoundError);
    expect(await rejection(jobs.delete(job.id))).toBeInstanceOf(NotFoundError);
  });

  it('deletes a queued job', async () => {
    const jobs = manager({ maxConcurrent: 1, maxQueued: 1 });
    await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' } });
    const queued = await jobs.start({ dataset: 'plain', format: 'csv' });
    await jobs.delete(queued.id);
    expect(jobs.queued).toBe(0);
    expect((await listDir(directory)).some((name) => name.startsWith(queued.id))).toBe(false);
    gates.open('a');
  });
});

describe('list', () => {
  it('lists newest first with cursor pagination and a status filter', async () => {
    const clock = new ManualClock();
    const jobs = manager({ now: clock.now, maxConcurrent: 10 });
    const ids: string[] = [];
    for (let index = 0; index < 7; index++) {
      clock.advance(1000);
      ids.push((await jobs.start({ dataset: 'plain', format: 'csv' })).id);
    }
    // Two jobs created in the same millisecond are ordered by id, still without gaps.
    ids.push((await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'same' } })).id);
    await Promise.all(ids.slice(0, 7).map((id) => jobs.wait(id)));

    const seen: string[] = [];
    let cursor: string | undefined;
    const pageSizes: number[] = [];
    do {
      const page = await jobs.list({ limit: 3, ...(cursor ? { cursor } : {}) });
      pageSizes.push(page.jobs.length);
      seen.push(...page.jobs.map((job) => job.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(pageSizes).toEqual([3, 3, 2]);
    expect(new Set(seen).size).toBe(8);
    const all = (await jobs.list({ limit: 1000 })).jobs;
    expect(all.map((job) => job.id)).toEqual(seen);
    for (let index = 1; index < all.length; index++) {
      expect(all[index - 1]!.createdAt >= all[index]!.createdAt).toBe(true);
    }
    expect(seen.indexOf(ids[6]!)).toBeLessThan(seen.indexOf(ids[0]!));
    expect(seen.at(-1)).toBe(ids[0]);

    const running = await jobs.list({ status: 'running' });
    expect(running).toEqual({ jobs: [expect.objectContaining({ id: ids[7] })], nextCursor: null });
    expect((await jobs.list({ status: 'succeeded', limit: 7 })).nextCursor).toBeNull();
    expect((await jobs.list({ status: 'succeeded', limit: 6 })).nextCursor).not.toBeNull();
    gates.open('same');
  });

  it.each([
    [{ limit: 0 }, 'limit'],
    [{ limit: 1001 }, 'limit'],
    [{ limit: 2.5 }, 'limit'],
    [{ status: 'done' as never }, 'status'],
    [{ cursor: 'not-a-cursor' }, 'cursor'],
    [{ cursor: Buffer.from('["x","../etc"]').toString('base64url') }, 'cursor'],
  ])('rejects %j with a 400 naming the field', async (options, field) => {
    const jobs = manager();
    const error = await rejection(jobs.list(options));
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ statusCode: 400, field });
  });
});

describe('idempotency', () => {
  it('returns the existing job for the same owner and key instead of starting a second export', async () => {
    const jobs = manager({ maxConcurrent: 1, metrics: {} });
    const request = {
      dataset: 'gated',
      format: 'csv',
      params: { key: 'a' },
      owner: 'u1',
      idempotencyKey: 'k1',
    } as const;
    const [first, second] = await Promise.all([jobs.start(request), jobs.start(request)]);
    expect(second.id).toBe(first.id);
    // The slot is taken, yet the retry is answered with the same job, not a 429.
    expect((await jobs.start(request)).id).toBe(first.id);
    expect(await sum(jobs.metrics!.jobsStarted)).toBe(1);
    gates.open('a');
    await jobs.wait(first.id, { owner: 'u1' });
    const again = await jobs.start(request);
    expect(again).toMatchObject({ id: first.id, status: 'succeeded' });
    // Another owner with the same key gets a job of its own.
    const other = await jobs.start({ ...request, owner: 'u2', params: { key: 'b' } });
    expect(other.id).not.toBe(first.id);
    gates.open('b');
    await jobs.wait(other.id, { owner: 'u2' });
    expect((await jobs.list({ owner: 'u1' })).jobs).toHaveLength(1);
  });

  it('rejects an idempotency key that is not a short non-empty string', async () => {
    const jobs = manager();
    const error = await rejection(
      jobs.start({ dataset: 'plain', format: 'csv', idempotencyKey: 'x'.repeat(201) }),
    );
    expect(error).toMatchObject({ statusCode: 400, field: 'idempotencyKey' });
  });
});

describe('owners', () => {
  it("never shows, cancels, deletes or serves another owner's job", async () => {
    const jobs = manager({ maxConcurrent: 3 });
    const alice = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a' }, owner: 'alice' });
    const done = await jobs.wait((await jobs.start({ dataset: 'plain', format: 'csv', owner: 'alice' })).id, {
      owner: 'alice',
    });
    const anonymous = await jobs.start({ dataset: 'plain', format: 'csv' });
    await jobs.wait(anonymous.id);

    for (const caller of [{ owner: 'bob' }, {}]) {
      for (const id of [alice.id, done.id]) {
        for (const call of [
          () => jobs.get(id, caller),
          () => jobs.wait(id, caller),
          () => jobs.cancel(id, caller),
          () => jobs.delete(id, caller),
          () => jobs.file(id, caller),
        ]) {
          const error = await rejection(call());
          expect(error).toBeInstanceOf(NotFoundError);
          expect(error.message).toBe('No such export job');
        }
      }
    }
    expect((await jobs.list({ owner: 'bob' })).jobs).toEqual([]);
    expect((await jobs.list()).jobs.map((job) => job.id)).toEqual([anonymous.id]);
    expect(await rejection(jobs.get(anonymous.id, { owner: 'alice' }))).toBeInstanceOf(NotFoundError);
    expect((await jobs.list({ owner: 'alice' })).jobs.map((job) => job.id).sort()).toEqual(
      [alice.id, done.id].sort(),
    );
    // Nothing happened to alice's jobs.
    expect((await jobs.get(alice.id, { owner: 'alice' })).status).toBe('running');
    expect((await jobs.file(done.id, { owner: 'alice' })).size).toBe(done.file?.bytes);
    gates.open('a');
    expect((await jobs.wait(alice.id, { owner: 'alice' })).status).toBe('succeeded');
  });

  it('keeps one owner from taking every slot with maxConcurrentPerOwner (owner_limit)', async () => {
    const jobs = manager({ maxConcurrent: 3, maxQueued: 2, maxConcurrentPerOwner: 2, metrics: {} });
    const a1 = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a1' }, owner: 'alice' });
    await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a2' }, owner: 'alice' });
    const error = await rejection(
      jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a3' }, owner: 'alice' }),
    );
    expect(error).toBeInstanceOf(BackpressureError);
    expect(error).toMatchObject({ reason: 'owner_limit', statusCode: 429, code: 'BACKPRESSURE' });
    expect(await sum(jobs.metrics!.jobsRejected, { reason: 'owner_limit' })).toBe(1);
    // Others still get the free slot, and queue places count towards the owner too.
    const bob1 = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'b1' }, owner: 'bob' });
    const bob2 = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'b2' }, owner: 'bob' });
    expect([bob1.status, bob2.status]).toEqual(['running', 'queued']);
    expect(
      ((await rejection(jobs.start({ dataset: 'plain', format: 'csv', owner: 'bob' }))) as BackpressureError)
        .reason,
    ).toBe('owner_limit');
    // When one of alice's jobs ends, she may start another.
    gates.open('a1');
    await jobs.wait(a1.id, { owner: 'alice' });
    const a3 = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'a3' }, owner: 'alice' });
    expect(a3.status).toBe('queued');
    for (const key of ['a2', 'a3', 'b1', 'b2']) gates.open(key);
    await jobs.wait(a3.id, { owner: 'alice' });
    await jobs.wait(bob2.id, { owner: 'bob' });
    expect(jobs.inFlight).toBe(0);
  });
});

describe('write failures', () => {
  it('fails the job with WRITE_FAILED when its .part file cannot be created, and frees the slot', async () => {
    // Root ignores file modes, so the path is taken by a directory instead.
    const jobs = manager({ maxConcurrent: 1, metrics: {} });
    const warnings: string[] = [];
    jobs.on('warning', (message) => warnings.push(message));
    jobs.on('job:started', (job) => mkdirSync(join(directory, `${job.id}.csv.part`)));
    const job = await jobs.start({ dataset: 'plain', format: 'csv', params: { rows: 1000 } });
    const failed = await jobs.wait(job.id);
    expect(failed.status).toBe('failed');
    expect(failed.error).toEqual({ code: 'WRITE_FAILED', message: 'Writing the export failed' });
    expect(failed.file).toBeNull();
    expect(jobs.inFlight).toBe(0);
    expect(await sum(jobs.metrics!.jobsCompleted, { outcome: 'failed' })).toBe(1);
    jobs.removeAllListeners('job:started');
    const next = await jobs.wait((await jobs.start({ dataset: 'plain', format: 'csv' })).id);
    expect(next.status).toBe('succeeded');
    expect(warnings.length).toBeGreaterThan(0);
  });

  it('fails with WRITE_FAILED when the finished file cannot be renamed, leaving no partial file', async () => {
    const jobs = manager({ maxConcurrent: 1 });
    jobs.on('job:started', (job) =>
      mkdirSync(join(directory, `${job.id}.csv`, 'occupied'), { recursive: true }),
    );
    const job = await jobs.start({ dataset: 'plain', format: 'csv', params: { rows: 1000 } });
    const failed = await jobs.wait(job.id);
    expect(failed.status).toBe('failed');
    expect(failed.error).toEqual({ code: 'WRITE_FAILED', message: 'Could not finish the export file' });
    const names = await listDir(directory);
    expect(names.filter((name) => name.endsWith('.part'))).toEqual([]);
    expect(jobs.inFlight).toBe(0);
    await expect(jobs.file(job.id)).rejects.toMatchObject({ code: 'JOB_NOT_READY' });
  });
});

describe('close', () => {
  it('refuses new work, fails queued jobs as INTERRUPTED, lets a running export finish within the drain time and interrupts one that does not', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const jobs = manager({ maxConcurrent: 2, maxQueued: 1, metrics: {} });
      const quick = await jobs.start({
        dataset: 'gated',
        format: 'csv',
        params: { key: 'quick', rows: 1000 },
      });
      const stuck = await jobs.start({
        dataset: 'gated',
        format: 'csv',
        params: { key: 'stuck', rows: 1000 },
      });
      const queued = await jobs.start({ dataset: 'plain', format: 'csv' });
      expect(queued.status).toBe('queued');
      await Promise.all([gates.waiting('quick'), gates.waiting('stuck')]);

      let closed = false;
      const closing = jobs.close({ drainTimeoutMs: 60_000 }).then(() => {
        closed = true;
      });
      expect(jobs.closing).toBe(true);
      const refused = await rejection(jobs.start({ dataset: 'plain', format: 'csv' }));
      expect(refused).toMatchObject({ reason: 'shutting_down', statusCode: 503, code: 'SHUTTING_DOWN' });
      expect((await jobs.wait(queued.id)).error?.code).toBe('INTERRUPTED');
      expect((await jobs.get(queued.id)).status).toBe('failed');

      gates.open('quick');
      expect((await jobs.wait(quick.id)).status).toBe('succeeded');
      expect(closed).toBe(false);
      expect((await jobs.get(stuck.id)).status).toBe('running');

      vi.advanceTimersByTime(60_000);
      await closing;
      const interrupted = await jobs.get(stuck.id);
      expect(interrupted.status).toBe('failed');
      expect(interrupted.error).toEqual({
        code: 'INTERRUPTED',
        message: 'The export was interrupted by a shutdown',
      });
      expect(gates.closed.has('stuck')).toBe(true);
      expect(jobs.inFlight).toBe(0);
      expect(jobs.queued).toBe(0);
      expect(await sum(jobs.metrics!.inFlight)).toBe(0);
      expect(await sum(jobs.metrics!.queued)).toBe(0);
      expect(await sum(jobs.metrics!.concurrencyLimit)).toBe(0);
      expect(await listDir(directory)).toEqual(
        [`${quick.id}.csv`, `${quick.id}.json`, `${stuck.id}.json`, `${queued.id}.json`].sort(),
      );
      const manifest = JSON.parse(await readFile(join(directory, `${stuck.id}.json`), 'utf8')) as JobRecord;
      expect(manifest).toMatchObject({ status: 'failed', error: { code: 'INTERRUPTED' } });
      // Safe to call twice.
      await jobs.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('resolves at once when nothing runs, and clears the retention sweeper', async () => {
    const jobs = manager({ retention: { maxAgeMs: 1000, sweepIntervalMs: 10 } });
    await jobs.ready;
    await jobs.close({ drainTimeoutMs: 0 });
    expect(await rejection(jobs.start({ dataset: 'plain', format: 'csv' }))).toMatchObject({
      reason: 'shutting_down',
    });
    // Lists and downloads still work for what is on disk.
    expect((await jobs.list()).jobs).toEqual([]);
  });

  it('interrupts every running export at once with drainTimeoutMs 0', async () => {
    const jobs = manager({ maxConcurrent: 3 });
    const started = await Promise.all(
      ['x', 'y', 'z'].map((key) =>
        jobs.start({ dataset: 'gated', format: 'json', params: { key, rows: 700 } }),
      ),
    );
    await Promise.all(['x', 'y', 'z'].map((key) => gates.waiting(key)));
    await jobs.close({ drainTimeoutMs: 0 });
    for (const job of started) expect((await jobs.get(job.id)).error?.code).toBe('INTERRUPTED');
    expect(await listDir(directory)).toEqual(started.map((job) => `${job.id}.json`).sort());
  });
});

describe('slots of finished jobs', () => {
  it('are free again by the time a job is seen failed or succeeded, so the client can start the next', async () => {
    const jobs = manager({
      maxConcurrent: 1,
      datasets: {
        broken: {
          source: () => {
            throw new Error('no database');
          },
        },
      },
    });
    const seen: string[] = [];
    const check = (job: Job) => {
      // What a client polling the job would see next: a finished job and a free slot.
      seen.push(`${job.status}:${jobs.inFlight}`);
    };
    jobs.on('job:failed', check);
    jobs.on('job:succeeded', check);

    const failed = await jobs.start({ dataset: 'broken', format: 'csv' });
    expect((await jobs.wait(failed.id)).status).toBe('failed');
    const succeeded = await jobs.start({ dataset: 'plain', format: 'csv' });
    expect((await jobs.wait(succeeded.id)).status).toBe('succeeded');
    expect(seen).toEqual(['failed:0', 'succeeded:0']);
  });
});
