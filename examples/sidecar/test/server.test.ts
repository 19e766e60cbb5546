import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { demoConfig } from '../src/demo.js';
import { removeDir, startTestSidecar, type TestSidecar, tempDir, waitForJob } from './helpers.js';

const TOKEN = 'test-token-0123456789abcdef';

/** The demo config with a small database, plus a dataset whose upstream the test holds open. */
function smallDemo(upstream?: string): SidecarConfig {
  const config = demoConfig();
  config.demo = { database: './data/demo.sqlite', orders: 20_000, customers: 100 };
  // Prepares fine, fails while it runs: abs() of the smallest integer overflows.
  config.datasets.broken = {
    source: {
      type: 'sqlite',
      database: './data/demo.sqlite',
      query: 'SELECT id, abs(-9223372036854775807 - id) AS boom FROM orders ORDER BY id',
    },
  };
  if (upstream) {
    config.datasets.held = { source: { type: 'http-json', url: upstream, timeoutMs: 60_000 } };
  }
  return config;
}

describe('sidecar HTTP API (demo config, in process)', () => {
  let dir: string;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    dir = tempDir();
    sidecar = await startTestSidecar(smallDemo(), { baseDir: dir });
  });
  afterAll(async () => {
    await sidecar?.close();
    removeDir(dir);
  });

  it('answers /export/status', async () => {
    const response = await fetch(sidecar.url('/export/status'));
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok', inFlight: 0, limit: 5 });
  });

  it.each(['/export', '/export/'])(
    'answers %s (the banner URL) with an index of links that answer',
    async (path) => {
      const response = await fetch(sidecar.url(path));
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      const index = (await response.json()) as {
        links: Record<string, string>;
        docs: Record<string, string>;
      };
      expect(index.links).toMatchObject({
        status: '/export/status',
        datasets: '/export/datasets',
        jobs: '/export/jobs',
        metrics: '/export/metrics',
      });
      for (const [name, link] of Object.entries(index.links)) {
        if (name === 'stream') continue;
        expect((await fetch(sidecar.url(link))).status, link).toBe(200);
      }
      expect(index.links.stream).toBe('/export/stream/{dataset}');
      expect((await fetch(sidecar.url(index.links.stream!.replace('{dataset}', 'customers')))).status).toBe(
        200,
      );
      expect(Object.keys(index.docs)).toEqual(['httpApi', 'openapi', 'sidecar']);
    },
  );

  it('lists the demo datasets with their params', async () => {
    const body = (await (await fetch(sidecar.url('/export/datasets'))).json()) as {
      datasets: { name: string; params: Record<string, unknown> }[];
    };
    expect(body.datasets.map((dataset) => dataset.name)).toEqual(['orders', 'customers', 'broken']);
    expect(body.datasets[0]!.params.status).toMatchObject({
      type: 'enum',
      values: ['paid', 'pending', 'refunded', 'cancelled'],
    });
  });

  it('creates a job, reports it and serves its file', async () => {
    const created = await fetch(sidecar.url('/export/jobs'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        dataset: 'orders',
        format: 'csv',
        params: { from: '2025-07-01', status: 'refunded' },
      }),
    });
    expect(created.status).toBe(202);
    const location = created.headers.get('location')!;
    expect(location).toMatch(/^\/export\/jobs\/exp_/);
    const job = await waitForJob(sidecar.url(location));
    expect(job.status).toBe('succeeded');
    const download = await fetch(sidecar.url(`${location}/download`));
    expect(download.status).toBe(200);
    const lines = (await download.text()).trim().split('\n');
    expect(lines[0]).toBe('Order ID,Customer ID,Status,Total,Currency,Created at');
    expect(lines.length - 1).toBe(job.progress.rows);
    expect(lines.length).toBeGreaterThan(10);
    // The demo datasets count their rows first (countQuery), with the same params.
    expect((job.progress as { totalRows?: number }).totalRows).toBe(job.progress.rows);
    for (const line of lines.slice(1)) {
      const [, , status, , , createdAt] = line.split(',');
      expect(status).toBe('refunded');
      expect(createdAt! >= '2025-07-01').toBe(true);
    }
  });

  it('answers 422 naming the param for a bad param', async () => {
    const response = await fetch(sidecar.url('/export/jobs'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'orders', format: 'csv', params: { from: 'yesterday' } }),
    });
    expect(response.status).toBe(422);
    const problem = (await response.json()) as { code: string; detail: string };
    expect(problem.code).toBe('INVALID_PARAMS');
    expect(problem.detail).toContain('"from"');
    expect(problem.detail).toContain('ISO 8601 date');

    const unknown = await fetch(sidecar.url('/export/stream/orders?format=csv&colour=red'));
    expect(unknown.status).toBe(422);
    expect(((await unknown.json()) as { detail: string }).detail).toContain('Unknown param "colour"');
  });

  it('streams an export straight to the client', async () => {
    const response = await fetch(sidecar.url('/export/stream/customers?format=ndjson&country=JP'));
    expect(response.status).toBe(200);
    const rows = (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { country: string });
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((row) => row.country === 'JP')).toBe(true);
  });

  it("answers a malformed URL under /export with the library's problem, not Fastify's FST_ERR_BAD_URL", async () => {
    const response = await fetch(sidecar.url('/export/jobs/%E0%A4%A'));
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ status: 404, code: 'NOT_FOUND' });
  });

  it('logs a failing source at warn, not at error level', async () => {
    const response = await fetch(sidecar.url('/export/stream/broken?format=csv'));
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({ code: 'SOURCE_FAILED' });
    const lines = sidecar.logs.lines.filter((line) => line.path === '/export/stream/broken');
    expect(lines).toEqual([
      expect.objectContaining({ level: 'warn', event: 'http:failed', status: 502, cause: expect.anything() }),
    ]);
    expect(sidecar.logs.lines.filter((line) => line.level === 'error')).toEqual([]);
  });

  it('serves export metrics and process metrics on its own registry', async () => {
    const text = await (await fetch(sidecar.url('/export/metrics'))).text();
    expect(text).toContain('export_jobs_started_total');
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
  });

  it('logs one JSON line per job transition with the job fields', () => {
    const succeeded = sidecar.logs.events('job:succeeded');
    expect(succeeded.length).toBeGreaterThan(0);
    expect(succeeded[0]).toMatchObject({
      level: 'info',
      dataset: 'orders',
      format: 'csv',
      outcome: 'succeeded',
      owner: null,
      jobId: expect.stringMatching(/^exp_/),
      rows: expect.any(Number),
      bytes: expect.any(Number),
      durationMs: expect.any(Number),
    });
    const id = succeeded[0]!.jobId;
    expect(sidecar.logs.lines.filter((line) => line.jobId === id).map((line) => line.event)).toEqual([
      'job:started',
      'job:succeeded',
    ]);
    expect(sidecar.logs.events('http:rejected').some((line) => line.status === 422)).toBe(true);
  });
});

describe('bearer token and owner header', () => {
  let dir: string;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    dir = tempDir();
    sidecar = await startTestSidecar(smallDemo(), {
      baseDir: dir,
      env: { EXPORT_API_TOKEN: TOKEN, EXPORT_OWNER_HEADER: 'X-User-Id', EXPORT_PROCESS_METRICS: 'false' },
    });
  });
  afterAll(async () => {
    await sidecar?.close();
    removeDir(dir);
  });

  it('keeps /export/status and the index of links open', async () => {
    expect((await fetch(sidecar.url('/export/status'))).status).toBe(200);
    expect((await fetch(sidecar.url('/export'))).status).toBe(200);
  });

  it.each(['/export/datasets', '/export/jobs', '/export/metrics', '/export/stream/orders'])(
    'answers 401 on %s without a valid token',
    async (path) => {
      for (const authorization of [
        undefined,
        'Bearer wrong-token-0123456789',
        `Basic ${TOKEN}`,
        `Bearer ${TOKEN}x`,
      ]) {
        const response = await fetch(sidecar.url(path), {
          headers: { 'x-user-id': 'alice', ...(authorization ? { authorization } : {}) },
        });
        expect(response.status).toBe(401);
        expect(response.headers.get('www-authenticate')).toBe('Bearer realm="spark-export"');
        expect(((await response.json()) as { code: string }).code).toBe('UNAUTHORIZED');
      }
    },
  );

  it('needs the owner header once the token is right', async () => {
    const response = await fetch(sidecar.url('/export/jobs'), {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { detail: string }).detail).toContain('x-user-id');
  });

  it("keeps one owner's jobs from another and logs the owner", async () => {
    const as = (user: string) => ({ authorization: `Bearer ${TOKEN}`, 'x-user-id': user });
    const created = await fetch(sidecar.url('/export/jobs'), {
      method: 'POST',
      headers: { ...as('alice'), 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'customers', format: 'json' }),
    });
    expect(created.status).toBe(202);
    const location = created.headers.get('location')!;
    expect((await waitForJob(sidecar.url(location), as('alice'))).status).toBe('succeeded');
    expect((await fetch(sidecar.url(location), { headers: as('bob') })).status).toBe(404);
    expect((await fetch(sidecar.url(`${location}/download`), { headers: as('bob') })).status).toBe(404);
    expect((await fetch(sidecar.url(`${location}/download`), { headers: as('alice') })).status).toBe(200);
    const id = location.split('/').pop();
    const lines = sidecar.logs.lines.filter((line) => line.jobId === id);
    expect(lines.map((line) => line.owner)).toEqual(['alice', 'alice']);
  });

  it('leaves process metrics out when EXPORT_PROCESS_METRICS=false', async () => {
    const text = await (
      await fetch(sidecar.url('/export/metrics'), {
        headers: { authorization: `Bearer ${TOKEN}`, 'x-user-id': 'a' },
      })
    ).text();
    expect(text).toContain('export_jobs_started_total');
    expect(text).not.toContain('process_cpu_user_seconds_total');
  });
});

describe('backpressure and draining', () => {
  let dir: string;
  let upstream: Server;
  let sidecar: TestSidecar | undefined;
  let release = deferred();
  let requested = deferred();

  beforeAll(async () => {
    dir = tempDir();
    // Sends the start of an array, then holds the response open until the test releases it.
    upstream = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('[{"n":1},{"n":2},');
      requested.resolve();
      void release.promise.then(() => response.end('{"n":3}]'));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  });
  afterEach(async () => {
    release.resolve();
    await sidecar?.close();
    sidecar = undefined;
    release = deferred();
    requested = deferred();
  });
  afterAll(async () => {
    upstream.closeAllConnections();
    await new Promise((resolve) => upstream.close(resolve));
    removeDir(dir);
  });

  const upstreamUrl = () => `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/items`;
  const post = (s: TestSidecar, dataset: string) =>
    fetch(s.url('/export/jobs'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset, format: 'ndjson' }),
    });

  it('answers 429 with Retry-After beyond EXPORT_MAX_CONCURRENT and logs the rejection', async () => {
    sidecar = await startTestSidecar(smallDemo(upstreamUrl()), {
      baseDir: join(dir, 'a'),
      env: { EXPORT_MAX_CONCURRENT: '1' },
    });
    expect((await post(sidecar, 'held')).status).toBe(202);
    await requested.promise;
    const rejected = await post(sidecar, 'customers');
    expect(rejected.status).toBe(429);
    expect(Number(rejected.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(sidecar.logs.events('rejected')).toEqual([
      expect.objectContaining({
        reason: 'concurrency_limit',
        dataset: 'customers',
        status: 429,
        limit: 1,
        inFlight: 1,
      }),
    ]);
  });

  it('drains on close: status 503 draining, new jobs 503, the running job finishes', async () => {
    sidecar = await startTestSidecar(smallDemo(upstreamUrl()), {
      baseDir: join(dir, 'b'),
      env: { EXPORT_DRAIN_TIMEOUT_MS: '60000' },
    });
    const s = sidecar;
    const created = await post(s, 'held');
    const location = created.headers.get('location')!;
    await requested.promise;
    const closed = s.close();
    const status = await fetch(s.url('/export/status'));
    expect(status.status).toBe(503);
    expect(await status.json()).toMatchObject({ status: 'draining', inFlight: 1 });
    const refused = await post(s, 'customers');
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { code: string }).code).toBe('SHUTTING_DOWN');
    release.resolve();
    await closed;
    const job = await s.manager.get(location.split('/').pop()!);
    expect(job).toMatchObject({ status: 'succeeded', progress: { rows: 3 } });
    expect(s.logs.events('stopped')).toHaveLength(1);
    // An expected 503 must not page anyone: one warn line from the rejection, no error, no stack.
    expect(s.logs.lines.filter((line) => line.level === 'error' || line.level === 'fatal')).toEqual([]);
    expect(s.logs.lines.filter((line) => JSON.stringify(line).includes('"stack"'))).toEqual([]);
    expect(s.logs.events('rejected')).toEqual([
      expect.objectContaining({ level: 'warn', reason: 'shutting_down', status: 503 }),
    ]);
  });
});
