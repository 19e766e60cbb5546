import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { createGunzip, gunzipSync } from 'node:zlib';
import { unzipSync } from 'fflate';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ExportError } from '../../errors.js';
import { ExportManager, type ExportManagerOptions } from '../../export-manager.js';
import type { ExportRoutesOptions } from '../../http/handler.js';
import { signDownloadPath } from '../../http/signing.js';
import { VERSION } from '../../version.js';
import { deferred } from '../deferred.js';
import {
  causes,
  events,
  nextEvent,
  nextSseEvent,
  postJob,
  rawRequest,
  readJson,
  readProblem,
  type SseMessage,
  sameBytesSignatures,
  sample,
  sseReader,
} from './checks.js';
import { loadSchemaCheck, type OpenApiSource, type SchemaCheck } from './openapi.js';
import type { ContractServer, StartContractServer } from './server.js';

/** Options of {@link describeHttpContract}. */
export interface HttpContractOptions {
  /**
   * The OpenAPI document of the API (in this repository, `docs/openapi.yaml`): a parsed
   * document, or the path of a YAML or JSON file. With it, every JSON body (jobs, lists,
   * status, problems) is also checked against its component schemas, which needs `ajv` and
   * `ajv-formats` installed (and `yaml` for a YAML file); they are loaded only then.
   * @default undefined: bodies are not checked against schemas; every other assertion runs
   */
  openapi?: OpenApiSource;
}

const SECRET = 'contract-suite-signing-secret-0123456789';

/** zstd is in node:zlib from Node 22.15 on; the suite checks the 422 instead where it is not. */
const zstdDecompress = (zlib as { zstdDecompressSync?: (data: Buffer) => Buffer }).zstdDecompressSync;

interface Fixture {
  manager: ExportManager;
  server: ContractServer;
  /** `${server.url}/export` */
  api: string;
  root: string;
  directory: string;
  sentinel: string;
  /** Lets every "blocking" source finish. */
  release(): void;
  /** The clock of the routes (signed-link expiry), in epoch ms. */
  clock: { now: number };
  /** `request.native` of every request `identify` saw, in order. */
  natives: unknown[];
}

interface FixtureOptions {
  manager?: Partial<ExportManagerOptions>;
  routes?: Partial<ExportRoutesOptions>;
}

/** Range tests need a file of a few hundred bytes. */
const NUMBERS_FOR_RANGES = 60;

/**
 * The contract every adapter of the HTTP API satisfies: routing and the host's own routes,
 * owners, jobs, downloads with ranges and signed links, streamed exports, backpressure, client
 * aborts, shutdown, RFC 9457 problems. Call it at the top level of a test file. Each test
 * builds its own manager in a temp directory and its own server through `startServer`, and
 * talks real HTTP to it. Needs vitest, and prom-client (the managers it builds have metrics).
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { describeHttpContract, listen } from '@spark-export/core/testing';
 *
 * describeHttpContract('express', (manager, options) => {
 *   const app = express();
 *   app.get('/host/ping', (_req, res) => res.type('text').send('pong'));
 *   app.use('/export', createExportRouter(manager, options));
 *   return listen(createServer(app));
 * });
 * ```
 */
export function describeHttpContract(
  name: string,
  startServer: StartContractServer,
  options: HttpContractOptions = {},
): void {
  describe(`HTTP API contract: ${name}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    let checkSchema: SchemaCheck | undefined;
    const check: SchemaCheck = (schemaName, body) => checkSchema?.(schemaName, body);
    const json = (response: Response, schema: string) => readJson(response, schema, check);
    const problem = (response: Response, status: number, code: string, ...otherCodes: string[]) =>
      readProblem(check, response, status, code, ...otherCodes);

    beforeAll(async () => {
      if (options.openapi !== undefined) checkSchema = await loadSchemaCheck(options.openapi);
    });

    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    async function setup(options: FixtureOptions = {}): Promise<Fixture> {
      const root = await mkdtemp(join(tmpdir(), 'spark-export-contract-'));
      cleanups.push(() => rm(root, { recursive: true, force: true }));
      const directory = join(root, 'exports');
      const sentinel = join(root, 'sentinel.txt');
      await writeFile(sentinel, 'do not touch');
      const gate = deferred();
      const clock = { now: Date.now() };
      const natives: unknown[] = [];
      const manager = new ExportManager({
        directory,
        maxConcurrent: 2,
        datasets: {
          numbers: {
            description: 'Rows 0..count-1',
            columns: [
              { name: 'id', type: 'integer' },
              { name: 'name', label: 'Name', type: 'string' },
            ],
            params: { count: { type: 'integer', min: 0, max: 100_000, default: 10 } },
            *source(params) {
              for (let id = 0; id < (params.count as number); id++) yield { id, name: `row ${id}` };
            },
          },
          blocking: {
            description: 'Waits until the test lets it finish',
            columns: [{ name: 'id' }],
            async *source(_params, { signal }) {
              yield { id: 1 };
              await new Promise<void>((resolve, reject) => {
                if (signal.aborted) {
                  reject(signal.reason);
                  return;
                }
                signal.addEventListener('abort', () => reject(signal.reason), { once: true });
                void gate.promise.then(resolve);
              });
              yield { id: 2 };
            },
          },
          owned: {
            description: 'A secret per owner',
            formats: ['json', 'ndjson'],
            source: () => [{ secret: 'only for my owner' }],
          },
        },
        ...options.manager,
      });
      cleanups.push(async () => {
        gate.resolve();
        await manager.close({ drainTimeoutMs: 0 });
      });
      await manager.ready;
      const server = await startServer(manager, {
        prefix: '/export',
        identify: (request) => {
          natives.push(request.native);
          const owner = request.headers['x-owner'];
          if (owner === 'intruder') throw new ExportError('UNAUTHORIZED', 401, 'Unknown caller');
          if (owner === 'crash') throw new Error('session store unreachable at /srv/auth.js');
          return typeof owner === 'string' ? owner : undefined;
        },
        signing: { secret: SECRET },
        now: () => clock.now,
        ...options.routes,
      });
      cleanups.push(() => server.close());
      return {
        manager,
        server,
        api: `${server.url}/export`,
        root,
        directory,
        sentinel,
        release: () => gate.resolve(),
        clock,
        natives,
      };
    }

    /** POSTs a job and waits for it to finish. */
    async function finishedJob(fixture: Fixture, body: Record<string, unknown>, owner?: string) {
      const response = await postJob(fixture.api, body, owner === undefined ? {} : { 'x-owner': owner });
      expect(response.status).toBe(202);
      const job = await json(response, 'Job');
      await fixture.manager.wait(job.id as string, owner === undefined ? {} : { owner });
      return job as { id: string; links: { self: string; download: string | null } };
    }

    describe('host and routing', () => {
      it('leaves paths outside the prefix to the host', async () => {
        const { server } = await setup();
        const ping = await fetch(`${server.url}/host/ping`);
        expect(ping.status).toBe(200);
        expect(await ping.text()).toBe('pong');
        // Shares the prefix's first letters but is not under it.
        const outside = await fetch(`${server.url}/exportx/status`);
        expect(outside.status).toBe(404);
        await outside.arrayBuffer();
      });

      it('answers an unknown path under the prefix with a 404 problem', async () => {
        const { api } = await setup();
        for (const path of ['/nope', '/jobs/x/y/z', '/stream', '', '/status/extra']) {
          await problem(await fetch(`${api}${path}`), 404, 'NOT_FOUND');
        }
      });

      it('answers a known path with a wrong method with 405 and Allow', async () => {
        const { api } = await setup();
        const status = await fetch(`${api}/status`, { method: 'PUT' });
        expect(status.headers.get('allow')).toBe('GET, HEAD');
        await problem(status, 405, 'METHOD_NOT_ALLOWED');
        const jobs = await fetch(`${api}/jobs`, { method: 'DELETE' });
        expect(jobs.headers.get('allow')).toBe('GET, HEAD, POST');
        await problem(jobs, 405, 'METHOD_NOT_ALLOWED');
        const job = await fetch(`${api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA`, { method: 'POST' });
        expect(job.headers.get('allow')).toBe('GET, HEAD, DELETE');
        await problem(job, 405, 'METHOD_NOT_ALLOWED');
      });

      it('answers methods the framework may not route (PROPFIND, MKCOL) with 405 and Allow too', async () => {
        const { api } = await setup();
        for (const [method, path, allow] of [
          ['PROPFIND', '/status', 'GET, HEAD'],
          ['PROPFIND', '/jobs', 'GET, HEAD, POST'],
          ['MKCOL', '/datasets', 'GET, HEAD'],
          ['PATCH', '/stream/numbers', 'GET, HEAD'],
          ['OPTIONS', '/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/download', 'GET, HEAD'],
        ] as const) {
          const response = await fetch(`${api}${path}`, { method });
          expect(response.headers.get('allow'), `${method} ${path}`).toBe(allow);
          await problem(response, 405, 'METHOD_NOT_ALLOWED');
        }
        // An unknown path stays a 404, whatever the method.
        await problem(await fetch(`${api}/nope`, { method: 'PROPFIND' }), 404, 'NOT_FOUND');
      });

      it("hands identify and onError the framework's own request as request.native", async () => {
        const reported: unknown[] = [];
        const { api, natives } = await setup({
          routes: { onError: (_error, request) => reported.push(request.native) },
        });
        await problem(await fetch(`${api}/datasets`, { headers: { 'x-owner': 'crash' } }), 500, 'INTERNAL');
        expect(natives).toHaveLength(1);
        expect(natives[0]).toBeTypeOf('object');
        expect(natives[0]).not.toBeNull();
        // The same object in both: what the host's auth put on it is there for the log line too.
        expect(reported).toEqual([natives[0]]);
        expect(reported[0]).toBe(natives[0]);
      });

      it('answers 401 when identify refuses the caller', async () => {
        const { api } = await setup();
        await problem(
          await fetch(`${api}/jobs`, { headers: { 'x-owner': 'intruder' } }),
          401,
          'UNAUTHORIZED',
        );
        await problem(
          await fetch(`${api}/datasets`, { headers: { 'x-owner': 'intruder' } }),
          401,
          'UNAUTHORIZED',
        );
      });
    });

    describe('5xx without onError', () => {
      /**
       * A dataset that sends more than one chunk (so the 200 and its first bytes go out), then
       * fails once the test saw the 200 and calls `fail()`.
       */
      function defineFailingLater(manager: ExportManager): { fail(): void } {
        const gate = deferred();
        manager.defineDataset('fails-later', {
          columns: [{ name: 'n' }, { name: 'pad' }],
          async *source() {
            for (let n = 0; n < 100; n++) yield { n, pad: 'x'.repeat(1000) };
            await gate.promise;
            throw new Error('cursor lost at db.internal:5432');
          },
        });
        return { fail: () => gate.resolve() };
      }

      it('reports a 500, a source failing at once and one failing midway as http:error events', async () => {
        const { api, manager } = await setup();
        const later = defineFailingLater(manager);
        manager.defineDataset('broken', {
          source: () => {
            throw new Error('connection refused by db.internal:5432');
          },
        });
        const reports: [unknown, { method: string; path: string }][] = [];
        const reported = deferred();
        manager.on('http:error', (error, request) => {
          reports.push([error, request]);
          if (reports.length === 3) reported.resolve();
        });
        const internal = await fetch(`${api}/datasets`, { headers: { 'x-owner': 'crash' } });
        await problem(internal, 500, 'INTERNAL');
        await problem(await fetch(`${api}/stream/broken?format=csv`), 502, 'SOURCE_FAILED');
        const cut = await fetch(`${api}/stream/fails-later?format=csv`);
        expect(cut.status).toBe(200);
        later.fail();
        await cut.text().catch(() => '');
        await reported.promise;
        expect(reports.map(([, request]) => `${request.method} ${request.path}`)).toEqual([
          'GET /export/datasets',
          'GET /export/stream/broken',
          'GET /export/stream/fails-later',
        ]);
        expect(causes(reports[0]![0])).toMatch(/session store unreachable/);
        expect((reports[1]![0] as ExportError).code).toBe('SOURCE_FAILED');
        expect(causes(reports[1]![0])).toMatch(/connection refused/);
        expect(causes(reports[2]![0])).toMatch(/cursor lost/);
        // Client errors are the client's: not reported.
        await problem(await fetch(`${api}/stream/numbers?format=xml`), 422, 'UNKNOWN_FORMAT');
        await problem(await fetch(`${api}/nope`), 404, 'NOT_FOUND');
        expect(reports).toHaveLength(3);
      });

      it('writes them to console.error when nobody listens for http:error', async () => {
        const { api, manager } = await setup();
        const later = defineFailingLater(manager);
        const logged = deferred();
        const lines: unknown[][] = [];
        const spy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
          lines.push(args);
          if (lines.length === 2) logged.resolve();
        });
        try {
          await problem(await fetch(`${api}/datasets`, { headers: { 'x-owner': 'crash' } }), 500, 'INTERNAL');
          const cut = await fetch(`${api}/stream/fails-later?format=csv`);
          expect(cut.status).toBe(200);
          later.fail();
          await cut.text().catch(() => '');
          await logged.promise;
        } finally {
          spy.mockRestore();
        }
        expect(String(lines[0]![0])).toMatch(/GET \/export\/datasets/);
        expect((lines[0]![1] as Error).message).toMatch(/session store unreachable/);
        expect(String(lines[1]![0])).toMatch(/GET \/export\/stream\/fails-later/);
        expect(causes(lines[1]![1])).toMatch(/cursor lost/);
      });
    });

    describe('GET|HEAD /status', () => {
      it('reports version and load', async () => {
        const { api, manager } = await setup();
        const response = await fetch(`${api}/status`);
        expect(response.status).toBe(200);
        expect(await json(response, 'Status')).toMatchObject({
          status: 'ok',
          version: VERSION,
          inFlight: 0,
          queued: 0,
          limit: 2,
        });
        const started = nextEvent(manager, 'job:started');
        await postJob(api, { dataset: 'blocking', format: 'csv' }).then((r) => r.arrayBuffer());
        await started;
        expect(await json(await fetch(`${api}/status`), 'Status')).toMatchObject({ inFlight: 1, limit: 2 });
      });

      it('answers HEAD with headers and no body', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/status`, { method: 'HEAD' });
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^application\/json/);
        expect(await response.text()).toBe('');
      });

      it('answers 503 draining during shutdown', async () => {
        const { api, manager } = await setup();
        await manager.close();
        const response = await fetch(`${api}/status`);
        expect(response.status).toBe(503);
        expect(await json(response, 'Status')).toMatchObject({ status: 'draining', version: VERSION });
      });
    });

    describe('GET /metrics', () => {
      it('is off unless the host turns it on, even with a host registry', async () => {
        const { Counter, Registry } = await import('prom-client');
        const registry = new Registry();
        new Counter({
          name: 'host_secret_orders_total',
          help: 'The host app’s own metric',
          registers: [registry],
        });
        const { api } = await setup({ manager: { metrics: { registry } }, routes: { metrics: undefined } });
        await problem(await fetch(`${api}/metrics`), 404, 'NOT_FOUND');
        const head = await fetch(`${api}/metrics`, { method: 'HEAD' });
        expect(head.status).toBe(404);
        await head.arrayBuffer();
      });

      it('serves the manager’s registry with metrics: true', async () => {
        const { Registry } = await import('prom-client');
        const registry = new Registry();
        const { api } = await setup({ manager: { metrics: { registry } }, routes: { metrics: true } });
        const response = await fetch(`${api}/metrics`);
        expect(response.status).toBe(200);
        expect(await response.text()).toMatch(/^export_concurrency_limit 2$/m);
      });

      it('counts started and completed exports', async () => {
        const fixture = await setup({ routes: { metrics: true } });
        const { api, manager } = fixture;
        const streamsDone = events(manager, 'stream:finished', 2);
        for (let i = 0; i < 2; i++) {
          const response = await fetch(`${api}/stream/numbers?format=csv&count=3`);
          expect(response.status).toBe(200);
          await response.text();
        }
        await streamsDone;
        await finishedJob(fixture, { dataset: 'numbers', format: 'ndjson' });
        const response = await fetch(`${api}/metrics`);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
        const text = await response.text();
        expect(sample(text, 'export_jobs_started_total', { dataset: 'numbers', format: 'csv' })).toBe(2);
        expect(sample(text, 'export_jobs_started_total', { dataset: 'numbers', format: 'ndjson' })).toBe(1);
        expect(
          sample(text, 'export_jobs_completed_total', {
            dataset: 'numbers',
            format: 'csv',
            outcome: 'succeeded',
          }),
        ).toBe(2);
        expect(
          sample(text, 'export_jobs_completed_total', {
            dataset: 'numbers',
            format: 'ndjson',
            outcome: 'succeeded',
          }),
        ).toBe(1);
      });

      it('is a 404 when the host turns it off', async () => {
        const { api } = await setup({ routes: { metrics: false } });
        await problem(await fetch(`${api}/metrics`), 404, 'NOT_FOUND');
      });

      it('is a 404 when the manager has no metrics', async () => {
        const { api } = await setup({ manager: { metrics: false }, routes: { metrics: true } });
        await problem(await fetch(`${api}/metrics`), 404, 'NOT_FOUND');
      });
    });

    describe('HEAD wherever GET works', () => {
      it('answers HEAD with the status and headers of a GET and no body', async () => {
        const fixture = await setup({ routes: { metrics: true } });
        const job = await finishedJob(fixture, { dataset: 'numbers', format: 'csv' });
        for (const path of ['/metrics', '/datasets', '/jobs', '/jobs?status=succeeded', `/jobs/${job.id}`]) {
          const get = await fetch(`${fixture.api}${path}`);
          const getBody = await get.text();
          const head = await fetch(`${fixture.api}${path}`, { method: 'HEAD' });
          expect(head.status, path).toBe(200);
          expect(get.status, path).toBe(200);
          for (const name of ['content-type', 'content-length', 'cache-control']) {
            expect(head.headers.get(name), `${path} ${name}`).toBe(get.headers.get(name));
          }
          expect(Number(head.headers.get('content-length')), path).toBe(Buffer.byteLength(getBody));
          expect(await head.text(), path).toBe('');
        }
        // Errors too: the status and headers of the problem, without it.
        const missing = await fetch(`${fixture.api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA`, { method: 'HEAD' });
        expect(missing.status).toBe(404);
        expect(missing.headers.get('content-type')).toBe('application/problem+json');
        expect(await missing.text()).toBe('');
        const badQuery = await fetch(`${fixture.api}/jobs?limit=abc`, { method: 'HEAD' });
        expect(badQuery.status).toBe(400);
        expect(await badQuery.text()).toBe('');
      });

      it('answers HEAD /stream with the headers of a GET without running an export or taking a slot', async () => {
        const { api, manager, release } = await setup();
        const started: unknown[] = [];
        manager.on('stream:started', (info) => started.push(info));
        const get = await fetch(`${api}/stream/numbers?format=ndjson&count=2&filename=two`);
        await get.text();
        expect(started).toHaveLength(1);
        // Both slots taken: a GET would be refused, a HEAD needs no slot.
        const bothStarted = events(manager, 'stream:started', 2);
        const held = [1, 2].map(() => fetch(`${api}/stream/blocking?format=csv`));
        await bothStarted;
        expect(manager.inFlight).toBe(2);
        const head = await fetch(`${api}/stream/numbers?format=ndjson&count=2&filename=two`, {
          method: 'HEAD',
        });
        expect(head.status).toBe(200);
        for (const name of [
          'content-type',
          'content-disposition',
          'cache-control',
          'x-content-type-options',
        ]) {
          expect(head.headers.get(name), name).toBe(get.headers.get(name));
        }
        expect(await head.text()).toBe('');
        expect(started).toHaveLength(3);
        expect(manager.inFlight).toBe(2);
        // The request is validated as for a GET.
        for (const [query, status] of [
          ['nope?format=csv', 404],
          ['numbers?format=csv&count=ten', 422],
          ['numbers?format=xml', 422],
          ['numbers?format=csv&zzz=1', 422],
          ['numbers?format=csv&format=json', 400],
        ] as const) {
          const response = await fetch(`${api}/stream/${query}`, { method: 'HEAD' });
          expect(response.status, query).toBe(status);
          expect(response.headers.get('content-type'), query).toBe('application/problem+json');
          expect(await response.text(), query).toBe('');
        }
        const refused = await fetch(`${api}/stream/numbers?format=csv`, {
          method: 'HEAD',
          headers: { 'x-owner': 'intruder' },
        });
        expect(refused.status).toBe(401);
        await refused.arrayBuffer();
        expect(started).toHaveLength(3);
        release();
        for (const response of await Promise.all(held)) await response.text();
        await manager.close();
        const closing = await fetch(`${api}/stream/numbers?format=csv`, { method: 'HEAD' });
        expect(closing.status).toBe(503);
        expect(Number(closing.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        await closing.arrayBuffer();
      });
    });

    describe('GET /datasets', () => {
      it('lists every dataset with columns, formats and params', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/datasets`);
        expect(response.status).toBe(200);
        const body = (await json(response, 'DatasetList')) as { datasets: Record<string, unknown>[] };
        expect(body.datasets.map((dataset) => dataset.name)).toEqual(['numbers', 'blocking', 'owned']);
        expect(body.datasets[0]).toMatchObject({
          description: 'Rows 0..count-1',
          columns: [
            { name: 'id', label: 'id', type: 'integer' },
            { name: 'name', label: 'Name', type: 'string' },
          ],
          formats: ['csv', 'json', 'ndjson', 'xlsx', 'parquet'],
          params: { count: { type: 'integer', required: false, default: 10, min: 0, max: 100_000 } },
        });
        expect(body.datasets[2]).toMatchObject({ columns: null, formats: ['json', 'ndjson'], params: {} });
      });
    });

    describe('POST /jobs', () => {
      it('accepts a job with 202 and Location, then serves it when done', async () => {
        const fixture = await setup();
        const response = await postJob(fixture.api, {
          dataset: 'numbers',
          format: 'csv',
          params: { count: 5 },
          columns: ['id'],
          filename: 'five numbers',
          compression: 'none',
        });
        expect(response.status).toBe(202);
        const job = (await json(response, 'Job')) as {
          id: string;
          status: string;
          links: Record<string, unknown>;
        };
        expect(response.headers.get('location')).toBe(`/export/jobs/${job.id}`);
        expect(['queued', 'running']).toContain(job.status);
        expect(job.links).toEqual({ self: `/export/jobs/${job.id}`, download: null });
        await fixture.manager.wait(job.id);
        const done = await json(await fetch(`${fixture.api}/jobs/${job.id}`), 'Job');
        expect(done).toMatchObject({
          status: 'succeeded',
          progress: { rows: 5 },
          links: { download: `/export/jobs/${job.id}/download` },
        });
        const file = await fetch(`${fixture.server.url}${(done.links as { download: string }).download}`);
        expect(file.status).toBe(200);
        expect(file.headers.get('content-disposition')).toContain('five numbers.csv');
        expect((await file.text()).trim().split('\n')).toEqual(['id', '0', '1', '2', '3', '4']);
      });

      it('returns the same job with 200 for a repeated Idempotency-Key', async () => {
        const { api } = await setup();
        const headers = { 'idempotency-key': 'order-export-1', 'x-owner': 'alice' };
        const first = await postJob(api, { dataset: 'numbers', format: 'json' }, headers);
        expect(first.status).toBe(202);
        const job = await json(first, 'Job');
        const again = await postJob(api, { dataset: 'numbers', format: 'json' }, headers);
        expect(again.status).toBe(200);
        expect((await json(again, 'Job')).id).toBe(job.id);
        // The key is per owner.
        const other = await postJob(
          api,
          { dataset: 'numbers', format: 'json' },
          { ...headers, 'x-owner': 'bob' },
        );
        expect(other.status).toBe(202);
        expect((await json(other, 'Job')).id).not.toBe(job.id);
      });

      it('answers 415 for a body that is not JSON', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: 'dataset=numbers',
        });
        await problem(response, 415, 'UNSUPPORTED_MEDIA_TYPE');
      });

      it('answers 400 for malformed JSON and for a wrong shape, naming the field', async () => {
        const { api } = await setup();
        const malformed = await fetch(`${api}/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"dataset": "numbers",',
        });
        await problem(malformed, 400, 'BAD_REQUEST');
        const cases: [unknown, string | undefined][] = [
          [{ datset: 'numbers', format: 'csv' }, 'datset'],
          [{ dataset: 'numbers' }, 'format'],
          [{ dataset: 'numbers', format: 5 }, 'format'],
          [{ dataset: 'numbers', format: 'csv', params: [1] }, 'params'],
          [{ dataset: 'numbers', format: 'csv', columns: [1] }, 'columns'],
          [['numbers'], undefined],
        ];
        for (const [body, field] of cases) {
          const response = await postJob(api, body);
          const details = await problem(response, 400, 'BAD_REQUEST');
          expect(details.field).toBe(field);
        }
      });

      it('accepts application/*+json', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/vnd.export+json; charset=utf-8' },
          body: JSON.stringify({ dataset: 'numbers', format: 'csv' }),
        });
        expect(response.status).toBe(202);
        await json(response, 'Job');
      });

      it('answers 413 for a body over the limit, declared or counted', async () => {
        const { api } = await setup({ routes: { maxBodyBytes: 1024 } });
        const big = JSON.stringify({ dataset: 'numbers', format: 'csv', filename: 'x'.repeat(2000) });
        await problem(await postJob(api, big), 413, 'PAYLOAD_TOO_LARGE');
        // Chunked, without Content-Length: the handler has to count.
        const chunked = await rawRequest(`${api}/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
          chunks: [big.slice(0, 700), big.slice(700)],
        });
        expect(chunked.status).toBe(413);
        expect(chunked.headers['content-type']).toBe('application/problem+json');
        check('Problem', JSON.parse(chunked.body.toString('utf8')));
        // The server is still fine.
        expect(await json(await fetch(`${api}/status`), 'Status')).toMatchObject({ status: 'ok' });
      });

      it('writes gzip at a chosen level and zstd files (or names the Node version that lacks zstd)', async () => {
        const fixture = await setup();
        const gzipJob = await finishedJob(fixture, {
          dataset: 'numbers',
          format: 'ndjson',
          params: { count: 2 },
          compression: { type: 'gzip', level: 1 },
        });
        const gzipView = await json(await fetch(`${fixture.api}/jobs/${gzipJob.id}`), 'Job');
        expect(gzipView.compression).toEqual({ type: 'gzip', level: 1 });
        const gzipFile = await fetch(`${fixture.api}/jobs/${gzipJob.id}/download`);
        expect(gzipFile.headers.get('content-type')).toBe('application/gzip');
        expect(gzipFile.headers.get('content-disposition')).toMatch(/\.ndjson\.gz"/);
        expect(gzipFile.headers.get('content-encoding')).toBeNull();
        expect(gunzipSync(Buffer.from(await gzipFile.arrayBuffer())).toString('utf8')).toBe(
          '{"id":0,"name":"row 0"}\n{"id":1,"name":"row 1"}\n',
        );
        const zstdRequest = { dataset: 'numbers', format: 'csv', params: { count: 2 }, compression: 'zstd' };
        if (!zstdDecompress) {
          const refused = await problem(await postJob(fixture.api, zstdRequest), 422, 'VALIDATION_FAILED');
          expect(refused.field).toBe('compression');
          expect(refused.detail).toContain(process.version);
          const stream = await problem(
            await fetch(`${fixture.api}/stream/numbers?compression=zstd`),
            422,
            'VALIDATION_FAILED',
          );
          expect(stream.detail).toContain('22.15');
          return;
        }
        for (const compression of ['zstd', { type: 'zstd', level: 19 }]) {
          const zstdJob = await finishedJob(fixture, { ...zstdRequest, compression });
          const zstdFile = await fetch(`${fixture.api}/jobs/${zstdJob.id}/download`);
          expect(zstdFile.headers.get('content-type')).toBe('application/zstd');
          expect(zstdFile.headers.get('content-disposition')).toMatch(/\.csv\.zst"/);
          expect(zstdDecompress(Buffer.from(await zstdFile.arrayBuffer())).toString('utf8')).toBe(
            'id,Name\n0,row 0\n1,row 1\n',
          );
        }
        const stream = await fetch(
          `${fixture.api}/stream/numbers?count=1&compression=zstd&compressionLevel=3`,
        );
        expect(stream.headers.get('content-type')).toBe('application/zstd');
        expect(zstdDecompress(Buffer.from(await stream.arrayBuffer())).toString('utf8')).toBe(
          'id,Name\n0,row 0\n',
        );
      });

      it('answers 404 for an unknown dataset and 422 for bad params, columns, format or compression', async () => {
        const { api } = await setup();
        await problem(await postJob(api, { dataset: 'nope', format: 'csv' }), 404, 'UNKNOWN_DATASET');
        const count = await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv', params: { count: 'ten' } }),
          422,
          'INVALID_PARAMS',
        );
        expect(count.field).toBe('params.count');
        await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv', params: { other: 1 } }),
          422,
          'INVALID_PARAMS',
        );
        await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv', columns: ['nope'] }),
          422,
          'UNKNOWN_COLUMN',
        );
        await problem(await postJob(api, { dataset: 'numbers', format: 'xml' }), 422, 'UNKNOWN_FORMAT');
        await problem(await postJob(api, { dataset: 'owned', format: 'csv' }), 422, 'UNKNOWN_FORMAT');
        const compression = await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv', compression: 'zip' }),
          422,
          'VALIDATION_FAILED',
        );
        expect(compression.field).toBe('compression');
      });

      it('answers 429 with Retry-After when every slot is taken', async () => {
        const { api, manager, release } = await setup();
        const jobs: string[] = [];
        for (let i = 0; i < 2; i++) {
          const response = await postJob(api, { dataset: 'blocking', format: 'csv' });
          expect(response.status).toBe(202);
          jobs.push((await json(response, 'Job')).id as string);
        }
        const response = await postJob(api, { dataset: 'numbers', format: 'csv' });
        const details = await problem(response, 429, 'BACKPRESSURE');
        const retryAfter = Number(response.headers.get('retry-after'));
        expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true);
        expect(details.retryAfterSeconds).toBe(retryAfter);
        release();
        for (const id of jobs) expect((await manager.wait(id)).status).toBe('succeeded');
      });

      it('answers 503 with Retry-After while shutting down', async () => {
        const { api, manager } = await setup();
        await manager.close();
        const response = await postJob(api, { dataset: 'numbers', format: 'csv' });
        await problem(response, 503, 'SHUTTING_DOWN');
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      });
    });

    describe('GET /jobs', () => {
      it('pages through the caller’s jobs, newest first, and filters by status', async () => {
        const fixture = await setup();
        const ids: string[] = [];
        for (let i = 0; i < 3; i++)
          ids.push((await finishedJob(fixture, { dataset: 'numbers', format: 'csv' }, 'alice')).id);
        await finishedJob(fixture, { dataset: 'numbers', format: 'csv' }, 'bob');
        const headers = { 'x-owner': 'alice' };
        const first = (await json(await fetch(`${fixture.api}/jobs?limit=2`, { headers }), 'JobList')) as {
          jobs: { id: string }[];
          nextCursor: string | null;
        };
        expect(first.jobs).toHaveLength(2);
        expect(first.nextCursor).toEqual(expect.any(String));
        const second = (await json(
          await fetch(`${fixture.api}/jobs?limit=2&cursor=${encodeURIComponent(first.nextCursor!)}`, {
            headers,
          }),
          'JobList',
        )) as { jobs: { id: string }[]; nextCursor: string | null };
        expect(second.nextCursor).toBeNull();
        expect([...first.jobs, ...second.jobs].map((job) => job.id).sort()).toEqual([...ids].sort());
        const succeeded = await json(
          await fetch(`${fixture.api}/jobs?status=succeeded`, { headers }),
          'JobList',
        );
        expect((succeeded.jobs as unknown[]).length).toBe(3);
        const failed = await json(await fetch(`${fixture.api}/jobs?status=failed`, { headers }), 'JobList');
        expect(failed.jobs).toEqual([]);
      });

      it('filters by dataset, alone or with status', async () => {
        const fixture = await setup();
        const numbers = await finishedJob(fixture, { dataset: 'numbers', format: 'csv' }, 'alice');
        const owned = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'bob');
        const headers = { 'x-owner': 'alice' };
        const list = async (query: string) =>
          (
            (await json(await fetch(`${fixture.api}/jobs?${query}`, { headers }), 'JobList')).jobs as {
              id: string;
            }[]
          ).map((job) => job.id);
        expect(await list('dataset=owned')).toEqual([owned.id]);
        expect(await list('dataset=numbers&status=succeeded')).toEqual([numbers.id]);
        expect(await list('dataset=numbers&status=failed')).toEqual([]);
        expect(await list('dataset=nope')).toEqual([]);
        await problem(
          await fetch(`${fixture.api}/jobs?dataset=owned&dataset=numbers`, { headers }),
          400,
          'BAD_REQUEST',
        );
      });

      it('answers 400 for a bad query', async () => {
        const { api } = await setup();
        for (const query of [
          'limit=abc',
          'limit=0',
          'limit=5000',
          'status=bogus',
          'cursor=garbage',
          'sort=asc',
          'limit=1&limit=2',
        ]) {
          await problem(await fetch(`${api}/jobs?${query}`), 400, 'BAD_REQUEST', 'VALIDATION_FAILED');
        }
      });
    });

    describe('without a jobs directory', () => {
      it('answers every job route with 501 JOBS_NOT_CONFIGURED, and streams still work', async () => {
        const { api } = await setup({ manager: { directory: undefined } });
        const id = 'exp_AAAAAAAAAAAAAAAAAAAAAA';
        const requests: [string, string][] = [
          ['GET', '/jobs'],
          ['GET', `/jobs/${id}`],
          ['DELETE', `/jobs/${id}`],
          ['GET', `/jobs/${id}/download`],
          ['POST', `/jobs/${id}/cancel`],
          ['GET', `/jobs/${id}/events`],
        ];
        const created = await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv' }),
          501,
          'JOBS_NOT_CONFIGURED',
        );
        expect(created.detail).toMatch(/jobs/i);
        for (const [method, path] of requests) {
          await problem(await fetch(`${api}${path}`, { method }), 501, 'JOBS_NOT_CONFIGURED');
        }
        const head = await fetch(`${api}/jobs`, { method: 'HEAD' });
        expect(head.status).toBe(501);
        await head.arrayBuffer();
        const streamed = await fetch(`${api}/stream/numbers?format=csv&count=1`);
        expect(streamed.status).toBe(200);
        expect((await streamed.text()).trim().split('\n')).toEqual(['id,Name', '0,row 0']);
      });
    });

    describe('GET /jobs/:id and DELETE /jobs/:id', () => {
      it('shows a job with links and 404s an unknown one', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'numbers', format: 'json' });
        const body = await json(await fetch(`${fixture.api}/jobs/${job.id}`), 'Job');
        expect(body).toMatchObject({
          id: job.id,
          dataset: 'numbers',
          format: 'json',
          status: 'succeeded',
          queuePosition: null,
          error: null,
          file: { bytes: expect.any(Number), sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
          links: { self: `/export/jobs/${job.id}`, download: `/export/jobs/${job.id}/download` },
        });
        await problem(await fetch(`${fixture.api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA`), 404, 'NOT_FOUND');
      });

      it('cancels a running job on DELETE and forgets it', async () => {
        const { api, manager, directory } = await setup();
        const started = nextEvent(manager, 'job:started');
        const job = await json(await postJob(api, { dataset: 'blocking', format: 'csv' }), 'Job');
        await started;
        expect(manager.inFlight).toBe(1);
        const deleted = await fetch(`${api}/jobs/${job.id}`, { method: 'DELETE' });
        expect(deleted.status).toBe(204);
        expect(await deleted.text()).toBe('');
        expect(manager.inFlight).toBe(0);
        await problem(await fetch(`${api}/jobs/${job.id}`), 404, 'NOT_FOUND');
        await problem(await fetch(`${api}/jobs/${job.id}`, { method: 'DELETE' }), 404, 'NOT_FOUND');
        expect((await readdir(directory)).filter((name) => name.startsWith(job.id as string))).toEqual([]);
      });

      it('removes a finished job’s file on DELETE', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'numbers', format: 'csv' });
        expect((await readdir(fixture.directory)).some((name) => name.startsWith(job.id))).toBe(true);
        expect((await fetch(`${fixture.api}/jobs/${job.id}`, { method: 'DELETE' })).status).toBe(204);
        expect((await readdir(fixture.directory)).some((name) => name.startsWith(job.id))).toBe(false);
        await problem(await fetch(`${fixture.api}/jobs/${job.id}/download`), 404, 'NOT_FOUND');
      });
    });

    describe('POST /jobs/:id/cancel', () => {
      it('cancels a running job and keeps it, so that it lists as cancelled', async () => {
        const { api, manager, directory } = await setup();
        const started = nextEvent(manager, 'job:started');
        const job = await json(await postJob(api, { dataset: 'blocking', format: 'csv' }), 'Job');
        await started;
        expect(manager.inFlight).toBe(1);
        const response = await fetch(`${api}/jobs/${job.id}/cancel`, { method: 'POST' });
        expect(response.status).toBe(200);
        const cancelled = await json(response, 'Job');
        expect(cancelled).toMatchObject({ id: job.id, status: 'cancelled', links: { download: null } });
        expect(manager.inFlight).toBe(0);
        expect(await json(await fetch(`${api}/jobs/${job.id}`), 'Job')).toMatchObject({
          status: 'cancelled',
        });
        const listed = await json(await fetch(`${api}/jobs?status=cancelled`), 'JobList');
        expect((listed.jobs as { id: string }[]).map((listedJob) => listedJob.id)).toEqual([job.id]);
        await problem(await fetch(`${api}/jobs/${job.id}/download`), 409, 'JOB_NOT_READY');
        // No partial file is left behind; the manifest stays.
        expect((await readdir(directory)).filter((name) => name.startsWith(job.id as string))).toEqual([
          `${job.id}.json`,
        ]);
        // Cancelling again is answered with the cancelled job: the state asked for holds.
        const again = await fetch(`${api}/jobs/${job.id}/cancel`, { method: 'POST' });
        expect(again.status).toBe(200);
        expect(await json(again, 'Job')).toMatchObject({ status: 'cancelled' });
      });

      it('cancels a queued job, giving its queue place back', async () => {
        const { api, manager, release } = await setup({ manager: { maxConcurrent: 1, maxQueued: 1 } });
        const started = nextEvent(manager, 'job:started');
        const running = await json(await postJob(api, { dataset: 'blocking', format: 'csv' }), 'Job');
        await started;
        const queued = await json(await postJob(api, { dataset: 'numbers', format: 'csv' }), 'Job');
        expect(queued.status).toBe('queued');
        const response = await fetch(`${api}/jobs/${queued.id}/cancel`, { method: 'POST' });
        expect(response.status).toBe(200);
        expect(await json(response, 'Job')).toMatchObject({ status: 'cancelled', queuePosition: null });
        expect(manager.queued).toBe(0);
        // The queue place is free again.
        const next = await postJob(api, { dataset: 'numbers', format: 'csv' });
        expect(next.status).toBe(202);
        const nextJob = await json(next, 'Job');
        release();
        expect((await manager.wait(running.id as string)).status).toBe('succeeded');
        expect((await manager.wait(nextJob.id as string)).status).toBe('succeeded');
      });

      it('answers 409 JOB_FINISHED for a finished job, 404 for another owner’s, 405 for GET', async () => {
        const fixture = await setup();
        const done = await finishedJob(fixture, { dataset: 'numbers', format: 'csv' }, 'alice');
        const asAlice = { 'x-owner': 'alice' };
        const finished = await problem(
          await fetch(`${fixture.api}/jobs/${done.id}/cancel`, { method: 'POST', headers: asAlice }),
          409,
          'JOB_FINISHED',
        );
        expect(finished.detail).toMatch(/succeeded/);
        // The job and its file are untouched.
        const file = await fetch(`${fixture.api}/jobs/${done.id}/download`, { headers: asAlice });
        expect(file.status).toBe(200);
        await file.arrayBuffer();
        for (const headers of [{ 'x-owner': 'bob' }, {}] as Record<string, string>[]) {
          await problem(
            await fetch(`${fixture.api}/jobs/${done.id}/cancel`, { method: 'POST', headers }),
            404,
            'NOT_FOUND',
          );
        }
        await problem(
          await fetch(`${fixture.api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/cancel`, { method: 'POST' }),
          404,
          'NOT_FOUND',
        );
        const get = await fetch(`${fixture.api}/jobs/${done.id}/cancel`, { headers: asAlice });
        expect(get.headers.get('allow')).toBe('POST');
        await problem(get, 405, 'METHOD_NOT_ALLOWED');
      });
    });

    describe('GET|HEAD /jobs/:id/download', () => {
      async function downloadable(fixture: Fixture) {
        const job = await finishedJob(fixture, {
          dataset: 'numbers',
          format: 'csv',
          params: { count: NUMBERS_FOR_RANGES },
          filename: 'Zahlen für Ü',
        });
        const url = `${fixture.server.url}${job.links.download ?? `/export/jobs/${job.id}/download`}`;
        const whole = await fetch(url);
        expect(whole.status).toBe(200);
        const bytes = Buffer.from(await whole.arrayBuffer());
        return { job, url, whole, bytes };
      }

      it('serves the whole file with its headers', async () => {
        const fixture = await setup();
        const { url, whole, bytes } = await downloadable(fixture);
        expect(bytes.length).toBeGreaterThan(300);
        expect(whole.headers.get('content-type')).toMatch(/^text\/csv/);
        expect(whole.headers.get('content-length')).toBe(String(bytes.length));
        expect(whole.headers.get('accept-ranges')).toBe('bytes');
        expect(whole.headers.get('cache-control')).toMatch(/private/);
        expect(whole.headers.get('etag')).toBe(`"${createHash('sha256').update(bytes).digest('hex')}"`);
        expect(whole.headers.get('content-disposition')).toBe(
          `attachment; filename="Zahlen fur U.csv"; filename*=UTF-8''Zahlen%20f%C3%BCr%20%C3%9C.csv`,
        );
        expect(bytes.toString('utf8').split('\n')[0]).toBe('id,Name');
        const head = await fetch(url, { method: 'HEAD' });
        expect(head.status).toBe(200);
        expect(head.headers.get('content-length')).toBe(String(bytes.length));
        expect(head.headers.get('etag')).toBe(whole.headers.get('etag'));
        expect(await head.text()).toBe('');
      });

      it('serves single ranges with 206 and refuses unsatisfiable ones with 416', async () => {
        const fixture = await setup();
        const { url, bytes } = await downloadable(fixture);
        const size = bytes.length;
        const cases: [string, number, number][] = [
          ['bytes=0-99', 0, 99],
          ['bytes=-100', size - 100, size - 1],
          ['bytes=100-', 100, size - 1],
        ];
        for (const [range, start, end] of cases) {
          const response = await fetch(url, { headers: { range } });
          expect(response.status).toBe(206);
          expect(response.headers.get('content-range')).toBe(`bytes ${start}-${end}/${size}`);
          expect(response.headers.get('content-length')).toBe(String(end - start + 1));
          expect(Buffer.from(await response.arrayBuffer()).equals(bytes.subarray(start, end + 1))).toBe(true);
        }
        const head = await fetch(url, { method: 'HEAD', headers: { range: 'bytes=0-9' } });
        expect(head.status).toBe(206);
        expect(head.headers.get('content-length')).toBe('10');
        expect(await head.text()).toBe('');
        const unsatisfiable = await fetch(url, { headers: { range: `bytes=${size}-` } });
        expect(unsatisfiable.headers.get('content-range')).toBe(`bytes */${size}`);
        await problem(unsatisfiable, 416, 'RANGE_NOT_SATISFIABLE');
        // Several ranges: the whole file (documented choice).
        const several = await fetch(url, { headers: { range: 'bytes=0-9,200-209' } });
        expect(several.status).toBe(200);
        expect(Buffer.from(await several.arrayBuffer()).equals(bytes)).toBe(true);
        // A stale If-Range: the whole file.
        const stale = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': '"other"' } });
        expect(stale.status).toBe(200);
        expect((await stale.arrayBuffer()).byteLength).toBe(size);
      });

      it('ignores an invalid Range or one of another unit (200, the whole file)', async () => {
        const fixture = await setup();
        const { url, bytes } = await downloadable(fixture);
        const size = bytes.length;
        for (const range of [
          'bytes=abc',
          'bytes=5-1',
          'foo=999999999-',
          'items=0-9',
          'bytes=',
          'bytes=0-9x',
          'bytes 0-9',
          'bytes=--1',
          'bytes=0-9,abc',
          'bytes=0x10-',
          '=0-9',
        ]) {
          const response = await fetch(url, { headers: { range } });
          expect(response.status, range).toBe(200);
          expect(response.headers.get('content-range'), range).toBeNull();
          expect(Buffer.from(await response.arrayBuffer()).equals(bytes), range).toBe(true);
        }
        // The unit is case-insensitive, whitespace around commas is allowed.
        const upper = await fetch(url, { headers: { range: 'Bytes=0-9 , 5-19' } });
        expect(upper.status).toBe(206);
        expect(upper.headers.get('content-range')).toBe(`bytes 0-19/${size}`);
        await upper.arrayBuffer();
        // Valid but unsatisfiable: 416.
        for (const range of [
          `bytes=${size}-`,
          `bytes=${size + 5}-${size + 10}`,
          'bytes=-0',
          `bytes=${size}-,-0`,
        ]) {
          const response = await fetch(url, { headers: { range } });
          expect(response.headers.get('content-range'), range).toBe(`bytes */${size}`);
          await problem(response, 416, 'RANGE_NOT_SATISFIABLE');
        }
      });

      it('answers 304 for a matching If-None-Match', async () => {
        const fixture = await setup();
        const { url, whole } = await downloadable(fixture);
        const etag = whole.headers.get('etag')!;
        for (const value of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
          const response = await fetch(url, { headers: { 'if-none-match': value } });
          expect(response.status).toBe(304);
          expect(response.headers.get('etag')).toBe(etag);
          expect(await response.text()).toBe('');
        }
        const changed = await fetch(url, { headers: { 'if-none-match': '"other"' } });
        expect(changed.status).toBe(200);
        await changed.arrayBuffer();
      });

      it('answers 409 while the job runs and 410 once its file expired', async () => {
        const clock = { now: Date.parse('2025-01-01T00:00:00Z') };
        const fixture = await setup({ manager: { now: () => clock.now, retention: { maxAgeMs: 60_000 } } });
        const started = nextEvent(fixture.manager, 'job:started');
        const running = await json(await postJob(fixture.api, { dataset: 'blocking', format: 'csv' }), 'Job');
        await started;
        await problem(await fetch(`${fixture.api}/jobs/${running.id}/download`), 409, 'JOB_NOT_READY');
        fixture.release();
        await fixture.manager.wait(running.id as string);
        clock.now += 120_000;
        expect((await fixture.manager.sweep()).expired).toBe(1);
        await problem(await fetch(`${fixture.api}/jobs/${running.id}/download`), 410, 'JOB_EXPIRED');
        expect(await json(await fetch(`${fixture.api}/jobs/${running.id}`), 'Job')).toMatchObject({
          status: 'expired',
          links: { download: null },
        });
      });

      it('404s ids that are not job ids, touching nothing on disk', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'numbers', format: 'csv' });
        const before = (await readdir(fixture.directory)).sort();
        const ids = [
          '..%2F..%2Fetc%2Fpasswd',
          '..%2Fsentinel.txt',
          'exp_..',
          `exp_${'A'.repeat(5000)}`,
          '%E0%A4%A',
          `${job.id}%00`,
        ];
        for (const id of ids) {
          for (const suffix of ['', '/download']) {
            for (const method of ['GET', 'DELETE']) {
              if (suffix && method === 'DELETE') continue;
              await problem(await fetch(`${fixture.api}/jobs/${id}${suffix}`, { method }), 404, 'NOT_FOUND');
            }
          }
        }
        await problem(await fetch(`${fixture.api}/jobs/exp_../x`), 404, 'NOT_FOUND');
        await problem(await fetch(`${fixture.api}/jobs/exp_../download`), 404, 'NOT_FOUND');
        expect((await readdir(fixture.directory)).sort()).toEqual(before);
        expect(await readFile(fixture.sentinel, 'utf8')).toBe('do not touch');
        expect(
          (await fetch(`${fixture.api}/jobs/${job.id}/download`).then((r) => r.arrayBuffer())).byteLength,
        ).toBeGreaterThan(0);
      });
    });

    describe('GET /jobs/:id/events', () => {
      const eventsOf = (api: string, id: string, headers: Record<string, string> = {}) =>
        fetch(`${api}/jobs/${id}/events`, { headers: { accept: 'text/event-stream', ...headers } });

      it('sends the state at once and each change as it happens (unbuffered), then ends after the final state', async () => {
        const fixture = await setup();
        const started = nextEvent(fixture.manager, 'job:started');
        const created = await json(await postJob(fixture.api, { dataset: 'blocking', format: 'csv' }), 'Job');
        const id = created.id as string;
        await started;
        const response = await eventsOf(fixture.api, id);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
        expect(response.headers.get('cache-control')).toMatch(/no-store/);
        expect(response.headers.get('x-accel-buffering')).toBe('no');
        const reader = sseReader(response);
        // The job is still held by its source: this event can only arrive if the adapter
        // passes each write on instead of buffering the response.
        const running = await nextSseEvent(reader);
        expect(running?.event).toBe('running');
        expect(running?.id).toMatch(/^running:\d+$/);
        const job = JSON.parse(running?.data ?? '{}') as Record<string, unknown>;
        check('Job', job);
        expect(job).toMatchObject({
          id,
          status: 'running',
          links: { self: `/export/jobs/${id}`, download: null },
        });
        fixture.release();
        let last: SseMessage | undefined;
        for (let message = await nextSseEvent(reader); message; message = await nextSseEvent(reader)) {
          expect(['progress', 'succeeded']).toContain(message.event);
          if (message.event === 'progress') check('JobProgressEvent', JSON.parse(message.data ?? '{}'));
          last = message;
        }
        expect(last?.event).toBe('succeeded');
        const succeeded = JSON.parse(last?.data ?? '{}') as Record<string, unknown>;
        check('Job', succeeded);
        expect(succeeded).toMatchObject({
          status: 'succeeded',
          links: { download: `/export/jobs/${id}/download` },
        });
        expect(last?.id).toBe(`succeeded:${(succeeded.progress as { rows: number }).rows}`);

        // A client that saw the final state and reconnects is told to stop (204).
        const again = await eventsOf(fixture.api, id, { 'last-event-id': last?.id ?? '' });
        expect(again.status).toBe(204);
        expect(await again.text()).toBe('');
        // A new client of a finished job gets its state once, then the end.
        const late = sseReader(await eventsOf(fixture.api, id));
        expect((await nextSseEvent(late))?.event).toBe('succeeded');
        expect(await nextSseEvent(late)).toBeUndefined();
      });

      it('resumes from Last-Event-ID without repeating what the client saw', async () => {
        const fixture = await setup();
        const started = nextEvent(fixture.manager, 'job:started');
        const created = await json(await postJob(fixture.api, { dataset: 'blocking', format: 'csv' }), 'Job');
        const id = created.id as string;
        await started;
        const first = sseReader(await eventsOf(fixture.api, id));
        const running = await nextSseEvent(first);
        expect(running?.event).toBe('running');
        await first.cancel();
        const resumed = sseReader(await eventsOf(fixture.api, id, { 'last-event-id': running?.id ?? '' }));
        fixture.release();
        const seen: string[] = [];
        for (let message = await nextSseEvent(resumed); message; message = await nextSseEvent(resumed)) {
          seen.push(message.event ?? '');
        }
        expect(seen).not.toContain('running');
        expect(seen.at(-1)).toBe('succeeded');
      });

      it('keeps the owner rules of the job routes and limits open streams per owner (429 with Retry-After)', async () => {
        const fixture = await setup({ routes: { eventStreams: { maxPerOwner: 1, retryAfterSeconds: 7 } } });
        const asAlice = { 'x-owner': 'alice' };
        const started = nextEvent(fixture.manager, 'job:started');
        const created = await json(
          await postJob(fixture.api, { dataset: 'blocking', format: 'csv' }, asAlice),
          'Job',
        );
        const id = created.id as string;
        await started;
        for (const headers of [{ 'x-owner': 'bob' }, {}] as Record<string, string>[]) {
          await problem(await eventsOf(fixture.api, id, headers), 404, 'NOT_FOUND');
        }
        await problem(await eventsOf(fixture.api, 'exp_AAAAAAAAAAAAAAAAAAAAAA', asAlice), 404, 'NOT_FOUND');
        await problem(await eventsOf(fixture.api, id, { 'x-owner': 'intruder' }), 401, 'UNAUTHORIZED');
        const head = await fetch(`${fixture.api}/jobs/${id}/events`, { method: 'HEAD', headers: asAlice });
        expect(head.status).toBe(200);
        expect(head.headers.get('content-type')).toMatch(/^text\/event-stream/);
        expect(await head.text()).toBe('');

        const open = sseReader(await eventsOf(fixture.api, id, asAlice));
        expect((await nextSseEvent(open))?.event).toBe('running');
        const refused = await eventsOf(fixture.api, id, asAlice);
        expect(refused.headers.get('retry-after')).toBe('7');
        const body = await problem(refused, 429, 'TOO_MANY_EVENT_STREAMS');
        expect(body.retryAfterSeconds).toBe(7);
        // Other callers have places of their own.
        const anonymous = await json(
          await postJob(fixture.api, { dataset: 'numbers', format: 'csv' }),
          'Job',
        );
        const theirs = await eventsOf(fixture.api, anonymous.id as string);
        expect(theirs.status).toBe(200);
        await theirs.text();

        // Cancelling ends the stream with `cancelled`, and its place is free again.
        const cancelled = await fetch(`${fixture.api}/jobs/${id}/cancel`, {
          method: 'POST',
          headers: asAlice,
        });
        expect(cancelled.status).toBe(200);
        await cancelled.arrayBuffer();
        let last: SseMessage | undefined;
        for (let message = await nextSseEvent(open); message; message = await nextSseEvent(open))
          last = message;
        expect(last?.event).toBe('cancelled');
        const after = sseReader(await eventsOf(fixture.api, id, asAlice));
        expect((await nextSseEvent(after))?.event).toBe('cancelled');
        expect(await nextSseEvent(after)).toBeUndefined();
      });
    });

    describe('owners', () => {
      it('hides another owner’s job: get, download, delete, list', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        const asAlice = { 'x-owner': 'alice' };
        const mine = await fetch(`${fixture.api}/jobs/${job.id}/download`, { headers: asAlice });
        expect(mine.status).toBe(200);
        // The data, not the job's manifest (`<id>.json` sits next to the file).
        expect(JSON.parse(await mine.text())).toEqual([{ secret: 'only for my owner' }]);
        for (const headers of [{ 'x-owner': 'bob' }, {}] as Record<string, string>[]) {
          await problem(await fetch(`${fixture.api}/jobs/${job.id}`, { headers }), 404, 'NOT_FOUND');
          await problem(await fetch(`${fixture.api}/jobs/${job.id}/download`, { headers }), 404, 'NOT_FOUND');
          await problem(
            await fetch(`${fixture.api}/jobs/${job.id}`, { method: 'DELETE', headers }),
            404,
            'NOT_FOUND',
          );
          const list = await json(await fetch(`${fixture.api}/jobs`, { headers }), 'JobList');
          expect(list.jobs).toEqual([]);
        }
        const still = await json(await fetch(`${fixture.api}/jobs/${job.id}`, { headers: asAlice }), 'Job');
        expect(still.status).toBe('succeeded');
      });

      it('keeps another owner from cancelling a running job', async () => {
        const { api, manager } = await setup();
        const started = nextEvent(manager, 'job:started');
        const job = await json(
          await postJob(api, { dataset: 'blocking', format: 'csv' }, { 'x-owner': 'alice' }),
          'Job',
        );
        await started;
        await problem(
          await fetch(`${api}/jobs/${job.id}`, { method: 'DELETE', headers: { 'x-owner': 'bob' } }),
          404,
          'NOT_FOUND',
        );
        expect(manager.inFlight).toBe(1);
        expect((await manager.get(job.id as string, { owner: 'alice' })).status).toBe('running');
      });
    });

    describe('signed download links', () => {
      it('downloads without identify until the link expires', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        const expires = Math.floor(fixture.clock.now / 1000) + 600;
        const path = signDownloadPath(SECRET, { jobId: job.id, owner: 'alice', expires, prefix: '/export' });
        const response = await fetch(`${fixture.server.url}${path}`);
        expect(response.status).toBe(200);
        expect(JSON.parse(await response.text())).toEqual([{ secret: 'only for my owner' }]);
        fixture.clock.now += 601_000;
        const expired = await problem(await fetch(`${fixture.server.url}${path}`), 403, 'FORBIDDEN');
        expect(expired.detail).toMatch(/expired/);
      });

      it('refuses an altered link with 403', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        const expires = Math.floor(fixture.clock.now / 1000) + 600;
        const path = signDownloadPath(SECRET, { jobId: job.id, owner: 'alice', expires, prefix: '/export' });
        const url = new URL(`${fixture.server.url}${path}`);
        const altered = [
          (u: URL) => u.searchParams.set('owner', 'bob'),
          (u: URL) => u.searchParams.set('expires', String(expires + 3600)),
          (u: URL) => {
            const sig = u.searchParams.get('sig')!;
            u.searchParams.set('sig', `${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`);
          },
          (u: URL) => u.searchParams.delete('sig'),
          (u: URL) => u.searchParams.set('sig', 'short'),
          // The same numbers, written differently: still not the link that was signed.
          (u: URL) => u.searchParams.set('expires', `000${expires}`),
          (u: URL) => u.searchParams.set('expires', `0${expires}`),
          // The last of 43 base64url characters carries 4 bits of the HMAC and 2 unused ones:
          // the 3 other characters that decode to the same bytes are not the signature either.
          ...sameBytesSignatures(new URL(`${fixture.server.url}${path}`).searchParams.get('sig')!).map(
            (sig) => (u: URL) => u.searchParams.set('sig', sig),
          ),
        ];
        expect(altered).toHaveLength(10);
        for (const alter of altered) {
          const copy = new URL(url);
          alter(copy);
          await problem(await fetch(copy), 403, 'FORBIDDEN');
        }
        // Signed for another job: the signature does not carry over.
        const other = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        await problem(
          await fetch(`${fixture.server.url}${path.replace(job.id, other.id)}`),
          403,
          'FORBIDDEN',
        );
      });

      it('refuses signed links when signing is not configured', async () => {
        const fixture = await setup({ routes: { signing: undefined } });
        const job = await finishedJob(fixture, { dataset: 'owned', format: 'json' }, 'alice');
        const path = signDownloadPath(SECRET, {
          jobId: job.id,
          owner: 'alice',
          expires: Math.floor(Date.now() / 1000) + 600,
        });
        await problem(await fetch(`${fixture.server.url}${path}`), 403, 'FORBIDDEN');
      });
    });

    describe('binary formats: xlsx and parquet', () => {
      it('streams an XLSX workbook of the rows, with its media type and extension', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/stream/numbers?format=xlsx&count=3&filename=three`);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toBe(
          'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
        );
        expect(response.headers.get('content-disposition')).toBe('attachment; filename="three.xlsx"');
        const files = unzipSync(new Uint8Array(await response.arrayBuffer()));
        expect(Object.keys(files)).toContain('xl/workbook.xml');
        const sheet = new TextDecoder().decode(files['xl/worksheets/sheet1.xml']);
        // The header and three rows: typed numbers, inline strings.
        expect(sheet).toContain(
          '<row r="1"><c r="A1" s="1" t="inlineStr"><is><t xml:space="preserve">id</t>',
        );
        expect(sheet).toContain(
          '<row r="4"><c r="A4"><v>2</v></c><c r="B4" t="inlineStr"><is><t xml:space="preserve">row 2</t></is></c></row>',
        );
        expect(sheet).not.toContain('<row r="5"');
      });

      it('writes a Parquet job file, served with its media type and extension', async () => {
        const fixture = await setup();
        const job = await finishedJob(fixture, {
          dataset: 'numbers',
          format: 'parquet',
          params: { count: 5 },
        });
        const download = await fetch(`${fixture.api}/jobs/${job.id}/download`);
        expect(download.status).toBe(200);
        expect(download.headers.get('content-type')).toBe('application/vnd.apache.parquet');
        expect(download.headers.get('content-disposition')).toMatch(
          /^attachment; filename="numbers-.*\.parquet"$/,
        );
        const bytes = Buffer.from(await download.arrayBuffer());
        expect(bytes.subarray(0, 4).toString('latin1')).toBe('PAR1');
        expect(bytes.subarray(-4).toString('latin1')).toBe('PAR1');
      });

      it('refuses gzip for both with a 422 naming compression, before any slot is taken', async () => {
        const fixture = await setup();
        for (const format of ['xlsx', 'parquet']) {
          const streamed = await problem(
            await fetch(`${fixture.api}/stream/numbers?format=${format}&compression=gzip`),
            422,
            'VALIDATION_FAILED',
          );
          expect(streamed.detail).toMatch(new RegExp(`^Expected compression "none" for ${format}`));
          const job = await problem(
            await postJob(fixture.api, { dataset: 'numbers', format, compression: 'gzip' }),
            422,
            'VALIDATION_FAILED',
          );
          expect(job.detail).toBe(streamed.detail);
        }
        expect(fixture.manager.inFlight).toBe(0);
      });

      it('refuses parquet for a dataset without typed columns with a 422 that says so', async () => {
        const { api } = await setup();
        const refused = await problem(
          await fetch(`${api}/stream/blocking?format=parquet`),
          422,
          'UNKNOWN_FORMAT',
        );
        expect(refused.detail).toMatch(/parquet needs typed columns/);
      });
    });

    describe('GET /stream/:dataset', () => {
      it('streams an export with download headers', async () => {
        const { api } = await setup();
        const response = await fetch(
          `${api}/stream/numbers?format=csv&columns=id,name&count=3&filename=three`,
        );
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/^text\/csv/);
        expect(response.headers.get('content-disposition')).toBe('attachment; filename="three.csv"');
        expect(response.headers.get('cache-control')).toBe('no-store');
        expect(response.headers.get('x-content-type-options')).toBe('nosniff');
        expect((await response.text()).trim().split('\n')).toEqual([
          'id,Name',
          '0,row 0',
          '1,row 1',
          '2,row 2',
        ]);
      });

      it('keeps the extension of a file name that has nothing else left once made safe', async () => {
        const fixture = await setup();
        const cases: [string, string][] = [
          ['filename=...', 'attachment; filename="download.csv"'],
          ['filename=%20', 'attachment; filename="download.csv"'],
          ['filename=%22.%22', 'attachment; filename="download.csv"'],
          ['filename=..%2F..&format=ndjson', 'attachment; filename="download.ndjson"'],
          ['filename=...&compression=gzip', 'attachment; filename="download.csv.gz"'],
          ['filename=..report', 'attachment; filename="report.csv"'],
          ['filename=.csv', 'attachment; filename="download.csv"'],
        ];
        for (const [query, disposition] of cases) {
          const response = await fetch(`${fixture.api}/stream/numbers?count=1&${query}`);
          expect(response.status, query).toBe(200);
          expect(response.headers.get('content-disposition'), query).toBe(disposition);
          await response.arrayBuffer();
        }
        const job = await finishedJob(fixture, { dataset: 'numbers', format: 'json', filename: ' ' });
        const download = await fetch(`${fixture.api}/jobs/${job.id}/download`);
        expect(download.headers.get('content-disposition')).toBe('attachment; filename="download.json"');
        await download.arrayBuffer();
      });

      it('answers a source that fails before its first row with a problem, not a cut 200', async () => {
        const { api, manager } = await setup();
        const reported = vi.fn();
        manager.on('http:error', reported);
        manager.defineDataset('broken', {
          source: () => {
            throw new Error('connection refused by db.internal:5432');
          },
        });
        manager.defineDataset('broken-later', {
          // Opens fine, then fails on the first pull.
          source: () => ({
            [Symbol.asyncIterator]: () => ({
              next: async () => {
                throw new Error('cursor failed at /var/lib/secret');
              },
            }),
          }),
        });
        for (const dataset of ['broken', 'broken-later']) {
          const response = await fetch(`${api}/stream/${dataset}?format=ndjson`);
          const details = await problem(response, 502, 'SOURCE_FAILED');
          // The source's own message (hosts, paths) never reaches the client.
          expect(JSON.stringify(details)).not.toMatch(/db\.internal|secret/);
        }
        expect(manager.inFlight).toBe(0);
        expect(reported).toHaveBeenCalledTimes(2);
      });

      it('streams NDJSON, gzip-compressed on request', async () => {
        const { api } = await setup();
        const response = await fetch(`${api}/stream/numbers?format=ndjson&count=2&compression=gzip`);
        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toBe('application/gzip');
        const text = gunzipSync(Buffer.from(await response.arrayBuffer())).toString('utf8');
        expect(
          text
            .trim()
            .split('\n')
            .map((line) => JSON.parse(line)),
        ).toEqual([
          { id: 0, name: 'row 0' },
          { id: 1, name: 'row 1' },
        ]);
      });

      it('compresses on the wire for Accept-Encoding, with Content-Encoding and Vary (not a .gz download)', async () => {
        const { api } = await setup();
        const url = `${api}/stream/numbers?format=csv&count=3&filename=three`;
        const csv = 'id,Name\nrow\n'.replace('row\n', '0,row 0\n1,row 1\n2,row 2\n');
        const get = (acceptEncoding: string) =>
          rawRequest(url, { method: 'GET', headers: { 'accept-encoding': acceptEncoding }, chunks: [] });
        const gzipped = await get('gzip');
        expect(gzipped.status).toBe(200);
        expect(gzipped.headers['content-encoding']).toBe('gzip');
        expect(gzipped.headers.vary).toMatch(/accept-encoding/i);
        // The representation is still the CSV file: its type and name, only coded for the wire.
        expect(gzipped.headers['content-type']).toMatch(/^text\/csv/);
        expect(gzipped.headers['content-disposition']).toBe('attachment; filename="three.csv"');
        expect(gunzipSync(gzipped.body).toString('utf8')).toBe(csv);
        // q-values: refused gzip, unknown codings and a bare identity get the bytes as they are.
        for (const acceptEncoding of ['gzip;q=0, identity', 'br', 'identity', 'gzip;q=0, *;q=0']) {
          const plain = await get(acceptEncoding);
          expect(plain.headers['content-encoding'], acceptEncoding).toBeUndefined();
          expect(plain.headers.vary, acceptEncoding).toMatch(/accept-encoding/i);
          expect(plain.body.toString('utf8'), acceptEncoding).toBe(csv);
        }
        const zstd = await get('gzip;q=0.5, zstd');
        if (zstdDecompress) {
          expect(zstd.headers['content-encoding']).toBe('zstd');
          expect(zstdDecompress(zstd.body).toString('utf8')).toBe(csv);
          // At equal preference gzip, which every client and proxy reads, goes first.
          expect((await get('zstd, gzip')).headers['content-encoding']).toBe('gzip');
        } else {
          expect(zstd.headers['content-encoding']).toBe('gzip');
          expect(gunzipSync(zstd.body).toString('utf8')).toBe(csv);
        }
        // fetch asks for gzip by itself and decodes it: the text is the CSV.
        const fetched = await fetch(url);
        expect(fetched.headers.get('content-encoding')).toBe('gzip');
        expect(await fetched.text()).toBe(csv);
        // A .gz file is the representation itself: never coded a second time.
        const file = await rawRequest(`${url}&compression=gzip`, {
          method: 'GET',
          headers: { 'accept-encoding': 'gzip' },
          chunks: [],
        });
        expect(file.headers['content-encoding']).toBeUndefined();
        expect(file.headers['content-type']).toBe('application/gzip');
        expect(file.headers['content-disposition']).toBe('attachment; filename="three.csv.gz"');
        expect(gunzipSync(file.body).toString('utf8')).toBe(csv);
        // HEAD tells the same coding as the GET.
        const head = await rawRequest(url, {
          method: 'HEAD',
          headers: { 'accept-encoding': 'gzip' },
          chunks: [],
        });
        expect(head.headers['content-encoding']).toBe('gzip');
        expect(head.headers.vary).toMatch(/accept-encoding/i);
      });

      it('sends a slow source’s first rows through wire compression before the source finishes', async () => {
        const { api, release } = await setup();
        const decoders: Record<string, () => NodeJS.ReadWriteStream> = { gzip: () => createGunzip() };
        const createZstd = (zlib as { createZstdDecompress?: () => NodeJS.ReadWriteStream })
          .createZstdDecompress;
        if (createZstd) decoders.zstd = createZstd;
        for (const [encoding, decoder] of Object.entries(decoders)) {
          const firstRows = new Promise<{ encoding: string | undefined; text: string }>((resolve, reject) => {
            const request = httpRequest(
              `${api}/stream/blocking?format=csv`,
              { headers: { 'accept-encoding': encoding } },
              (response) => {
                let text = '';
                const decode = decoder();
                decode.on('data', (chunk: Buffer) => {
                  text += chunk.toString('utf8');
                  // Only flushed bytes can be decoded while the source still waits on the gate.
                  if (text === 'id\n1\n') {
                    resolve({ encoding: response.headers['content-encoding'], text });
                    request.destroy();
                  }
                });
                decode.on('error', reject);
                response.pipe(decode);
              },
            );
            request.on('error', () => {});
            request.end();
          });
          expect(await firstRows).toEqual({ encoding, text: 'id\n1\n' });
        }
        release();
      });

      it('takes the time zone, date format and CSV options in the query and the job body', async () => {
        const fixture = await setup();
        const { api, manager } = fixture;
        manager.defineDataset('clock-changes', {
          columns: [
            { name: 'at', type: 'date' },
            { name: 'amount', type: 'number' },
          ],
          // The instants of the 2025 summer-time start in Berlin and in New York.
          source: () => [
            { at: new Date('2025-03-30T01:00:00Z'), amount: 1.5 },
            { at: '2025-03-09T07:00:00Z', amount: -2.25 },
          ],
        });
        const berlin = await fetch(
          `${api}/stream/clock-changes?timeZone=Europe/Berlin&dateFormat=iso-local&csvPreset=excel`,
        );
        expect(berlin.status).toBe(200);
        // Bytes, not text(): a TextDecoder would drop the BOM the preset writes.
        expect(Buffer.from(await berlin.arrayBuffer()).toString('utf8')).toBe(
          '\uFEFFat;amount\r\n2025-03-30 03:00:00;1,5\r\n2025-03-09 08:00:00;-2,25\r\n',
        );
        const newYork = await fetch(`${api}/stream/clock-changes?format=ndjson&timeZone=america/new_york`);
        expect(await newYork.text()).toBe(
          '{"at":"2025-03-29T21:00:00.000-04:00","amount":1.5}\n{"at":"2025-03-09T03:00:00.000-04:00","amount":-2.25}\n',
        );
        const decimal = await fetch(`${api}/stream/clock-changes?decimalSeparator=.&dateFormat=date`);
        expect(await decimal.text()).toBe('at,amount\n2025-03-30,1.5\n2025-03-09,-2.25\n');
        // A job stores its options and runs with them; the same key with another zone is refused.
        const headers = { 'idempotency-key': 'berlin-1' };
        const body = {
          dataset: 'clock-changes',
          format: 'json',
          timeZone: 'Europe/Berlin',
          dateFormat: 'date',
        };
        const created = await postJob(api, body, headers);
        expect(created.status).toBe(202);
        const job = await json(created, 'Job');
        await manager.wait(job.id as string);
        const file = await fetch(`${api}/jobs/${job.id}/download`);
        expect(await file.json()).toEqual([
          { at: '2025-03-30', amount: 1.5 },
          { at: '2025-03-09', amount: -2.25 },
        ]);
        expect((await postJob(api, body, headers)).status).toBe(200);
        await problem(
          await postJob(api, { ...body, timeZone: 'America/New_York' }, headers),
          422,
          'IDEMPOTENCY_KEY_REUSED',
        );
        // Without a zone or format of its own, a date column's text is written as it came.
        const excel = await finishedJob(fixture, {
          dataset: 'clock-changes',
          format: 'csv',
          csvPreset: 'excel',
          decimalSeparator: '.',
        });
        const excelFile = await fetch(`${api}/jobs/${excel.id}/download`);
        expect(Buffer.from(await excelFile.arrayBuffer()).toString('utf8')).toBe(
          '\uFEFFat;amount\r\n2025-03-30T01:00:00.000Z;1.5\r\n2025-03-09T07:00:00Z;-2.25\r\n',
        );
      });

      it('answers 422 naming the field for a bad time zone, date format, CSV option or compression', async () => {
        const { api } = await setup();
        const cases: [string, string][] = [
          ['timeZone=Mars/Olympus', 'timeZone'],
          ['timeZone=', 'timeZone'],
          ['dateFormat=us', 'dateFormat'],
          ['decimalSeparator=%20', 'decimalSeparator'],
          // A decimal comma beside the comma delimiter would be ambiguous: asked, never guessed.
          ['decimalSeparator=,', 'decimalSeparator'],
          ['csvPreset=numbers', 'csvPreset'],
          ['compression=zip', 'compression'],
          ['compression=gzip&compressionLevel=10', 'compressionLevel'],
          ['compression=gzip&compressionLevel=x', 'compressionLevel'],
          ['compressionLevel=1', 'compressionLevel'],
        ];
        for (const [query, field] of cases) {
          const details = await problem(
            await fetch(`${api}/stream/numbers?${query}`),
            422,
            'VALIDATION_FAILED',
          );
          expect(details.field, query).toBe(field);
          expect(details.detail, query).toContain(field);
        }
        const bodies: [Record<string, unknown>, string][] = [
          [{ timeZone: 'Europe/Berlinn' }, 'timeZone'],
          [{ dateFormat: 'locale' }, 'dateFormat'],
          [{ csvPreset: 'numbers' }, 'csvPreset'],
          [{ decimalSeparator: ';' }, 'decimalSeparator'],
          [{ compression: { type: 'gzip', level: 12 } }, 'compression.level'],
          [{ compression: { type: 'brotli' } }, 'compression.type'],
          [{ compression: { type: 'gzip', window: 15 } }, 'compression.window'],
        ];
        for (const [fields, field] of bodies) {
          const details = await problem(
            await postJob(api, { dataset: 'numbers', format: 'csv', ...fields }),
            422,
            'VALIDATION_FAILED',
          );
          expect(details.field, JSON.stringify(fields)).toBe(field);
        }
        const shape = await problem(
          await postJob(api, { dataset: 'numbers', format: 'csv', timeZone: 1 }),
          400,
          'BAD_REQUEST',
        );
        expect(shape.field).toBe('timeZone');
      });

      it('answers 404 for an unknown dataset and 422 for bad params, columns or format', async () => {
        const { api } = await setup();
        await problem(await fetch(`${api}/stream/nope?format=csv`), 404, 'UNKNOWN_DATASET');
        const param = await problem(
          await fetch(`${api}/stream/numbers?format=csv&count=ten`),
          422,
          'INVALID_PARAMS',
        );
        expect(param.field).toBe('params.count');
        await problem(await fetch(`${api}/stream/numbers?format=csv&colour=red`), 422, 'INVALID_PARAMS');
        // Names of Object.prototype are unknown params like any other, not silently dropped.
        for (const name of ['__proto__', 'constructor', 'hasOwnProperty']) {
          const details = await problem(
            await fetch(`${api}/stream/numbers?format=csv&${name}=1`),
            422,
            'INVALID_PARAMS',
          );
          expect(details.field).toBe(`params.${name}`);
        }
        const inBody = await problem(
          await postJob(api, JSON.parse('{"dataset":"numbers","format":"csv","params":{"__proto__":1}}')),
          422,
          'INVALID_PARAMS',
        );
        expect(inBody.field).toBe('params.__proto__');
        await problem(await fetch(`${api}/stream/numbers?format=csv&columns=id,nope`), 422, 'UNKNOWN_COLUMN');
        await problem(await fetch(`${api}/stream/numbers?format=xml`), 422, 'UNKNOWN_FORMAT');
        await problem(await fetch(`${api}/stream/numbers?format=csv&format=json`), 400, 'BAD_REQUEST');
      });

      it('answers exactly one of three requests with 429 when two slots are held', async () => {
        const { api, manager, release } = await setup();
        const bothStarted = events(manager, 'stream:started', 2);
        const rejected = nextEvent(manager, 'rejected');
        const requests = [1, 2, 3].map(() =>
          fetch(`${api}/stream/blocking?format=csv`).then(async (response) => ({
            status: response.status,
            retryAfter: response.headers.get('retry-after'),
            body: await response.text(),
            contentType: response.headers.get('content-type'),
          })),
        );
        await Promise.all([bothStarted, rejected]);
        expect(manager.inFlight).toBe(2);
        release();
        const responses = await Promise.all(requests);
        expect(responses.map((response) => response.status).sort()).toEqual([200, 200, 429]);
        const refused = responses.find((response) => response.status === 429)!;
        expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(1);
        expect(refused.contentType).toBe('application/problem+json');
        const body = JSON.parse(refused.body) as Record<string, unknown>;
        check('Problem', body);
        expect(body).toMatchObject({
          status: 429,
          code: 'BACKPRESSURE',
          retryAfterSeconds: Number(refused.retryAfter),
        });
        for (const response of responses.filter((r) => r.status === 200)) {
          expect(response.body.trim().split('\n')).toEqual(['id', '1', '2']);
        }
      });

      it('frees the slot at once when the client goes away mid-export', async () => {
        const { api, manager } = await setup({ manager: { maxConcurrent: 1 } });
        const reported = vi.fn();
        manager.on('http:error', reported);
        const started = nextEvent(manager, 'stream:started');
        const finished = nextEvent(manager, 'stream:finished');
        const request = httpRequest(`${api}/stream/blocking?format=csv`);
        request.on('error', () => {});
        request.end();
        await started;
        expect(manager.inFlight).toBe(1);
        request.destroy();
        const [summary] = await finished;
        expect(summary.outcome).not.toBe('succeeded');
        expect(manager.inFlight).toBe(0);
        // The blocking source never got to finish, yet the only slot is free again.
        const next = await fetch(`${api}/stream/numbers?format=csv&count=1`);
        expect(next.status).toBe(200);
        expect((await next.text()).trim().split('\n')).toEqual(['id,Name', '0,row 0']);
        // A client that leaves is not a server failure.
        expect(reported).not.toHaveBeenCalled();
      });

      it('answers 503 while shutting down', async () => {
        const { api, manager } = await setup();
        await manager.close();
        const response = await fetch(`${api}/stream/numbers?format=csv`);
        await problem(response, 503, 'SHUTTING_DOWN');
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      });
    });
  });
}
