// Time limits of an export: a client that stops reading (CLIENT_STALLED), a source that
// trickles bytes but no rows (SOURCE_IDLE), an export that runs too long (EXPORT_TIMEOUT).
// Limits are small and the assertions are about codes, slots, files and metrics: never about
// how long anything took.
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { createExportRouter } from '@spark-export/express';
import { exportPlugin } from '@spark-export/fastify';
import { exportMiddleware } from '@spark-export/koa';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { TimeLimitError } from '../src/errors.js';
import type { ExportManager, ExportManagerOptions } from '../src/export-manager.js';
import { createExportHandler, toNodeHandler } from '../src/http/index.js';
import { type DatasetDefinition, fromJsonArray } from '../src/index.js';
import {
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_STALL_TIMEOUT_MS,
  timeLimits,
} from '../src/pipeline/time-limits.js';
import type { ExportSummary } from '../src/types.js';
import { cleanup, createManager, listen, tempDir } from './http.helpers.js';

afterEach(cleanup);

/** Rows as fast as they are pulled, forever: only the destination can slow this export down. */
function* endless() {
  for (let id = 0; ; id++) yield { id, text: 'x'.repeat(200) };
}

/** The files of a jobs directory other than manifests: a failed job must leave none. */
async function dataFiles(directory: string): Promise<string[]> {
  return (await readdir(directory)).filter((name) => !name.endsWith('.json'));
}

/** Resolves with the summary of the next stream that finishes. */
function nextFinished(manager: ExportManager): Promise<ExportSummary> {
  return once(manager, 'stream:finished').then(([summary]) => summary as ExportSummary);
}

async function metric(manager: ExportManager, name: string, labels: Record<string, string>) {
  const values = (await manager.metrics!.registry.getSingleMetric(name)!.get()).values;
  return values.find((value) => Object.entries(labels).every(([key, v]) => value.labels[key] === v))?.value;
}

type Start = (manager: ExportManager) => Promise<{ url: string; close(): Promise<void> }>;

const servers: Record<string, Start> = {
  'node:http': (manager) => listen(createServer(toNodeHandler(createExportHandler(manager)))),
  express: (manager) => {
    const app = express();
    app.use('/export', createExportRouter(manager));
    return listen(createServer(app));
  },
  koa: (manager) => {
    const app = new Koa();
    app.silent = true;
    app.use(exportMiddleware(manager));
    return listen(createServer(app.callback()));
  },
  fastify: async (manager) => {
    const app = Fastify();
    await app.register(exportPlugin, { manager });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url,
      close: async () => {
        const closing = app.close();
        app.server.closeAllConnections();
        await closing;
      },
    };
  },
};

/** Sends a GET on a raw socket and then never reads: the kernel buffers fill, then Node's. */
async function requestWithoutReading(url: string, path: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  await once(socket, 'connect');
  socket.pause();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
  return socket;
}

describe.each(Object.entries(servers))('a client that stops reading (%s)', (_name, start) => {
  it('fails the stream with CLIENT_STALLED and frees its slot for the next export', async () => {
    const manager = await createManager({ maxConcurrent: 1, stallTimeoutMs: 100, metrics: {} });
    manager.defineDataset('endless', { source: endless });
    const server = await start(manager);
    const finished = nextFinished(manager);
    const socket = await requestWithoutReading(server.url, '/export/stream/endless?format=ndjson');
    try {
      const summary = await finished;
      expect(summary.outcome).toBe('failed');
      expect(summary.error).toBeInstanceOf(TimeLimitError);
      expect(summary.error).toMatchObject({ code: 'CLIENT_STALLED', statusCode: 408, timeoutMs: 100 });
      expect(summary.bytes).toBeGreaterThan(0);
      expect(manager.inFlight).toBe(0);
      expect(
        await metric(manager, 'export_jobs_completed_total', { dataset: 'endless', outcome: 'failed' }),
      ).toBe(1);
      // The only slot is free again: the next export runs instead of getting a 429.
      const next = await fetch(`${server.url}/export/stream/numbers?format=csv`);
      expect(next.status).toBe(200);
      expect(await next.text()).toBe('n\n1\n2\n3\n');
    } finally {
      socket.destroy();
      await server.close();
    }
  });
});

describe('stall limit', () => {
  it('does not touch a client that reads, even with a small limit', async () => {
    const manager = await createManager({ stallTimeoutMs: 20 });
    manager.defineDataset('many', {
      *source() {
        for (let id = 0; id < 50_000; id++) yield { id, text: 'x'.repeat(100) };
      },
    });
    const server = await start(manager);
    try {
      const response = await fetch(`${server.url}/export/stream/many?format=ndjson`);
      expect(response.status).toBe(200);
      expect((await response.text()).trim().split('\n')).toHaveLength(50_000);
    } finally {
      await server.close();
    }
  });

  it('is on by default for streams, and never applies to jobs (they write to disk)', () => {
    expect(timeLimits({}, {}, 'stream').stallTimeoutMs).toBe(DEFAULT_STALL_TIMEOUT_MS);
    expect(timeLimits({}, { stallTimeoutMs: 5 }, 'job').stallTimeoutMs).toBe(0);
    expect(timeLimits({}, { stallTimeoutMs: 0 }, 'stream').stallTimeoutMs).toBe(0);
  });

  it('is checked when the manager is created', async () => {
    await expect(createManager({ stallTimeoutMs: -1 })).rejects.toThrow(
      new TypeError(
        'Expected stallTimeoutMs to be an integer >= 0 (milliseconds, 0 for no limit), got -1 (number)',
      ),
    );
  });
});

function start(manager: ExportManager) {
  return servers['node:http']!(manager);
}

/**
 * An upstream that sends the start of a JSON array and then one space a tick, forever: bytes
 * keep coming (a per-chunk timeout never fires), rows never do. `closed` resolves when the
 * export hangs up on it.
 */
async function tricklingUpstream(): Promise<{
  url: string;
  closed: Promise<void>;
  close(): Promise<void>;
}> {
  let hungUp!: () => void;
  const closed = new Promise<void>((resolve) => {
    hungUp = resolve;
  });
  const server: Server = createServer((request: IncomingMessage, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write('[{"id":1,"note":');
    const timer = setInterval(() => response.write(' '), 5);
    request.socket.once('close', () => {
      clearInterval(timer);
      hungUp();
    });
  });
  const listening = await listen(server);
  return { url: listening.url, closed, close: listening.close };
}

/** A source over the trickling upstream, the way a dataset over an HTTP API is written. */
function upstreamSource(url: string): DatasetDefinition['source'] {
  return async (_params, { signal }) => {
    const response = await fetch(url, { signal });
    return fromJsonArray(Readable.fromWeb(response.body as never));
  };
}

/** One row every few milliseconds, forever: never idle, never done. */
async function* slowRows(signal: AbortSignal) {
  for (let id = 0; !signal.aborted; id++) {
    yield { id };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

class Sink extends Writable {
  override _write(_chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    callback();
  }
}

async function jobFailure(manager: ExportManager, dataset: string) {
  const job = await manager.start({ dataset, format: 'csv' });
  return manager.wait(job.id);
}

describe('a source that trickles bytes but no rows', () => {
  it('ends a job with SOURCE_IDLE, hangs up on the upstream, leaves no file and counts it failed', async () => {
    const upstream = await tricklingUpstream();
    const directory = await tempDir();
    const manager = await createManager({ directory, idleTimeoutMs: 60, metrics: {} });
    manager.defineDataset('trickle', { source: upstreamSource(upstream.url) });
    try {
      const job = await jobFailure(manager, 'trickle');
      expect(job.status).toBe('failed');
      expect(job.error).toEqual({
        code: 'SOURCE_IDLE',
        message: 'The data source sent no rows for 60 ms and the export was stopped',
      });
      await upstream.closed;
      expect(manager.inFlight).toBe(0);
      expect(await dataFiles(directory)).toEqual([]);
      expect(
        await metric(manager, 'export_jobs_completed_total', { dataset: 'trickle', outcome: 'failed' }),
      ).toBe(1);
    } finally {
      await upstream.close();
    }
  });

  it('answers a stream with a 504 SOURCE_IDLE problem before its first byte', async () => {
    const upstream = await tricklingUpstream();
    const manager = await createManager({ idleTimeoutMs: 60, maxConcurrent: 1 });
    manager.defineDataset('trickle', { source: upstreamSource(upstream.url) });
    const server = await start(manager);
    try {
      const response = await fetch(`${server.url}/export/stream/trickle?format=csv`);
      expect(response.status).toBe(504);
      expect(await response.json()).toMatchObject({ code: 'SOURCE_IDLE', status: 504 });
      await upstream.closed;
      expect(manager.inFlight).toBe(0);
    } finally {
      await server.close();
      await upstream.close();
    }
  });

  it('does not count time spent waiting for a slow destination as idle', async () => {
    const manager = await createManager({ idleTimeoutMs: 20, stallTimeoutMs: 0 });
    manager.defineDataset('rows', {
      *source() {
        for (let id = 0; id < 5_000; id++) yield { id, text: 'x'.repeat(100) };
      },
    });
    let held = 0;
    // Holds the first write for ten times the idle limit, then drains everything at once.
    const slow = new Writable({
      highWaterMark: 1,
      write(_chunk, _encoding, callback) {
        if (held++ === 0) setTimeout(callback, 200);
        else callback();
      },
    });
    await expect(manager.stream({ dataset: 'rows', format: 'ndjson' }, slow)).resolves.toMatchObject({
      rows: 5_000,
    });
  });

  it('takes a dataset’s own idleTimeoutMs over the manager’s, and 0 turns it off', async () => {
    const manager = await createManager({ idleTimeoutMs: 10 });
    manager.defineDataset('never', {
      idleTimeoutMs: 0,
      maxDurationMs: 80,
      source: () => new Readable({ objectMode: true, read() {} }),
    });
    const job = await jobFailure(manager, 'never');
    expect(job.error?.code).toBe('EXPORT_TIMEOUT');
  });

  it('uses a default that is on', () => {
    expect(timeLimits({}, {}, 'job').idleTimeoutMs).toBe(DEFAULT_IDLE_TIMEOUT_MS);
    expect(timeLimits({ idleTimeoutMs: 7 }, { idleTimeoutMs: 9 }, 'job').idleTimeoutMs).toBe(7);
  });
});

describe('an export that runs too long', () => {
  const options: ExportManagerOptions = { maxDurationMs: 80, idleTimeoutMs: 0, metrics: {} };

  it('ends a job whose rows keep coming with EXPORT_TIMEOUT, removes its partial file, counts it failed', async () => {
    const directory = await tempDir();
    const manager = await createManager({ ...options, directory });
    manager.defineDataset('slow', { source: (_params, { signal }) => slowRows(signal) });
    const job = await jobFailure(manager, 'slow');
    expect(job.status).toBe('failed');
    expect(job.error).toEqual({
      code: 'EXPORT_TIMEOUT',
      message: 'The export took longer than its limit of 80 ms and was stopped',
    });
    expect(job.file).toBeNull();
    expect(manager.inFlight).toBe(0);
    expect(await dataFiles(directory)).toEqual([]);
    expect(await metric(manager, 'export_jobs_completed_total', { dataset: 'slow', outcome: 'failed' })).toBe(
      1,
    );
  });

  it('ends a stream with EXPORT_TIMEOUT once rows were sent, and frees the slot', async () => {
    const manager = await createManager({ ...options, maxConcurrent: 1 });
    manager.defineDataset('slow', { source: (_params, { signal }) => slowRows(signal) });
    const error = await manager.stream({ dataset: 'slow', format: 'ndjson' }, new Sink()).catch((e) => e);
    expect(error).toBeInstanceOf(TimeLimitError);
    expect(error).toMatchObject({ code: 'EXPORT_TIMEOUT', statusCode: 504 });
    expect(manager.inFlight).toBe(0);
  });

  it('covers a source() call that never returns, and closes what it returns later', async () => {
    const manager = await createManager({ ...options, maxConcurrent: 1 });
    let release!: () => void;
    const late = new Readable({ objectMode: true, read() {} });
    manager.defineDataset('hung', {
      maxDurationMs: 50,
      source: () =>
        new Promise<Readable>((resolve) => {
          release = () => resolve(late);
        }),
    });
    const job = await jobFailure(manager, 'hung');
    expect(job.error?.code).toBe('EXPORT_TIMEOUT');
    expect(manager.inFlight).toBe(0);
    release();
    await once(late, 'close');
    expect(late.destroyed).toBe(true);
  });

  it('takes a dataset’s own maxDurationMs over the manager’s', async () => {
    const manager = await createManager({ idleTimeoutMs: 0 });
    manager.defineDataset('slow', { maxDurationMs: 40, source: (_params, { signal }) => slowRows(signal) });
    expect((await jobFailure(manager, 'slow')).error?.code).toBe('EXPORT_TIMEOUT');
  });

  it('is checked when a dataset is defined', async () => {
    const manager = await createManager();
    expect(() => manager.defineDataset('bad', { maxDurationMs: 1.5, source: () => [] })).toThrow(
      new TypeError(
        'Expected dataset "bad" maxDurationMs to be an integer >= 0 (milliseconds, 0 for no limit), got 1.5 (number)',
      ),
    );
  });
});
