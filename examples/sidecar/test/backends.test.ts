// The sidecar's shared backends (src/backends.ts): what the EXPORT_REDIS_URL and EXPORT_S3_*
// settings select, the start-up errors that name the variable, and what /export/status and new
// requests show while Redis or S3 is down. Against a real redis-server (stopped and started
// again on its port) and s3rver on loopback; the sidecars run in this process.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeS3, startFakeS3 } from '../../../packages/s3/test/support/fake-s3.js';
import { createBackends } from '../src/backends.js';
import { ConfigError } from '../src/config.js';
import { parseEnv } from '../src/env.js';
import { createLogger } from '../src/logging.js';
import { type RedisProcess, startRedisProcess } from './cluster-support.js';
import { LogCapture, removeDir, startTestSidecar, type TestSidecar, tempDir, waitForJob } from './helpers.js';
import { createItemsDatabase, freePort, opsConfig, pollUntil, postJob, requireProgram } from './programs.js';

const redisServer = await requireProgram('redis-server', 'redis-server', ['/usr/bin', '/usr/local/bin']);

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('EXPORT_REDIS_URL and EXPORT_S3_* in the environment', () => {
  it('reads them', () => {
    const settings = parseEnv(
      {
        EXPORT_REDIS_URL: 'rediss://:pw@redis.internal:6380/2',
        EXPORT_S3_BUCKET: 'acme-exports',
        EXPORT_S3_ENDPOINT: 'https://s3.example.internal',
        EXPORT_S3_REGION: 'eu-west-1',
        EXPORT_S3_FORCE_PATH_STYLE: 'false',
        EXPORT_S3_PREFIX: 'spark/exports/',
      },
      '/srv',
    );
    expect(settings).toMatchObject({
      redisUrl: 'rediss://:pw@redis.internal:6380/2',
      s3Bucket: 'acme-exports',
      s3Endpoint: 'https://s3.example.internal',
      s3Region: 'eu-west-1',
      s3ForcePathStyle: false,
      s3Prefix: 'spark/exports/',
    });
  });

  it('names every bad one, and never shows a Redis password', () => {
    const problems = problemsOf(() =>
      parseEnv({
        EXPORT_REDIS_URL: 'http://:hunter2@redis:6379',
        EXPORT_S3_BUCKET: 'Exports_Bucket',
        EXPORT_S3_ENDPOINT: 'ftp://s3.example',
        EXPORT_S3_REGION: 'EU West',
        EXPORT_S3_FORCE_PATH_STYLE: 'sometimes',
        EXPORT_S3_PREFIX: '/exports',
      }),
    );
    expect(problems).toEqual([
      'Expected EXPORT_REDIS_URL to be a redis:// or rediss:// URL such as redis://127.0.0.1:6379, got "http://:***@redis:6379" (string)',
      'Expected EXPORT_S3_BUCKET to be a bucket name (3-63 lowercase letters, digits, "." or "-"), got "Exports_Bucket" (string)',
      'Expected EXPORT_S3_ENDPOINT to be an http:// or https:// URL, got "ftp://s3.example" (string)',
      'Expected EXPORT_S3_REGION to be a region name such as eu-west-1, got "EU West" (string)',
      'Expected EXPORT_S3_FORCE_PATH_STYLE to be true or false, got "sometimes" (string)',
      'Expected EXPORT_S3_PREFIX to be a key prefix ending in "/" without a leading "/", such as exports/, got "/exports" (string)',
    ]);
    expect(problems.join('\n')).not.toContain('hunter2');
  });

  const backendProblems = async (env: Record<string, string>, processEnv: Record<string, string> = {}) => {
    const logger = createLogger('silent', new LogCapture());
    try {
      await createBackends(parseEnv(env, '/srv'), { datasets: {} }, { logger, env: processEnv });
    } catch (error) {
      if (error instanceof ConfigError) return error.problems;
      throw error;
    }
    throw new Error('expected a ConfigError');
  };

  it('refuses S3 settings without a bucket, half a credential pair, and an endpoint without credentials', async () => {
    expect(
      await backendProblems({ EXPORT_S3_ENDPOINT: 'http://127.0.0.1:9000', EXPORT_S3_PREFIX: 'x/' }),
    ).toEqual([
      'Expected EXPORT_S3_BUCKET (or s3.bucket in the config file) to be set too: EXPORT_S3_ENDPOINT, EXPORT_S3_PREFIX do nothing without a bucket',
    ]);
    expect(await backendProblems({ EXPORT_S3_BUCKET: 'exports' }, { AWS_ACCESS_KEY_ID: 'AKIA0000' })).toEqual(
      [
        'Expected AWS_SECRET_ACCESS_KEY to be set too: the S3 credentials are a pair (the values are not shown)',
      ],
    );
    expect(
      await backendProblems({ EXPORT_S3_BUCKET: 'exports', EXPORT_S3_ENDPOINT: 'http://127.0.0.1:9000' }),
    ).toEqual([
      'Expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to be set: EXPORT_S3_ENDPOINT names an S3-compatible store, which needs them',
    ]);
  });
});

describe.skipIf(redisServer.skip)('the sidecar on Redis and S3', () => {
  let dir: string;
  let redis: RedisProcess;
  let s3: FakeS3;
  let sidecar: TestSidecar;
  const config = () => opsConfig(join(dir, 'items.sqlite'));
  const s3Env = () => ({
    EXPORT_S3_BUCKET: s3.bucket,
    EXPORT_S3_ENDPOINT: s3.endpoint,
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    LOG_LEVEL: 'info',
  });

  beforeAll(async () => {
    dir = tempDir('spark-backends-');
    createItemsDatabase(join(dir, 'items.sqlite'), 500);
    redis = await startRedisProcess(redisServer.path!);
    s3 = await startFakeS3();
    sidecar = await startTestSidecar(config(), {
      baseDir: dir,
      env: { ...s3Env(), EXPORT_REDIS_URL: redis.url },
      backendHealthIntervalMs: 50,
    });
  });
  afterAll(async () => {
    await sidecar?.close();
    await s3?.stop();
    await redis?.destroy();
    if (dir) removeDir(dir);
  });

  it('stops the start with an error naming EXPORT_REDIS_URL when Redis cannot be reached (password hidden)', async () => {
    const port = await freePort();
    await expect(
      startTestSidecar(config(), {
        baseDir: dir,
        env: { EXPORT_REDIS_URL: `redis://:hunter2@127.0.0.1:${port}`, LOG_LEVEL: 'silent' },
      }),
    ).rejects.toThrow(
      new RegExp(
        `^Cannot reach Redis at EXPORT_REDIS_URL \\(redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}\\): .*ECONNREFUSED`,
      ),
    );
  });

  it('stops the start with an error naming EXPORT_S3_BUCKET when the bucket does not exist', async () => {
    await expect(
      startTestSidecar(config(), {
        baseDir: dir,
        env: { ...s3Env(), EXPORT_S3_BUCKET: 'no-such-bucket', LOG_LEVEL: 'silent' },
      }),
    ).rejects.toThrow(
      `Cannot reach the bucket "no-such-bucket" of EXPORT_S3_BUCKET at ${s3.endpoint}: the bucket does not exist (404)`,
    );
  });

  it('runs a job into the bucket, with its sha256 in the object metadata, and reports both backends up', async () => {
    const status = await (await fetch(sidecar.url('/export/status'))).json();
    expect(status).toMatchObject({
      status: 'ok',
      backends: {
        redis: { status: 'up', target: redis.url },
        s3: { status: 'up', target: `s3://${s3.bucket}/exports/` },
      },
    });
    expect(sidecar.backends.mode).toEqual({ limit: 'cluster', jobs: 'redis', files: 's3' });
    const created = await postJob(sidecar.origin, { dataset: 'items', format: 'csv' });
    expect(created.status).toBe(202);
    const job = (await waitForJob(sidecar.url(created.location!))) as unknown as {
      id: string;
      status: string;
      file: { sha256: string; bytes: number };
    };
    expect(job.status).toBe('succeeded');
    const head = await s3.client.send(
      new HeadObjectCommand({ Bucket: s3.bucket, Key: `exports/${job.id}.csv` }),
    );
    expect(head.Metadata?.sha256).toBe(job.file.sha256);
    const download = await fetch(sidecar.url(`/export/jobs/${job.id}/download`));
    const body = Buffer.from(await download.arrayBuffer());
    expect(createHash('sha256').update(body).digest('hex')).toBe(job.file.sha256);
  });

  it('while Redis is down: a log line, /export/status 503, new jobs and streams 503; back to normal when it returns', async () => {
    await redis.stop();
    await pollUntil('the down line', async () =>
      sidecar.logs.events('backend:down').length > 0 ? true : undefined,
    );
    expect(sidecar.logs.events('backend:down')[0]).toMatchObject({
      level: 'error',
      backend: 'redis',
      target: redis.url,
    });

    const status = await fetch(sidecar.url('/export/status'));
    expect(status.status).toBe(503);
    expect(await status.json()).toMatchObject({
      status: 'unavailable',
      backends: { redis: { status: 'down' } },
    });
    expect((await fetch(sidecar.url('/export/status'), { method: 'HEAD' })).status).toBe(503);

    const job = await postJob(sidecar.origin, { dataset: 'items', format: 'csv' });
    expect(job).toMatchObject({
      status: 503,
      retryAfter: '5',
      body: { code: 'BACKEND_UNAVAILABLE', detail: 'Redis cannot be reached; retry later' },
    });
    const stream = await fetch(sidecar.url('/export/stream/items?format=csv'));
    expect(stream.status).toBe(503);
    expect(stream.headers.get('content-type')).toBe('application/problem+json');
    // Reads that need neither go on.
    expect((await fetch(sidecar.url('/export/datasets'))).status).toBe(200);

    await redis.start();
    await pollUntil('status 200 again', async () =>
      (await fetch(sidecar.url('/export/status'))).status === 200 ? true : undefined,
    );
    expect(sidecar.logs.events('backend:up')).toMatchObject([{ backend: 'redis' }]);
    const again = await postJob(sidecar.origin, { dataset: 'items', format: 'csv' });
    expect(again.status).toBe(202);
    expect((await waitForJob(sidecar.url(again.location!))).status).toBe('succeeded');
  });

  it('while S3 does not answer its probe: 503 and a log line; streams still run', async () => {
    // Every probe fails until the test lets them through again.
    let failing = true;
    const probeFails = (request: { operation: string }) => failing && request.operation === 'HeadBucket';
    for (let i = 0; i < 1_000; i++) s3.failNext(probeFails);
    await pollUntil('the S3 down line', async () =>
      sidecar.logs.events('backend:down').some((line) => line.backend === 's3') ? true : undefined,
    );
    const status = await fetch(sidecar.url('/export/status'));
    expect(status.status).toBe(503);
    expect(await status.json()).toMatchObject({
      backends: { redis: { status: 'up' }, s3: { status: 'down', error: expect.stringContaining('403') } },
    });
    expect((await postJob(sidecar.origin, { dataset: 'items', format: 'csv' })).body).toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      detail: 'S3 cannot be reached; retry later',
    });
    expect((await fetch(sidecar.url('/export/stream/items?format=csv'))).status).toBe(200);
    failing = false;
    await pollUntil('status 200 again', async () =>
      (await fetch(sidecar.url('/export/status'))).status === 200 ? true : undefined,
    );
    const metrics = await (await fetch(sidecar.url('/export/metrics'))).text();
    expect(metrics).toContain('export_backend_up{backend="s3"} 1');
  });
});
