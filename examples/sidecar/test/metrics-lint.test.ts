// `promtool check metrics` (the real one, Debian package `prometheus`) on a live /export/metrics
// body of an in-process sidecar after successful, failed and rejected exports: every metric
// family the sidecar exposes, export_* and process metrics alike, passes Prometheus' own lint.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startTestSidecar, type TestSidecar, tempDir, waitForJob } from './helpers.js';
import {
  createItemsDatabase,
  type HeldUpstream,
  opsConfig,
  postJob,
  requireProgram,
  startHeldUpstream,
  waitForIdle,
} from './programs.js';

const promtool = await requireProgram('promtool', 'prometheus');

function checkMetrics(body: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtool.path!, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(body);
  });
}

describe.skipIf(promtool.skip)('promtool check metrics on a live /export/metrics', () => {
  let dir: string;
  let upstream: HeldUpstream;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    dir = tempDir('spark-metrics-lint-');
    createItemsDatabase(join(dir, 'items.sqlite'), 500);
    upstream = await startHeldUpstream();
    sidecar = await startTestSidecar(opsConfig(join(dir, 'items.sqlite'), upstream.url), {
      baseDir: dir,
      env: { EXPORT_MAX_CONCURRENT: '1', LOG_LEVEL: 'silent' },
    });
  });
  afterAll(async () => {
    await sidecar?.close();
    await upstream?.close();
    removeDir(dir);
  });

  it('reports nothing after succeeded, failed and rejected exports', async () => {
    for (const dataset of ['items', 'broken']) {
      const created = await postJob(sidecar.origin, { dataset, format: 'csv' });
      expect(created.status).toBe(202);
      await waitForJob(sidecar.url(created.location!));
    }
    await waitForIdle(sidecar.origin);
    const held = await postJob(sidecar.origin, { dataset: 'held', format: 'ndjson' });
    expect(held.status).toBe(202);
    await upstream.waitForRequests(1);
    expect((await postJob(sidecar.origin, { dataset: 'items', format: 'json' })).status).toBe(429);
    upstream.release();
    expect((await waitForJob(sidecar.url(held.location!))).status).toBe('succeeded');

    const response = await fetch(sidecar.url('/export/metrics'));
    expect(response.status).toBe(200);
    const body = await response.text();
    // The body holds what the lint is meant to see: all outcomes and a rejection.
    expect(body).toMatch(/^export_jobs_completed_total\{[^}]*outcome="succeeded"\} 1$/m);
    expect(body).toMatch(/^export_jobs_completed_total\{[^}]*outcome="failed"\} 1$/m);
    expect(body).toMatch(/^export_jobs_rejected_total\{[^}]*reason="concurrency_limit"[^}]*\} 1$/m);
    expect(body).toMatch(/^process_cpu_seconds_total /m);

    expect(await checkMetrics(body)).toEqual({ code: 0, output: '' });
  });
});
