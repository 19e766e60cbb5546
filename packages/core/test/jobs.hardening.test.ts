import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isBackpressureError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import { createExportHandler, toNodeHandler } from '../src/http/index.js';
import { deferred } from '../src/testing/deferred.js';
import { listDir, plainDataset, removeDir, tempDir } from './jobs.helpers.js';

const dist = join(import.meta.dirname, '..', 'dist', 'index.js');
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(manager: ExportManager): Promise<string> {
  const server = http.createServer(toNodeHandler(createExportHandler(manager, { onError: () => {} })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/export`;
}

async function jobsIn(directory: string, options: ConstructorParameters<typeof ExportManager>[0] = {}) {
  const manager = new ExportManager({
    directory,
    metrics: false,
    datasets: { plain: plainDataset },
    ...options,
  });
  cleanups.push(() => manager.close({ drainTimeoutMs: 0 }));
  await manager.ready;
  return manager;
}

async function directory(): Promise<string> {
  const dir = await tempDir('spark-hardening-');
  cleanups.push(() => removeDir(dir));
  return dir;
}

const post = (origin: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${origin}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

describe('idempotency keys over HTTP', () => {
  it('answers a key used again with a different request with 422 IDEMPOTENCY_KEY_REUSED', async () => {
    const origin = await serve(await jobsIn(await directory()));
    const first = await post(origin, { dataset: 'plain', format: 'csv' }, { 'idempotency-key': 'k1' });
    expect(first.status).toBe(202);
    const job = (await first.json()) as { id: string };
    const again = await post(origin, { dataset: 'plain', format: 'csv' }, { 'idempotency-key': 'k1' });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { id: string }).id).toBe(job.id);
    const other = await post(origin, { dataset: 'plain', format: 'ndjson' }, { 'idempotency-key': 'k1' });
    expect(other.status).toBe(422);
    expect(other.headers.get('content-type')).toBe('application/problem+json');
    expect(await other.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', field: 'idempotencyKey' });
    const params = await post(
      origin,
      { dataset: 'plain', format: 'csv', params: { rows: 3 } },
      { 'idempotency-key': 'k1' },
    );
    expect(params.status).toBe(422);
  });

  it('refuses two Idempotency-Key headers (joined by Node as "a, b") with 400', async () => {
    const origin = new URL(await serve(await jobsIn(await directory())));
    const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = http.request(
        {
          host: origin.hostname,
          port: origin.port,
          path: '/export/jobs',
          method: 'POST',
          // An array sends the header twice, as two lines.
          headers: { 'content-type': 'application/json', 'idempotency-key': ['a', 'b'] },
        },
        (response) => {
          let body = '';
          response.setEncoding('utf8').on('data', (chunk: string) => {
            body += chunk;
          });
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        },
      );
      request.on('error', reject);
      request.end(JSON.stringify({ dataset: 'plain', format: 'csv' }));
    });
    expect(status.status).toBe(400);
    expect(JSON.parse(status.body)).toMatchObject({ code: 'BAD_REQUEST', field: 'Idempotency-Key' });
  });
});

describe('a truncated file is never served', () => {
  it('answers 410 JOB_FILE_CORRUPT while running, and marks the job expired at the next start', async () => {
    const dir = await directory();
    const manager = await jobsIn(dir);
    const origin = await serve(manager);
    const created = (await (
      await post(origin, { dataset: 'plain', format: 'csv', params: { rows: 500 } })
    ).json()) as {
      id: string;
    };
    const job = await manager.wait(created.id);
    expect(job.status).toBe('succeeded');
    const whole = await fetch(`${origin}/jobs/${job.id}/download`);
    expect(whole.status).toBe(200);
    await whole.arrayBuffer();
    await truncate(join(dir, `${job.id}.csv`), 100);
    const cut = await fetch(`${origin}/jobs/${job.id}/download`);
    expect(cut.status).toBe(410);
    expect(await cut.json()).toMatchObject({ code: 'JOB_FILE_CORRUPT' });
    await manager.close();

    const restarted = await jobsIn(dir);
    const after = await serve(restarted);
    expect(((await (await fetch(`${after}/jobs/${job.id}`)).json()) as { status: string }).status).toBe(
      'expired',
    );
    const gone = await fetch(`${after}/jobs/${job.id}/download`);
    expect(gone.status).toBe(410);
    expect(await gone.json()).toMatchObject({ code: 'JOB_EXPIRED' });
    // The short file was removed with the job's expiry.
    expect(await listDir(dir)).toEqual([`${job.id}.json`]);
  });
});

describe('a full disk at POST /jobs', () => {
  it.skipIf(!process.env.CI && !existsSync('/usr/bin/prlimit'))(
    'answers 507 WRITE_FAILED, creates no job and leaves no temp file',
    async () => {
      if (!existsSync(dist)) throw new Error(`${dist} is missing: build first (npm run build)`);
      const dir = await directory();
      // 64 bytes: no manifest fits (they are several hundred), as when the disk is full.
      const child = spawn(
        'prlimit',
        [
          '--fsize=64',
          '--',
          process.execPath,
          join(import.meta.dirname, 'fixtures', 'small-disk-server.mjs'),
          dir,
        ],
        {
          stdio: ['pipe', 'pipe', 'inherit'],
        },
      );
      const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
      cleanups.push(async () => {
        child.stdin.end();
        await closed;
      });
      const ready = deferred<number>();
      createInterface({ input: child.stdout }).once('line', (line) =>
        ready.resolve((JSON.parse(line) as { port: number }).port),
      );
      child.once('error', ready.reject);
      const origin = `http://127.0.0.1:${await ready.promise}/export`;

      const response = await post(origin, { dataset: 'small', format: 'csv' });
      expect(response.status).toBe(507);
      expect(response.headers.get('content-type')).toBe('application/problem+json');
      expect(await response.json()).toMatchObject({ code: 'WRITE_FAILED', status: 507 });
      expect(await (await fetch(`${origin}/jobs`)).json()).toEqual({ jobs: [], nextCursor: null });
      // No phantom job, no half-written manifest or temp file, and the slot is free again.
      expect(await listDir(dir)).toEqual([]);
      expect(await (await fetch(`${origin}/status`)).json()).toMatchObject({ inFlight: 0, queued: 0 });
    },
  );
});

describe('streams never wait without end', () => {
  it('refuses a queued stream after 30 s by default (429 queue_timeout)', async () => {
    const manager = new ExportManager({ maxConcurrent: 1, maxQueued: 1, metrics: false });
    cleanups.push(() => manager.close({ drainTimeoutMs: 0 }));
    const release = deferred();
    manager.defineDataset('held', {
      async *source() {
        yield { id: 1 };
        await release.promise;
      },
    });
    cleanups.push(() => release.resolve());
    const holder = await manager.open({ dataset: 'held', format: 'csv' });
    holder.body.resume();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const waiting = manager.open({ dataset: 'held', format: 'csv' }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(manager.queued).toBe(1);
    await vi.advanceTimersByTimeAsync(29_999);
    expect(manager.queued).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    const error = await waiting;
    expect(isBackpressureError(error)).toBe(true);
    expect(error).toMatchObject({ reason: 'queue_timeout', statusCode: 429 });
    expect(manager.queued).toBe(0);
  });
});
