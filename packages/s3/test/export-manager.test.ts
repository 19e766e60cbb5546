import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { CreateMultipartUploadCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import {
  createExportHandler,
  type DatasetDefinition,
  ExportManager,
  type ExportManagerOptions,
  FileJobStore,
  type Job,
  toNodeHandler,
} from '@spark-export/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { S3ExportStorage } from '../src/index.js';
import { jobId, MiB, sha256, useFakeS3 } from './support/helpers.js';

const { s3, makeStorage, keys, uploads, head, requestsOf } = useFakeS3();

const HOUR = 3600_000;
/** About 10 KB of CSV a row: 1,100 rows make three 5 MiB parts. */
const PAD = 'x'.repeat(10_000);

let directory: string;
const managers: ExportManager[] = [];
const servers: Server[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'spark-s3-jobs-'));
});

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await Promise.allSettled(managers.splice(0).map((manager) => manager.close({ drainTimeoutMs: 0 })));
  await rm(directory, { recursive: true, force: true });
});

const orders: DatasetDefinition = {
  columns: [{ name: 'id' }, { name: 'name' }, { name: 'total' }],
  params: { rows: { type: 'integer', default: 10, min: 0 } },
  source: async function* (params) {
    for (let id = 1; id <= (params.rows as number); id++) yield { id, name: `order ${id}`, total: id * 10 };
  },
};

/** Big rows until more than two parts are stored under `prefix`, then `then()`. */
function bigThen(prefix: string, then: (signal: AbortSignal) => Promise<never>): DatasetDefinition {
  return {
    columns: [{ name: 'id' }, { name: 'pad' }],
    source: async function* (_params, { signal }) {
      for (let id = 0; id < 1_100; id++) yield { id, pad: PAD };
      await s3().partsStored(2, `${prefix}.partial/`);
      await then(signal);
    },
  };
}

function createManager(
  storage: S3ExportStorage,
  datasets: Record<string, DatasetDefinition> = {},
  options: ExportManagerOptions = {},
): ExportManager {
  const manager = new ExportManager({
    store: new FileJobStore(directory),
    storage,
    metrics: false,
    ...options,
    datasets: { orders, ...datasets },
  });
  managers.push(manager);
  return manager;
}

async function serve(manager: ExportManager): Promise<string> {
  const server = createServer(toNodeHandler(createExportHandler(manager)));
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function finish(manager: ExportManager, request: Parameters<ExportManager['start']>[0]): Promise<Job> {
  const job = await manager.wait((await manager.start(request)).id);
  expect(job.status).toBe('succeeded');
  return job;
}

async function manifestSha256(id: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(directory, `${id}.json`), 'utf8')) as {
    file: { sha256: string };
  };
  return manifest.file.sha256;
}

/** Nothing under the prefix: no object, no temporary object, no multipart upload (asked and on disk). */
async function expectNothingLeft(storage: S3ExportStorage): Promise<void> {
  expect(await keys(storage)).toEqual([]);
  expect(await uploads(storage)).toEqual([]);
  expect((await s3().openUploads()).filter((upload) => upload.key.startsWith(storage.prefix))).toEqual([]);
}

describe('ExportManager with S3ExportStorage', () => {
  it('serves a finished job as a 302 to a presigned URL that saves under the job’s file name', async () => {
    const storage = makeStorage();
    const manager = createManager(storage);
    const base = await serve(manager);
    const job = await finish(manager, {
      dataset: 'orders',
      format: 'csv',
      params: { rows: 50 },
      filename: 'Bestellungen März',
    });

    const redirect = await fetch(`${base}/export/jobs/${job.id}/download`, { redirect: 'manual' });
    expect(redirect.status).toBe(302);
    const location = redirect.headers.get('location')!;
    expect(
      location.startsWith(`${s3().endpoint}/${storage.bucket}/${storage.prefix}${job.file!.name}?`),
    ).toBe(true);

    const download = await fetch(`${base}/export/jobs/${job.id}/download`);
    expect(download.status).toBe(200);
    expect(download.url).toBe(location);
    expect(download.headers.get('content-disposition')).toBe(
      `attachment; filename="Bestellungen Marz.csv"; filename*=UTF-8''Bestellungen%20M%C3%A4rz.csv`,
    );
    expect(download.headers.get('content-type')).toBe(job.file!.contentType);
    const body = Buffer.from(await download.arrayBuffer());
    expect(body.toString('utf8').split('\n').slice(0, 2)).toEqual(['id,name,total', '1,order 1,10']);
    expect(body.length).toBe(job.file!.bytes);
    expect(sha256(body)).toBe(job.file!.sha256);

    // The object's metadata carries the manifest's sha256; nothing else is left in the bucket.
    expect((await head(storage, job.file!.name)).Metadata).toEqual({ sha256: await manifestSha256(job.id) });
    expect(await keys(storage)).toEqual([job.file!.name]);
  });

  it('with proxy: true streams the bytes through the handler, ranges included', async () => {
    const storage = makeStorage({ proxy: true });
    const manager = createManager(storage);
    const base = await serve(manager);
    const job = await finish(manager, { dataset: 'orders', format: 'ndjson', params: { rows: 200 } });

    const whole = await fetch(`${base}/export/jobs/${job.id}/download`, { redirect: 'manual' });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-disposition')).toMatch(/^attachment; filename="orders-.*\.ndjson"$/);
    const body = Buffer.from(await whole.arrayBuffer());
    expect(sha256(body)).toBe(job.file!.sha256);

    const ranged = await fetch(`${base}/export/jobs/${job.id}/download`, {
      headers: { range: 'bytes=10-29' },
    });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('content-range')).toBe(`bytes 10-29/${body.length}`);
    expect(Buffer.from(await ranged.arrayBuffer())).toEqual(body.subarray(10, 30));
  });

  it('stores gzip as application/gzip without Content-Encoding, so a download saves the .gz as it is', async () => {
    const storage = makeStorage();
    const manager = createManager(storage);
    const base = await serve(manager);
    const job = await finish(manager, {
      dataset: 'orders',
      format: 'csv',
      params: { rows: 20 },
      compression: 'gzip',
    });
    expect(job.file!.name).toMatch(/\.csv\.gz$/);

    const object = await head(storage, job.file!.name);
    expect(object.ContentType).toBe('application/gzip');
    expect(object.ContentEncoding).toBeUndefined();
    const download = await fetch(`${base}/export/jobs/${job.id}/download`);
    expect(download.headers.get('content-type')).toBe('application/gzip');
    expect(download.headers.get('content-encoding')).toBeNull();
    const body = Buffer.from(await download.arrayBuffer());
    expect([...body.subarray(0, 2)]).toEqual([0x1f, 0x8b]);
    expect(sha256(body)).toBe(job.file!.sha256);
    expect(gunzipSync(body).toString('utf8').split('\n')[20]).toBe('20,order 20,200');
  });

  it('leaves no object, temporary object or open upload when the source fails after two parts', async () => {
    const storage = makeStorage({ partSize: 5 * MiB });
    const failing = bigThen(storage.prefix, async () => {
      throw new Error('the database went away');
    });
    const manager = createManager(storage, { failing });
    const from = s3().requests.length;

    const job = await manager.wait((await manager.start({ dataset: 'failing', format: 'csv' })).id);

    expect(job.status).toBe('failed');
    expect(job.error?.code).toBe('SOURCE_FAILED');
    const operations = requestsOf(storage, from).map((request) => request.operation);
    expect(operations.filter((operation) => operation === 'UploadPart').length).toBeGreaterThanOrEqual(2);
    expect(operations).toContain('AbortMultipartUpload');
    await expectNothingLeft(storage);
  });

  it('leaves nothing behind when a job is cancelled after two parts', async () => {
    const storage = makeStorage({ partSize: 5 * MiB });
    let reached!: () => void;
    const waiting = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const gated = bigThen(
      storage.prefix,
      (signal) =>
        new Promise<never>((_resolve, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          reached();
        }),
    );
    const manager = createManager(storage, { gated });
    const job = await manager.start({ dataset: 'gated', format: 'csv' });
    await waiting;
    expect(await uploads(storage)).toHaveLength(1);

    expect((await manager.cancel(job.id)).status).toBe('cancelled');

    await expectNothingLeft(storage);
  });

  it('retention deletes the object of an expired job', async () => {
    const storage = makeStorage();
    let now = Date.parse('2026-01-01T00:00:00Z');
    const manager = createManager(storage, {}, { now: () => now, retention: { maxAgeMs: HOUR } });
    const base = await serve(manager);
    const job = await finish(manager, { dataset: 'orders', format: 'csv' });
    expect(await storage.stat(job.file!.name)).toEqual({ bytes: job.file!.bytes });

    now += HOUR;
    expect(await manager.sweep()).toMatchObject({ expired: 1 });

    expect(await storage.stat(job.file!.name)).toBeUndefined();
    expect(await keys(storage)).toEqual([]);
    expect((await manager.get(job.id)).status).toBe('expired');
    expect((await fetch(`${base}/export/jobs/${job.id}/download`, { redirect: 'manual' })).status).toBe(410);
  });

  it('removes what a crash left in the bucket at the next start, and keeps the files of jobs', async () => {
    const storage = makeStorage();
    const first = createManager(storage);
    const kept = await finish(first, { dataset: 'orders', format: 'csv' });
    await first.close();
    // What a process that died mid-write leaves: a temporary object, an open multipart upload,
    // and a published file whose job never got to say `succeeded`.
    const { client, bucket } = s3();
    const leftovers = [`${jobId()}.csv`, `.partial/${jobId()}.csv.0123456789ab`];
    for (const key of leftovers) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${storage.prefix}${key}`, Body: 'x' }));
    }
    await client.send(
      new CreateMultipartUploadCommand({
        Bucket: bucket,
        Key: `${storage.prefix}.partial/${jobId()}.csv.ba9876543210`,
      }),
    );
    expect(await uploads(storage)).toHaveLength(1);

    const restarted = new S3ExportStorage({ client, bucket, prefix: storage.prefix });
    const second = createManager(restarted);
    await second.ready;

    expect(await keys(storage)).toEqual([kept.file!.name]);
    expect(await uploads(storage)).toEqual([]);
    const download = await fetch(`${await serve(second)}/export/jobs/${kept.id}/download`);
    expect(sha256(Buffer.from(await download.arrayBuffer()))).toBe(kept.file!.sha256);
  });
});
