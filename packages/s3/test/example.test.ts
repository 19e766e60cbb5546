import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExportHandler, toNodeHandler } from '@spark-export/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createManager } from '../examples/basic.js';
import { useFakeS3 } from './support/helpers.js';

const { s3 } = useFakeS3();
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('README example', () => {
  it('quotes examples/basic.ts verbatim', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const file = await readFile(new URL('../examples/basic.ts', import.meta.url), 'utf8');
    expect(/<!-- example: examples\/basic\.ts[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme)?.[1]).toBe(file);
  });

  it('stores a job in the bucket and answers its download with a presigned URL', async () => {
    process.env.S3_ACCESS_KEY_ID = 'S3RVER';
    process.env.S3_SECRET_ACCESS_KEY = 'S3RVER';
    const directory = await mkdtemp(join(tmpdir(), 'spark-s3-example-'));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const manager = createManager(directory, s3().endpoint);
    cleanups.push(() => manager.close({ drainTimeoutMs: 0 }));
    const server = createServer(toNodeHandler(createExportHandler(manager)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));

    const job = await manager.wait((await manager.start({ dataset: 'orders', format: 'csv' })).id);
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const download = await fetch(`${origin}/export/jobs/${job.id}/download`);

    expect(download.url.startsWith(`${s3().endpoint}/exports/jobs/${job.id}.csv?`)).toBe(true);
    expect((await download.text()).trim().split(/\r?\n/)).toEqual(['id,total', '1,10', '2,20', '3,30']);
  });
});
