import { afterEach, beforeEach, expect, it } from 'vitest';
import { BackpressureError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import type { Job } from '../src/jobs/job.js';
import { Gates, listDir, removeDir, sha256Of, tempDir } from './jobs.helpers.js';

let directory: string;
let manager: ExportManager | undefined;

async function sum(metric: { get(): Promise<{ values: { value: number; labels: object }[] }> }, labels = {}) {
  const { values } = await metric.get();
  return values
    .filter((value) =>
      Object.entries(labels).every(([key, wanted]) => (value.labels as never)[key] === wanted),
    )
    .reduce((total, value) => total + value.value, 0);
}

beforeEach(async () => {
  directory = await tempDir('spark-load-');
});

afterEach(async () => {
  await manager?.close({ drainTimeoutMs: 0 });
  manager = undefined;
  await removeDir(directory);
});

it('accepts exactly maxConcurrent + maxQueued of 200 concurrent start() calls and runs them all', async () => {
  const gates = new Gates();
  const jobs = new ExportManager({
    directory,
    maxConcurrent: 5,
    maxQueued: 10,
    metrics: {},
    datasets: { gated: gates.dataset() },
  });
  manager = jobs;
  const rejectedEvents: string[] = [];
  jobs.on('rejected', (event) => rejectedEvents.push(event.reason));

  // Every source waits at the same gate, so no slot frees up while the calls come in.
  const results = await Promise.allSettled(
    Array.from({ length: 200 }, (_, index) =>
      jobs.start({ dataset: 'gated', format: 'csv', params: { key: 'all', rows: index } }),
    ),
  );
  const accepted = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const errors = results.flatMap((result) =>
    result.status === 'rejected' ? [result.reason as unknown] : [],
  );
  expect(accepted).toHaveLength(15);
  expect(errors).toHaveLength(185);
  for (const error of errors) {
    expect(error).toBeInstanceOf(BackpressureError);
    const backpressure = error as BackpressureError;
    expect(backpressure).toMatchObject({ statusCode: 429, reason: 'queue_full', limit: 5, inFlight: 5 });
    expect(Number.isInteger(backpressure.retryAfterSeconds)).toBe(true);
    expect(backpressure.retryAfterSeconds).toBeGreaterThanOrEqual(1);
  }
  expect(rejectedEvents).toEqual(Array(185).fill('queue_full'));
  expect(accepted.filter((job) => job.status === 'running')).toHaveLength(5);
  expect(
    accepted
      .filter((job) => job.status === 'queued')
      .map((job) => job.queuePosition)
      .sort((a, b) => (a ?? 0) - (b ?? 0)),
  ).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  expect(jobs.inFlight).toBe(5);
  expect(jobs.queued).toBe(10);
  expect(await sum(jobs.metrics!.inFlight)).toBe(5);
  expect(await sum(jobs.metrics!.queued)).toBe(10);

  gates.open('all');
  const finished: Job[] = await Promise.all(accepted.map((job) => jobs.wait(job.id)));
  for (const job of finished) {
    expect(job.status).toBe('succeeded');
    expect(await sha256Of(`${directory}/${job.file?.name}`)).toBe(job.file?.sha256);
  }
  const started = await sum(jobs.metrics!.jobsStarted);
  const rejected = await sum(jobs.metrics!.jobsRejected);
  expect({ started, rejected }).toEqual({ started: 15, rejected: 185 });
  expect(started + rejected).toBe(200);
  expect(await sum(jobs.metrics!.jobsCompleted, { outcome: 'succeeded' })).toBe(15);
  expect(await sum(jobs.metrics!.jobsCompleted)).toBe(15);
  expect(await sum(jobs.metrics!.inFlight)).toBe(0);
  expect(await sum(jobs.metrics!.queued)).toBe(0);
  expect(jobs.inFlight).toBe(0);
  expect(jobs.queued).toBe(0);
  const storage = finished.reduce((total, job) => total + (job.file?.bytes ?? 0), 0);
  expect(await sum(jobs.metrics!.storageBytes)).toBe(storage);
  expect(await listDir(directory)).toHaveLength(30);
});
