import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ExportError } from '../src/errors.js';
import type { ExportManager } from '../src/export-manager.js';
import type { Job, JobRecord } from '../src/jobs/job.js';
import {
  createManager,
  Gates,
  listDir,
  ManualClock,
  nextJobEvent,
  removeDir,
  tempDir,
} from './jobs.helpers.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

let directory: string;
let gates: Gates;
let clock: ManualClock;
const managers: ExportManager[] = [];

function manager(options: Parameters<typeof createManager>[2] = {}): ExportManager {
  const created = createManager(directory, gates, { now: clock.now, metrics: {}, ...options });
  managers.push(created);
  return created;
}

async function finishJob(jobs: ExportManager, rows: number): Promise<Job> {
  const job = await jobs.start({ dataset: 'plain', format: 'csv', params: { rows } });
  return jobs.wait(job.id);
}

async function sum(metric: { get(): Promise<{ values: { value: number; labels: object }[] }> }, labels = {}) {
  const { values } = await metric.get();
  return values
    .filter((value) =>
      Object.entries(labels).every(([key, wanted]) => (value.labels as never)[key] === wanted),
    )
    .reduce((total, value) => total + value.value, 0);
}

async function manifest(id: string): Promise<JobRecord> {
  return JSON.parse(await readFile(join(directory, `${id}.json`), 'utf8')) as JobRecord;
}

beforeEach(async () => {
  directory = await tempDir();
  gates = new Gates();
  clock = new ManualClock();
});

afterEach(async () => {
  vi.useRealTimers();
  await Promise.allSettled(managers.splice(0).map((created) => created.close({ drainTimeoutMs: 0 })));
  await removeDir(directory);
});

describe('retention by age', () => {
  it('deletes files older than maxAgeMs and marks their jobs expired, keeping the manifest', async () => {
    const jobs = manager({ retention: { maxAgeMs: HOUR } });
    const expiredEvents: Job[] = [];
    jobs.on('job:expired', (job) => expiredEvents.push(job));
    const old = await finishJob(jobs, 10);
    expect(old.expiresAt).toBe(new Date(clock.time + HOUR).toISOString());
    clock.advance(30 * 60_000);
    const young = await finishJob(jobs, 20);
    expect(await sum(jobs.metrics!.storageBytes)).toBe((old.file?.bytes ?? 0) + (young.file?.bytes ?? 0));

    clock.advance(30 * 60_000 - 1);
    expect(await jobs.sweep()).toEqual({ expired: 0, forgotten: 0 });
    clock.advance(1);
    expect(await jobs.sweep()).toEqual({ expired: 1, forgotten: 0 });

    const expired = await jobs.get(old.id);
    expect(expired.status).toBe('expired');
    expect(expired.expiresAt).toBe(new Date(clock.time).toISOString());
    expect(expiredEvents.map((job) => job.id)).toEqual([old.id]);
    await expect(jobs.file(old.id)).rejects.toMatchObject({
      code: 'JOB_EXPIRED',
      statusCode: 410,
    } as ExportError);
    expect((await manifest(old.id)).status).toBe('expired');
    expect(await listDir(directory)).toEqual(
      [`${old.id}.json`, `${young.id}.csv`, `${young.id}.json`].sort(),
    );
    expect((await jobs.get(young.id)).status).toBe('succeeded');
    expect(await sum(jobs.metrics!.storageBytes)).toBe(young.file?.bytes);
    expect(await sum(jobs.metrics!.retentionDeletions, { reason: 'age' })).toBe(1);
    expect((await jobs.list({ status: 'expired' })).jobs.map((job) => job.id)).toEqual([old.id]);
  });

  it('keeps an expired manifest for keepManifestsMs after it expired, so pollers see expired, not 404', async () => {
    // Regression: the manifest's age was counted from when the job finished, so a job expired
    // by maxAgeMs >= keepManifestsMs was forgotten in the very pass that expired it.
    const jobs = manager({ retention: { maxAgeMs: 10 * DAY } });
    const job = await finishJob(jobs, 5);
    clock.advance(10 * DAY);
    expect(await jobs.sweep()).toEqual({ expired: 1, forgotten: 0 });
    expect((await jobs.get(job.id)).status).toBe('expired');

    clock.advance(7 * DAY - 1);
    expect(await jobs.sweep()).toEqual({ expired: 0, forgotten: 0 });
    expect((await jobs.get(job.id)).status).toBe('expired');
    clock.advance(1);
    expect(await jobs.sweep()).toEqual({ expired: 0, forgotten: 1 });
    await expect(jobs.get(job.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await listDir(directory)).toEqual([]);
  });

  it('forgets failed and cancelled jobs after keepManifestsMs, and never touches running ones', async () => {
    const jobs = manager({
      maxConcurrent: 3,
      retention: { maxAgeMs: HOUR, keepManifestsMs: 2 * HOUR },
      datasets: {
        broken: {
          source: () => {
            throw new Error('down');
          },
        },
      },
    });
    const failed = await jobs.wait((await jobs.start({ dataset: 'broken', format: 'csv' })).id);
    expect(failed.status).toBe('failed');
    const cancelled = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'c' } });
    await jobs.cancel(cancelled.id);
    const running = await jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'r', rows: 700 } });
    await gates.waiting('r');

    clock.advance(2 * HOUR);
    expect(await jobs.sweep()).toEqual({ expired: 0, forgotten: 2 });
    expect((await jobs.list()).jobs.map((job) => job.id)).toEqual([running.id]);
    expect(await listDir(directory)).toEqual([`${running.id}.csv.part`, `${running.id}.json`]);
    gates.open('r');
    expect((await jobs.wait(running.id)).status).toBe('succeeded');
  });

  it('runs the sweep by itself on its interval', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const jobs = manager({ retention: { maxAgeMs: HOUR, sweepIntervalMs: 60_000 } });
    const job = await finishJob(jobs, 5);
    clock.advance(HOUR);
    const expired = nextJobEvent(jobs, 'job:expired');
    vi.advanceTimersByTime(60_000);
    expect((await expired).id).toBe(job.id);
    expect((await jobs.get(job.id)).status).toBe('expired');
  });
});

describe('retention by size', () => {
  it('deletes the oldest files while all of them together exceed maxTotalBytes', async () => {
    const jobs = manager({ retention: { maxTotalBytes: 5000 } });
    const finished: Job[] = [];
    for (const rows of [40, 30, 20, 10]) {
      clock.advance(1000);
      finished.push(await finishJob(jobs, rows));
    }
    // About 4.6, 3.5, 2.3 and 1.2 KB: the two oldest must go to get under 5000 bytes.
    const sizes = finished.map((job) => job.file?.bytes ?? 0);
    expect(sizes[1]! + sizes[2]! + sizes[3]!).toBeGreaterThan(5000);
    expect(sizes[2]! + sizes[3]!).toBeLessThanOrEqual(5000);

    expect(await jobs.sweep()).toEqual({ expired: 2, forgotten: 0 });
    const statuses = await Promise.all(finished.map(async (job) => (await jobs.get(job.id)).status));
    expect(statuses).toEqual(['expired', 'expired', 'succeeded', 'succeeded']);
    expect(await sum(jobs.metrics!.storageBytes)).toBe(sizes[2]! + sizes[3]!);
    expect(await sum(jobs.metrics!.retentionDeletions, { reason: 'size' })).toBe(2);
    expect((await listDir(directory)).filter((name) => name.endsWith('.csv'))).toEqual(
      [`${finished[2]!.id}.csv`, `${finished[3]!.id}.csv`].sort(),
    );
    // Under the limit now: another pass deletes nothing.
    expect(await jobs.sweep()).toEqual({ expired: 0, forgotten: 0 });
  });

  it('expires a file once even when two sweeps overlap', async () => {
    // Regression: an overlapping pass (the timer and a manual call) expired the same job
    // twice, counting the deletion twice and driving export_storage_bytes below zero.
    const jobs = manager({ retention: { maxAgeMs: HOUR } });
    const job = await finishJob(jobs, 10);
    clock.advance(HOUR);
    const [first, second] = await Promise.all([jobs.sweep(), jobs.sweep()]);
    expect(first.expired + second.expired).toBe(1);
    expect(await sum(jobs.metrics!.retentionDeletions)).toBe(1);
    expect(await sum(jobs.metrics!.storageBytes)).toBe(0);
    expect((await jobs.get(job.id)).status).toBe('expired');
  });
});

describe('retention across restarts', () => {
  it('counts recovered files in export_storage_bytes and expires them by their finish time', async () => {
    const first = manager({ retention: { maxAgeMs: HOUR } });
    const job = await finishJob(first, 50);
    await first.close();

    clock.advance(HOUR - 1);
    const second = manager({ retention: { maxAgeMs: HOUR } });
    await second.ready;
    expect(await sum(second.metrics!.storageBytes)).toBe(job.file?.bytes);
    expect(await second.sweep()).toEqual({ expired: 0, forgotten: 0 });
    clock.advance(1);
    expect(await second.sweep()).toEqual({ expired: 1, forgotten: 0 });
    expect(await sum(second.metrics!.storageBytes)).toBe(0);
    expect(await listDir(directory)).toEqual([`${job.id}.json`]);
  });
});
