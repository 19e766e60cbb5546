import { readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { removeDir, startTestSidecar, type TestSidecar, tempDir, waitForJob } from './helpers.js';

const ITEMS = 20_000;
const item = (i: number) => JSON.stringify({ id: i, name: `item ${i}`, price: i / 100 });

describe('http-json source (real local upstream)', () => {
  let upstream: Server;
  let base: string;
  let dir: string;
  let sidecar: TestSidecar;
  const seen: { url: string; method: string; authorization: string | undefined; body: string }[] = [];
  let halfway = deferred();
  let resume = deferred();
  const hanging = new Set<ServerResponse>();

  /** Writes chunks one event-loop turn apart, so the body really arrives over time. */
  async function writeSlowly(response: ServerResponse, parts: string[]) {
    for (const part of parts) {
      if (response.destroyed) return;
      if (!response.write(part)) await new Promise((resolve) => response.once('drain', resolve));
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async function handle(request: IncomingMessage, response: ServerResponse) {
    let body = '';
    for await (const chunk of request) body += chunk;
    const url = new URL(request.url!, 'http://x');
    seen.push({
      url: request.url!,
      method: request.method!,
      authorization: request.headers.authorization,
      body,
    });
    switch (url.pathname) {
      case '/slow-array': {
        response.writeHead(200, { 'content-type': 'application/json' });
        // 200 chunks of 100 items, one per event-loop turn.
        const parts = Array.from({ length: ITEMS / 100 }, (_, chunk) =>
          Array.from(
            { length: 100 },
            (_, i) => `${chunk + i === 0 ? '[' : ','}${item(chunk * 100 + i + 1)}`,
          ).join(''),
        );
        await writeSlowly(response, parts.slice(0, parts.length / 2));
        halfway.resolve();
        await resume.promise;
        await writeSlowly(response, parts.slice(parts.length / 2));
        response.end(']');
        return;
      }
      case '/wrapped':
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({
            data: { total: 3, items: [{ id: 1 }, { id: 2 }, { id: 3 }] },
            meta: { items: [9] },
          }),
        );
        return;
      case '/lines':
        response.writeHead(200, { 'content-type': 'application/x-ndjson' });
        await writeSlowly(response, ['{"id":1}\n', '\n', '{"id":2}\n{"id"', ':3}\n']);
        response.end();
        return;
      case '/fail':
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end('upstream exploded');
        return;
      case '/no-answer':
        hanging.add(response);
        return;
      case '/stall':
        response.writeHead(200, { 'content-type': 'application/json' });
        response.write('[{"id":1},');
        hanging.add(response);
        return;
      case '/malformed':
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('[{"id":1},{"id":2},{"id": nope}]');
        return;
      default:
        response.writeHead(404).end();
    }
  }

  const config = (): SidecarConfig => ({
    datasets: {
      slow: {
        params: { from: { type: 'date', required: true }, limit: { type: 'integer' } },
        source: {
          type: 'http-json',
          url: `${base}/slow-array?api=1`,
          // biome-ignore lint/suspicious/noTemplateCurlyInString: ${NAME} is the config's own placeholder syntax
          headers: { Authorization: 'Bearer ${UPSTREAM_TOKEN}' },
          timeoutMs: 10_000,
        },
      },
      wrapped: { source: { type: 'http-json', url: `${base}/wrapped`, path: 'data.items' } },
      lines: { source: { type: 'http-json', url: `${base}/lines`, format: 'ndjson' } },
      posted: {
        params: { region: { type: 'enum', values: ['eu', 'us'] } },
        source: { type: 'http-json', url: `${base}/wrapped`, method: 'POST', path: 'data.items' },
      },
      failing: { source: { type: 'http-json', url: `${base}/fail` } },
      silent: { source: { type: 'http-json', url: `${base}/no-answer`, timeoutMs: 200 } },
      stalling: { source: { type: 'http-json', url: `${base}/stall`, timeoutMs: 200 } },
      malformed: { source: { type: 'http-json', url: `${base}/malformed` } },
      unreachable: { source: { type: 'http-json', url: 'http://127.0.0.1:1/nothing-listens-here' } },
    },
  });

  beforeAll(async () => {
    upstream = createServer((request, response) => void handle(request, response));
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    dir = tempDir();
    sidecar = await startTestSidecar(config(), { baseDir: dir, env: { UPSTREAM_TOKEN: 'upstream-secret' } });
  });
  afterAll(async () => {
    resume.resolve();
    for (const response of hanging) response.destroy();
    await sidecar?.close();
    upstream?.closeAllConnections();
    await new Promise((resolve) => upstream?.close(resolve));
    if (dir) removeDir(dir);
  });

  const startJob = async (dataset: string, params: Record<string, unknown> = {}) => {
    const response = await fetch(sidecar.url('/export/jobs'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset, format: 'ndjson', params }),
    });
    expect(response.status).toBe(202);
    return response.headers.get('location')!;
  };
  const rowsOf = async (location: string) =>
    (await (await fetch(sidecar.url(`${location}/download`))).text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  it('exports rows while a large array is still arriving', async () => {
    halfway = deferred();
    resume = deferred();
    const location = await startJob('slow', { from: '2025-01-01', limit: '50' });
    await halfway.promise;
    // Half the body is in and the upstream holds the rest: rows must already be written.
    for (;;) {
      const job = (await (await fetch(sidecar.url(location))).json()) as {
        status: string;
        progress: { rows: number };
      };
      expect(job.status).toBe('running');
      if (job.progress.rows > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    resume.resolve();
    const job = await waitForJob(sidecar.url(location));
    expect(job).toMatchObject({ status: 'succeeded', progress: { rows: ITEMS } });
    const rows = await rowsOf(location);
    expect(rows[0]).toEqual({ id: 1, name: 'item 1', price: 0.01 });
    expect(rows.at(-1)).toEqual({ id: ITEMS, name: `item ${ITEMS}`, price: ITEMS / 100 });
    const request = seen.find((entry) => entry.url.startsWith('/slow-array'))!;
    expect(request.url).toBe('/slow-array?api=1&from=2025-01-01&limit=50');
    expect(request.authorization).toBe('Bearer upstream-secret');
  });

  it('reads the array at a path such as data.items', async () => {
    const location = await startJob('wrapped');
    expect((await waitForJob(sidecar.url(location))).status).toBe('succeeded');
    expect(await rowsOf(location)).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
  });

  it('reads NDJSON split across chunks', async () => {
    const location = await startJob('lines');
    expect((await waitForJob(sidecar.url(location))).status).toBe('succeeded');
    expect(await rowsOf(location)).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
  });

  it('POSTs the params as a JSON body', async () => {
    const location = await startJob('posted', { region: 'eu' });
    expect((await waitForJob(sidecar.url(location))).status).toBe('succeeded');
    const request = seen.filter((entry) => entry.method === 'POST').at(-1)!;
    expect(JSON.parse(request.body)).toEqual({ region: 'eu' });
  });

  it.each([
    ['failing', 'The upstream of dataset "failing" answered HTTP 500'],
    ['silent', 'The upstream of dataset "silent" did not answer within 200 ms'],
    ['stalling', 'The upstream of dataset "stalling" stopped sending for more than 200 ms'],
    ['malformed', 'The upstream of dataset "malformed" sent malformed JSON'],
    ['unreachable', 'The upstream of dataset "unreachable" could not be reached'],
  ])('fails the %s job with a clear error and no file', async (dataset, message) => {
    const location = await startJob(dataset);
    const job = await waitForJob(sidecar.url(location));
    expect(job.status).toBe('failed');
    expect(job.error).toEqual({ code: 'SOURCE_FAILED', message });
    const download = await fetch(sidecar.url(`${location}/download`));
    expect(download.status).toBe(409);
    const id = location.split('/').pop()!;
    // Only the manifest (and maybe its write in progress); no data file, no partial file.
    const files = readdirSync(join(dir, 'exports')).filter((name) => name.startsWith(id));
    expect(files.filter((name) => !/\.json(\.[0-9a-f]+\.tmp)?$/.test(name))).toEqual([]);
  });
});
