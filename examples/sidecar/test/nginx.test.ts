// nginx (the real one, Debian package `nginx`) in front of in-process sidecars, configured with
// the shipped nginx/upstream.conf and nginx/export.conf as they are: only the upstream address and
// the alias directory are substituted. Proves what export.conf promises: downloads unchanged,
// ranges, streamed exports and job events passed on unbuffered, 429 + Retry-After passed through, and the
// X-Accel-Redirect mode serving files from disk.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  removeDir,
  SIDECAR_DIR,
  startTestSidecar,
  type TestSidecar,
  tempDir,
  waitForJob,
} from './helpers.js';
import {
  createItemsDatabase,
  freePort,
  type HeldUpstream,
  opsConfig,
  pollUntil,
  postJob,
  requireProgram,
  startHeldUpstream,
  waitForIdle,
} from './programs.js';

const nginx = await requireProgram('nginx', 'nginx', ['/usr/sbin', '/usr/local/sbin']);
const UPSTREAM_CONF = readFileSync(join(SIDECAR_DIR, 'nginx', 'upstream.conf'), 'utf8');
const EXPORT_CONF = readFileSync(join(SIDECAR_DIR, 'nginx', 'export.conf'), 'utf8');

/** Replaces exactly one occurrence: the shipped file must still have the line this relies on. */
function substituteOnce(text: string, search: string, replacement: string): string {
  const count = text.split(search).length - 1;
  if (count !== 1) throw new Error(`Expected exactly one "${search}" in the nginx file, found ${count}`);
  return text.replace(search, replacement);
}

interface RunningNginx {
  origin: string;
  prefix: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** nginx in the foreground (one process, no daemon), everything it writes inside a temp prefix. */
async function startNginx(sidecarPort: number, exportsDir: string): Promise<RunningNginx> {
  const prefix = tempDir('spark-nginx-');
  for (const sub of ['conf', 'logs', 'tmp']) mkdirSync(join(prefix, sub));
  writeFileSync(
    join(prefix, 'conf', 'upstream.conf'),
    substituteOnce(UPSTREAM_CONF, 'server 127.0.0.1:4001;', `server 127.0.0.1:${sidecarPort};`),
  );
  writeFileSync(
    join(prefix, 'conf', 'export.conf'),
    substituteOnce(EXPORT_CONF, 'alias /app/exports/;', `alias ${exportsDir}/;`),
  );
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    writeFileSync(
      join(prefix, 'conf', 'nginx.conf'),
      [
        'daemon off;',
        'master_process off;',
        'worker_processes 1;',
        `pid ${prefix}/logs/nginx.pid;`,
        `error_log ${prefix}/logs/error.log warn;`,
        'events { worker_connections 128; }',
        'http {',
        '    default_type application/octet-stream;',
        `    access_log ${prefix}/logs/access.log;`,
        `    client_body_temp_path ${prefix}/tmp/body;`,
        `    proxy_temp_path ${prefix}/tmp/proxy;`,
        `    fastcgi_temp_path ${prefix}/tmp/fastcgi;`,
        `    uwsgi_temp_path ${prefix}/tmp/uwsgi;`,
        `    scgi_temp_path ${prefix}/tmp/scgi;`,
        '    sendfile on;',
        // As many production configs have it: the event route must not be held back by gzip.
        '    gzip on;',
        '    gzip_min_length 1;',
        '    gzip_types text/event-stream;',
        `    include ${prefix}/conf/upstream.conf;`,
        '    server {',
        `        listen 127.0.0.1:${port};`,
        '        server_name localhost;',
        `        include ${prefix}/conf/export.conf;`,
        '    }',
        '}',
        '',
      ].join('\n'),
    );
    const child = spawn(
      nginx.path!,
      ['-p', `${prefix}/`, '-c', `${prefix}/conf/nginx.conf`, '-e', `${prefix}/logs/error.log`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const origin = `http://127.0.0.1:${port}`;
    const up = await pollUntil(
      'nginx to answer',
      async () => {
        if (child.exitCode !== null) return false;
        const response = await fetch(`${origin}/export/status`);
        return response.status === 200 ? true : undefined;
      },
      { attempts: 100, intervalMs: 50 },
    ).catch(() => false);
    if (up) {
      return {
        origin,
        prefix,
        process: child,
        async stop() {
          if (child.exitCode === null) child.kill('SIGTERM');
          await exited;
          removeDir(prefix);
        },
      };
    }
    lastError = stderr;
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  }
  removeDir(prefix);
  throw new Error(`nginx did not start: ${lastError}`);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface SucceededJob {
  id: string;
  status: string;
  file: { name: string; bytes: number; sha256: string; contentType: string };
}

describe.skipIf(nginx.skip)('nginx in front of the sidecar (nginx/upstream.conf + nginx/export.conf)', () => {
  let dir: string;
  let upstream: HeldUpstream;
  let sidecar: TestSidecar;
  let proxy: RunningNginx;
  let accelSidecar: TestSidecar;
  let accelProxy: RunningNginx;
  const portOf = (origin: string) => Number(new URL(origin).port);

  /** Creates a job through `origin` and waits until it succeeded. */
  const finishedJob = async (origin: string, body: Record<string, unknown>): Promise<SucceededJob> => {
    const created = await postJob(origin, body);
    expect(created.status).toBe(202);
    const job = (await waitForJob(`${origin}${created.location}`)) as unknown as SucceededJob;
    expect(job.status).toBe('succeeded');
    return job;
  };

  beforeAll(async () => {
    dir = tempDir('spark-nginx-test-');
    createItemsDatabase(join(dir, 'items.sqlite'), 5_000);
    upstream = await startHeldUpstream();
    const config = opsConfig(join(dir, 'items.sqlite'), upstream.url);
    mkdirSync(join(dir, 'plain'));
    mkdirSync(join(dir, 'accel'));
    sidecar = await startTestSidecar(config, {
      baseDir: join(dir, 'plain'),
      env: { EXPORT_MAX_CONCURRENT: '1', LOG_LEVEL: 'silent' },
    });
    accelSidecar = await startTestSidecar(config, {
      baseDir: join(dir, 'accel'),
      env: { EXPORT_ACCEL_REDIRECT_PREFIX: '/export-files/', LOG_LEVEL: 'silent' },
    });
    proxy = await startNginx(portOf(sidecar.origin), sidecar.settings.exportDir);
    accelProxy = await startNginx(portOf(accelSidecar.origin), accelSidecar.settings.exportDir);
  });
  afterAll(async () => {
    upstream?.release();
    await proxy?.stop();
    await accelProxy?.stop();
    await sidecar?.close();
    await accelSidecar?.close();
    await upstream?.close();
    removeDir(dir);
  });

  it('answers /export/status through nginx, with the X-Request-Id map in place', async () => {
    const response = await fetch(`${proxy.origin}/export/status`, { headers: { 'x-request-id': 'req-42' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('server')).toMatch(/^nginx/);
    expect(await response.json()).toMatchObject({ status: 'ok', inFlight: 0, limit: 1 });
  });

  it('downloads a finished job through nginx byte for byte (sha256 of the manifest)', async () => {
    const job = await finishedJob(proxy.origin, { dataset: 'items', format: 'csv' });
    const response = await fetch(`${proxy.origin}/export/jobs/${job.id}/download`);
    expect(response.status).toBe(200);
    const body = Buffer.from(await response.arrayBuffer());
    expect(body.length).toBe(job.file.bytes);
    expect(Number(response.headers.get('content-length'))).toBe(job.file.bytes);
    expect(sha256(body)).toBe(job.file.sha256);
    expect(response.headers.get('etag')).toBe(`"${job.file.sha256}"`);
    expect(response.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(response.headers.get('accept-ranges')).toBe('bytes');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(body.toString('utf8').trimEnd().split('\n')).toHaveLength(5_001);
  });

  it('passes a Range request through: 206 with the exact slice', async () => {
    const job = await finishedJob(proxy.origin, { dataset: 'items', format: 'ndjson' });
    const whole = readFileSync(join(sidecar.settings.exportDir, job.file.name));
    const response = await fetch(`${proxy.origin}/export/jobs/${job.id}/download`, {
      headers: { range: 'bytes=100-1099' },
    });
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes 100-1099/${job.file.bytes}`);
    expect(Buffer.from(await response.arrayBuffer()).equals(whole.subarray(100, 1100))).toBe(true);
  });

  it('passes a streamed export on as it is written: first rows arrive while the source still waits', async () => {
    // A source that yields three small rows (far less than one proxy buffer), then waits for
    // the test, then yields 5,000 more. With proxy_buffering on, nginx would hold the first
    // rows back and the loop below would never end.
    const gate = deferred();
    let finished = false;
    sidecar.manager.defineDataset('gated', {
      async *source() {
        for (let n = 1; n <= 3; n++) yield { n, text: 'first' };
        await gate.promise;
        for (let n = 4; n <= 5_003; n++) yield { n, text: 'x'.repeat(180) };
        finished = true;
      },
    });
    const response = await fetch(`${proxy.origin}/export/stream/gated?format=ndjson`);
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let received = '';
    while (!received.includes('\n')) {
      const { value, done } = await reader.read();
      expect(done).toBe(false);
      received += Buffer.from(value!).toString('utf8');
    }
    expect(finished).toBe(false);
    expect(JSON.parse(received.slice(0, received.indexOf('\n')))).toEqual({ n: 1, text: 'first' });
    gate.resolve();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      received += Buffer.from(value).toString('utf8');
    }
    expect(finished).toBe(true);
    const lines = received.trim().split('\n');
    expect(lines).toHaveLength(5_003);
    expect(JSON.parse(lines[5_002]!)).toMatchObject({ n: 5_003 });
  });

  it('passes job events (Server-Sent Events) on one by one: the first arrives while the job still runs', async () => {
    // Events are a few hundred bytes: a buffering proxy (here: proxy_buffering with the http
    // block's gzip on) holds them back until the job ends, and the first event would only come
    // after the gate opened. Checked: with neither the route's `X-Accel-Buffering: no` nor
    // export.conf's events location, this test times out; either one alone makes it pass.
    await waitForIdle(sidecar.origin);
    const gate = deferred();
    let finished = false;
    sidecar.manager.defineDataset('gated-events', {
      async *source() {
        yield { n: 1 };
        await gate.promise;
        yield { n: 2 };
        finished = true;
      },
    });
    const started = new Promise((resolve) => sidecar.manager.once('job:started', resolve));
    const created = await postJob(proxy.origin, { dataset: 'gated-events', format: 'ndjson' });
    expect(created.status).toBe(202);
    await started;
    const source = new EventSource(`${proxy.origin}${created.location}/events`);
    const seen: { event: string; id: string; finished: boolean }[] = [];
    const succeeded = deferred();
    const running = deferred();
    for (const name of ['running', 'progress', 'succeeded']) {
      source.addEventListener(name, (event) => {
        seen.push({ event: name, id: event.lastEventId, finished });
        if (name === 'running') running.resolve();
        if (name === 'succeeded') {
          source.close();
          succeeded.resolve();
        }
      });
    }
    await running.promise;
    expect(seen[0]).toMatchObject({ event: 'running', finished: false });
    gate.resolve();
    await succeeded.promise;
    const last = seen.at(-1);
    expect(last).toMatchObject({ event: 'succeeded', id: 'succeeded:2', finished: true });
    // Last-Event-ID passes through nginx: the client that saw the end is told to stop.
    const again = await fetch(`${proxy.origin}${created.location}/events`, {
      headers: { 'last-event-id': last?.id ?? '' },
    });
    expect(again.status).toBe(204);
  });

  it('passes a 429 through with its Retry-After while every slot is busy', async () => {
    await waitForIdle(sidecar.origin);
    const requestsBefore = upstream.requests;
    const held = await postJob(proxy.origin, { dataset: 'held', format: 'ndjson' });
    expect(held.status).toBe(202);
    await upstream.waitForRequests(requestsBefore + 1);
    const rejected = await postJob(proxy.origin, { dataset: 'items', format: 'csv' });
    expect(rejected.status).toBe(429);
    expect(Number(rejected.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(rejected.body).toMatchObject({ status: 429, code: 'BACKPRESSURE' });
    const stream = await fetch(`${proxy.origin}/export/stream/items?format=csv`);
    expect(stream.status).toBe(429);
    expect(Number(stream.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    await stream.body?.cancel();
    upstream.release();
    expect((await waitForJob(`${proxy.origin}${held.location}`)).status).toBe('succeeded');
  });

  it('keeps /export/metrics to localhost only and the metrics body intact', async () => {
    const response = await fetch(`${proxy.origin}/export/metrics`);
    expect(response.status).toBe(200);
    expect(await response.text()).toMatch(/^export_concurrency_limit 1$/m);
  });

  describe('X-Accel-Redirect mode (EXPORT_ACCEL_REDIRECT_PREFIX=/export-files/)', () => {
    it('lets nginx send the file from disk with the sidecar headers and the right bytes', async () => {
      const job = await finishedJob(accelProxy.origin, {
        dataset: 'items',
        format: 'csv',
        filename: 'Items ü.csv',
      });
      // The sidecar itself answers with headers only and the internal location to serve.
      const direct = await fetch(`${accelSidecar.origin}/export/jobs/${job.id}/download`);
      expect(direct.status).toBe(200);
      expect(direct.headers.get('x-accel-redirect')).toBe(`/export-files/${job.file.name}`);
      expect((await direct.arrayBuffer()).byteLength).toBe(0);

      const response = await fetch(`${accelProxy.origin}/export/jobs/${job.id}/download`);
      expect(response.status).toBe(200);
      expect(response.headers.get('x-accel-redirect')).toBeNull();
      expect(response.headers.get('content-type')).toBe('text/csv; charset=utf-8');
      expect(response.headers.get('content-disposition')).toBe(direct.headers.get('content-disposition'));
      expect(response.headers.get('content-disposition')).toContain("filename*=UTF-8''Items%20%C3%BC.csv");
      expect(Number(response.headers.get('content-length'))).toBe(job.file.bytes);
      expect(response.headers.get('accept-ranges')).toBe('bytes');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('cache-control')).toBe('private');
      const body = Buffer.from(await response.arrayBuffer());
      expect(sha256(body)).toBe(job.file.sha256);

      const range = await fetch(`${accelProxy.origin}/export/jobs/${job.id}/download`, {
        headers: { range: 'bytes=0-99' },
      });
      expect(range.status).toBe(206);
      expect(range.headers.get('content-range')).toBe(`bytes 0-99/${job.file.bytes}`);
      expect(Buffer.from(await range.arrayBuffer()).equals(body.subarray(0, 100))).toBe(true);
    });

    it('still checks the job first, and the internal location cannot be asked for directly', async () => {
      const job = await finishedJob(accelProxy.origin, { dataset: 'items', format: 'json' });
      const missing = await fetch(`${accelProxy.origin}/export/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/download`);
      expect(missing.status).toBe(404);
      expect(missing.headers.get('content-type')).toBe('application/problem+json');
      const direct = await fetch(`${accelProxy.origin}/export-files/${job.file.name}`);
      expect(direct.status).toBe(404);
      await direct.body?.cancel();
    });
  });
});
