import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { gunzipSync, constants as zlibConstants } from 'node:zlib';
import { parse } from 'csv-parse/sync';
import type { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DatasetDefinition, Row } from '../src/dataset.js';
import {
  BackpressureError,
  CancelledError,
  type ExportError,
  NotFoundError,
  SourceError,
  ValidationError,
  WriteError,
} from '../src/errors.js';
import { ExportManager, type ExportManagerOptions } from '../src/export-manager.js';
import type { FormatName } from '../src/formats/types.js';
import type { ExportRequest } from '../src/request.js';
import { fromJsonArray, fromNdjson } from '../src/sources.js';
import { deferred } from '../src/testing/deferred.js';
import type { ExportSummary } from '../src/types.js';

// ---- helpers ----------------------------------------------------------------------------

/** Lets I/O callbacks and `setImmediate` continuations run: event-loop turns, not a clock. */
async function turns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** An in-memory destination that keeps everything written to it. */
class MemorySink extends Writable {
  readonly chunks: Buffer[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk);
    callback();
  }

  get bytes(): number {
    return this.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/** Rejects unless `promise` rejects; returns the error. */
async function rejection(promise: Promise<unknown>): Promise<ExportError> {
  try {
    await promise;
  } catch (error) {
    return error as ExportError;
  }
  throw new Error('expected a rejection, the promise fulfilled');
}

/** The value of one series of a counter or gauge; `undefined` when the series does not exist. */
async function sample(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  const { values } = await metric.get();
  const wanted = Object.entries(labels);
  return values.find(
    (value) =>
      Object.keys(value.labels).length === wanted.length &&
      wanted.every(([key, expected]) => value.labels[key] === expected),
  )?.value;
}

function registryOf(manager: ExportManager): Registry {
  if (!manager.metrics) throw new Error('the manager has no metrics');
  return manager.metrics.registry;
}

function people(count: number): Row[] {
  return Array.from({ length: count }, (_, index) => ({
    id: index + 1,
    name: `person ${index + 1}`,
    active: index % 2 === 0,
  }));
}

const columns = [{ name: 'id' }, { name: 'name', label: 'Full name' }, { name: 'active' }];

function manager(
  datasets: Record<string, DatasetDefinition>,
  options: Pick<
    ExportManagerOptions,
    'maxConcurrent' | 'maxQueued' | 'batchSize' | 'maxConcurrentPerOwner'
  > = {},
) {
  const created = new ExportManager({ datasets, ...options });
  created.on('stream:finished', (summary) => finished.push(summary));
  return created;
}

let finished: ExportSummary[] = [];
let directory: string;

beforeEach(async () => {
  finished = [];
  directory = await mkdtemp(join(tmpdir(), 'spark-export-stream-'));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

function parseNdjson(text: string): unknown[] {
  expect(text.endsWith('\n')).toBe(true);
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line));
}

/** Reads an export's text back into rows of strings as a user's tool would. */
function readBack(format: FormatName, text: string): unknown[] {
  if (format === 'csv') return parse(text, { columns: true });
  if (format === 'json') return JSON.parse(text);
  return parseNdjson(text);
}

const expectedRows = (count: number, format: FormatName) =>
  people(count).map((row) =>
    format === 'csv'
      ? { id: String(row.id), 'Full name': row.name, active: String(row.active) }
      : { id: row.id, name: row.name, active: row.active },
  );

// ---- formats and destinations -------------------------------------------------------------

describe('stream(): formats and destinations', () => {
  it.each(['csv', 'json', 'ndjson'] as const)(
    'writes %s to a real file that reads back row for row',
    async (format) => {
      const exports = manager({ people: { columns, source: () => people(1234) } });
      const path = join(directory, `people.${format}`);

      const result = await exports.stream({ dataset: 'people', format }, createWriteStream(path));

      const file = await readFile(path);
      expect(readBack(format, file.toString('utf8'))).toEqual(expectedRows(1234, format));
      expect(result).toEqual({ rows: 1234, bytes: file.length });
      expect(exports.inFlight).toBe(0);
    },
  );

  it.each(['csv', 'json', 'ndjson'] as const)('gzips %s so that zlib reads it back', async (format) => {
    const exports = manager({ people: { columns, source: () => people(3000) } });
    const path = join(directory, `people.${format}.gz`);

    const result = await exports.stream(
      { dataset: 'people', format, compression: 'gzip' },
      createWriteStream(path),
    );

    const compressed = await readFile(path);
    expect(compressed.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(readBack(format, gunzipSync(compressed).toString('utf8'))).toEqual(expectedRows(3000, format));
    // Bytes are counted after compression: what went over the wire or onto the disk.
    expect(result).toEqual({ rows: 3000, bytes: compressed.length });
  });

  it('writes only the requested columns, in the requested order, into an in-memory Writable', async () => {
    const exports = manager({ people: { columns, source: () => people(3) } });
    const sink = new MemorySink();

    await exports.stream({ dataset: 'people', format: 'csv', columns: 'name,id' }, sink);

    expect(sink.text()).toBe('Full name,id\nperson 1,1\nperson 2,2\nperson 3,3\n');
    expect(sink.writableFinished).toBe(true);
  });

  it('counts rows and bytes in the result, the stream:finished event and the metrics', async () => {
    const exports = manager({ people: { columns, source: () => people(2500) } }, { batchSize: 100 });
    const sink = new MemorySink();

    const result = await exports.stream({ dataset: 'people', format: 'ndjson' }, sink);

    expect(result).toEqual({ rows: 2500, bytes: sink.bytes });
    expect(finished).toHaveLength(1);
    expect(finished[0]).toMatchObject({
      dataset: 'people',
      format: 'ndjson',
      rows: 2500,
      bytes: sink.bytes,
      outcome: 'succeeded',
    });
    const registry = registryOf(exports);
    const labels = { dataset: 'people', format: 'ndjson' };
    expect(await sample(registry, 'export_rows_total', labels)).toBe(2500);
    expect(await sample(registry, 'export_bytes_total', labels)).toBe(sink.bytes);
    expect(await sample(registry, 'export_jobs_started_total', labels)).toBe(1);
    expect(await sample(registry, 'export_jobs_completed_total', { ...labels, outcome: 'succeeded' })).toBe(
      1,
    );
    expect(await sample(registry, 'export_jobs_in_flight')).toBe(0);
  });

  it('leaves the destination open with end: false, so two exports can share it', async () => {
    const exports = manager({ people: { columns, source: () => people(2) } });
    const sink = new MemorySink();

    await exports.stream({ dataset: 'people', format: 'ndjson' }, sink, { end: false });
    expect(sink.writableEnded).toBe(false);
    await exports.stream({ dataset: 'people', format: 'ndjson' }, sink, { end: false });
    sink.end('trailer\n');

    expect(sink.text()).toBe(
      '{"id":1,"name":"person 1","active":true}\n{"id":2,"name":"person 2","active":false}\n'.repeat(2) +
        'trailer\n',
    );
  });
});

// ---- sources ------------------------------------------------------------------------------

describe('stream(): sources', () => {
  const rows = people(7);
  const sources: [string, () => DatasetDefinition['source']][] = [
    ['an array', () => () => rows],
    [
      'a sync generator',
      () =>
        function* () {
          yield* rows;
        },
    ],
    [
      'an async generator',
      () =>
        async function* () {
          for (const row of rows) {
            await Promise.resolve();
            yield row;
          }
        },
    ],
    ['an object-mode Readable', () => () => Readable.from(rows)],
    ['a promise of an array', () => async () => rows],
  ];

  it.each(sources)('exports every row of %s', async (_name, makeSource) => {
    const exports = manager({ people: { source: makeSource() } }, { batchSize: 3 });
    const sink = new MemorySink();

    const result = await exports.stream({ dataset: 'people', format: 'json' }, sink);

    expect(JSON.parse(sink.text())).toEqual(rows);
    expect(result.rows).toBe(7);
  });

  it('hands the source its validated params and the columns to write', async () => {
    const calls: unknown[] = [];
    const exports = manager({
      people: {
        columns,
        params: { limit: { type: 'integer', min: 1 } },
        source: (params, context) => {
          calls.push({ params, columns: context.columns, signal: context.signal instanceof AbortSignal });
          return people(Number(params.limit));
        },
      },
    });
    const sink = new MemorySink();

    await exports.stream({ dataset: 'people', format: 'csv', params: { limit: '2' }, columns: ['id'] }, sink);

    expect(calls).toEqual([{ params: { limit: 2 }, columns: ['id'], signal: true }]);
    expect(sink.text()).toBe('id\n1\n2\n');
  });

  it('parses a JSON array body with fromJsonArray', async () => {
    const body = JSON.stringify(rows);
    const exports = manager({
      upstream: { source: () => fromJsonArray(Readable.from([Buffer.from(body)])) },
    });
    const sink = new MemorySink();

    await exports.stream({ dataset: 'upstream', format: 'ndjson' }, sink);

    expect(parseNdjson(sink.text())).toEqual(rows);
  });

  it('picks the array at a path such as data.items with fromJsonArray', async () => {
    const body = JSON.stringify({
      meta: { count: 7, items: ['not these'] },
      data: { items: rows, next: null },
    });
    const exports = manager({
      upstream: { source: () => fromJsonArray(Readable.from([Buffer.from(body)]), { path: 'data.items' }) },
    });
    const sink = new MemorySink();

    await exports.stream({ dataset: 'upstream', format: 'ndjson' }, sink);

    expect(parseNdjson(sink.text())).toEqual(rows);
  });

  it('parses a body delivered in chunks of 1 to 3 bytes, even inside multi-byte characters', async () => {
    const unicode = [
      { id: 1, city: 'Zoë’s café', note: 'a "quoted" \\ line\nbreak' },
      { id: 2, city: '東京', note: '😀 emoji' },
      { id: 3, city: 'Ærøskøbing', note: '' },
    ];
    const bytes = Buffer.from(JSON.stringify({ data: { items: unicode } }));
    async function* tiny() {
      for (let offset = 0, size = 1; offset < bytes.length; offset += size, size = (size % 3) + 1) {
        yield bytes.subarray(offset, offset + size);
      }
    }
    const exports = manager({
      upstream: { source: () => fromJsonArray(tiny(), { path: 'data.items' }) },
    });

    const viaJson = new MemorySink();
    await exports.stream({ dataset: 'upstream', format: 'json' }, viaJson);
    expect(JSON.parse(viaJson.text())).toEqual(unicode);
  });

  it('yields elements of a JSON array before the body has ended (incremental, not JSON.parse of the whole)', async () => {
    const body = new PassThrough();
    body.write('[{"id":1},{"id":2},');
    const rowsOut = fromJsonArray(body)[Symbol.asyncIterator]();

    expect((await rowsOut.next()).value).toEqual({ id: 1 });
    expect((await rowsOut.next()).value).toEqual({ id: 2 });
    expect(body.writableEnded).toBe(false);
    body.end('{"id":3}]');
    expect((await rowsOut.next()).value).toEqual({ id: 3 });
    expect((await rowsOut.next()).done).toBe(true);
  });

  it('parses NDJSON with fromNdjson, skipping blank lines, from a byte stream in tiny chunks', async () => {
    const text = `${JSON.stringify(rows[0])}\n\n${JSON.stringify(rows[1])}\r\n${JSON.stringify(rows[2])}`;
    const bytes = Buffer.from(text);
    const exports = manager({
      lines: { source: () => fromNdjson(Readable.from([...bytes].map((byte) => Buffer.from([byte])))) },
    });
    const sink = new MemorySink();

    const result = await exports.stream({ dataset: 'lines', format: 'ndjson' }, sink);

    expect(parseNdjson(sink.text())).toEqual(rows.slice(0, 3));
    expect(result.rows).toBe(3);
  });

  it.each([
    ['a truncated JSON array', () => fromJsonArray(Readable.from([Buffer.from('[{"id":1},{"id":')]))],
    ['a JSON syntax error', () => fromJsonArray(Readable.from([Buffer.from('[{"id":1},{id:2}]')]))],
    [
      'a malformed NDJSON line',
      () => fromNdjson(Readable.from([Buffer.from('{"id":1}\n{"id":\n{"id":3}\n')])),
    ],
  ])(
    'fails the export with a generic SourceError on %s, keeping the parser error as cause',
    async (_name, source) => {
      const exports = manager({ upstream: { source } });
      const sink = new MemorySink();

      const error = await rejection(exports.stream({ dataset: 'upstream', format: 'ndjson' }, sink));

      expect(error).toBeInstanceOf(SourceError);
      expect(error.code).toBe('SOURCE_FAILED');
      expect(error.statusCode).toBe(502);
      expect(error.message).toBe('The data source of dataset "upstream" failed');
      expect(error.cause).toBeInstanceOf(Error);
      expect(exports.inFlight).toBe(0);
      expect(
        await sample(registryOf(exports), 'export_jobs_completed_total', {
          dataset: 'upstream',
          format: 'ndjson',
          outcome: 'failed',
        }),
      ).toBe(1);
    },
  );
});

// ---- backpressure -------------------------------------------------------------------------

/** A destination that accepts one chunk at a time and only when the test says so. */
class ManualSink extends Writable {
  readonly pending: (() => void)[] = [];
  readonly written: Buffer[] = [];
  auto = false;
  #firstWrite = deferred();
  readonly firstWrite = this.#firstWrite.promise;

  constructor() {
    super({ highWaterMark: 1 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#firstWrite.resolve();
    this.written.push(chunk);
    if (this.auto) callback();
    else this.pending.push(() => callback());
  }

  /** Accepts everything from now on. */
  releaseAll(): void {
    this.auto = true;
    for (const release of this.pending.splice(0)) release();
  }

  lines(): number {
    return this.written.reduce((sum, chunk) => sum + chunk.toString('utf8').split('\n').length - 1, 0);
  }
}

describe('stream(): backpressure', () => {
  it('pulls from the source only a bounded number of rows ahead of a slow destination, and resumes when it drains', async () => {
    const total = 100_000;
    let pulled = 0;
    const exports = manager(
      {
        wide: {
          source: async function* () {
            for (let id = 1; id <= total; id++) {
              pulled++;
              yield { id, pad: 'x'.repeat(90) };
            }
          },
        },
      },
      { batchSize: 50 },
    );
    const sink = new ManualSink();

    const done = exports.stream({ dataset: 'wide', format: 'ndjson' }, sink);
    await sink.firstWrite;
    await turns(50);
    const stalledAt = pulled;
    await turns(50);

    // Rows are ~110 bytes: 5000 rows ahead is about half a megabyte, whatever the export's size.
    expect(pulled).toBe(stalledAt);
    expect(pulled - sink.lines()).toBeLessThanOrEqual(5000);
    expect(pulled).toBeLessThan(total);
    expect(exports.inFlight).toBe(1);

    // One chunk accepted: the export moves on, and stalls again.
    sink.pending.shift()?.();
    await turns(50);
    expect(pulled).toBeGreaterThan(stalledAt);
    expect(pulled - sink.lines()).toBeLessThanOrEqual(5000);

    sink.releaseAll();
    const result = await done;
    expect(result.rows).toBe(total);
    expect(pulled).toBe(total);
    expect(sink.lines()).toBe(total);
    expect(exports.inFlight).toBe(0);
  });
});

// ---- abort and failures -------------------------------------------------------------------

describe('stream(): abort, destination and source failures', () => {
  it('rejects with CancelledError on abort, closes an async generator source and frees the slot', async () => {
    const closed = deferred();
    let yielded = 0;
    const exports = manager({
      endless: {
        source: async function* () {
          try {
            for (let id = 1; ; id++) {
              yielded++;
              yield { id };
            }
          } finally {
            closed.resolve();
          }
        },
      },
    });
    const sink = new ManualSink();
    const controller = new AbortController();

    const done = exports.stream({ dataset: 'endless', format: 'csv' }, sink, { signal: controller.signal });
    await sink.firstWrite;
    expect(exports.inFlight).toBe(1);
    controller.abort();

    const error = await rejection(done);
    expect(error).toBeInstanceOf(CancelledError);
    expect(error.code).toBe('CANCELLED');
    await closed.promise;
    const yieldedAtClose = yielded;
    await turns(10);
    expect(yielded).toBe(yieldedAtClose);
    expect(exports.inFlight).toBe(0);
    expect(finished.map((summary) => summary.outcome)).toEqual(['cancelled']);
    expect(
      await sample(registryOf(exports), 'export_jobs_completed_total', {
        dataset: 'endless',
        format: 'csv',
        outcome: 'cancelled',
      }),
    ).toBe(1);
    expect(await sample(registryOf(exports), 'export_jobs_in_flight')).toBe(0);
  });

  it('destroys an object-mode Readable source on abort', async () => {
    let id = 0;
    const source = new Readable({
      objectMode: true,
      read() {
        this.push({ id: ++id });
      },
    });
    const exports = manager({ endless: { source: () => source } });
    const sink = new ManualSink();
    const controller = new AbortController();

    const done = exports.stream({ dataset: 'endless', format: 'ndjson' }, sink, {
      signal: controller.signal,
    });
    await sink.firstWrite;
    controller.abort();

    expect(await rejection(done)).toBeInstanceOf(CancelledError);
    expect(source.destroyed).toBe(true);
    expect(exports.inFlight).toBe(0);
  });

  it('lets a source that waits on its signal stop when the export is aborted', async () => {
    const closed = deferred();
    const exports = manager({
      waiting: {
        source: async function* (_params, { signal }) {
          try {
            yield { id: 1 };
            await new Promise((_resolve, reject) =>
              signal.addEventListener('abort', () => reject(signal.reason)),
            );
          } finally {
            closed.resolve();
          }
        },
      },
    });
    const controller = new AbortController();
    const done = exports.stream({ dataset: 'waiting', format: 'ndjson' }, new MemorySink(), {
      signal: controller.signal,
    });
    await turns(5);
    controller.abort();

    expect(await rejection(done)).toBeInstanceOf(CancelledError);
    await closed.promise;
    expect(exports.inFlight).toBe(0);
  });

  it('frees the slot on abort even while the source is stuck in a pull that ignores the signal, and closes it after', async () => {
    const unstick = deferred();
    const closed = deferred();
    const exports = manager({
      stuck: {
        source: async function* () {
          try {
            yield { id: 1 };
            await unstick.promise;
            yield { id: 2 };
          } finally {
            closed.resolve();
          }
        },
      },
    });
    const controller = new AbortController();
    const done = exports.stream({ dataset: 'stuck', format: 'ndjson' }, new MemorySink(), {
      signal: controller.signal,
    });
    await turns(5);
    controller.abort();

    expect(await rejection(done)).toBeInstanceOf(CancelledError);
    expect(exports.inFlight).toBe(0);
    unstick.resolve();
    await closed.promise;
  });

  it('rejects at once with CancelledError when the signal is already aborted, without calling the source', async () => {
    let calls = 0;
    const exports = manager({
      people: {
        source: () => {
          calls++;
          return people(1);
        },
      },
    });
    const sink = new MemorySink();

    const error = await rejection(
      exports.stream({ dataset: 'people', format: 'csv' }, sink, { signal: AbortSignal.abort() }),
    );

    expect(error).toBeInstanceOf(CancelledError);
    expect(calls).toBe(0);
    expect(sink.bytes).toBe(0);
    expect(exports.inFlight).toBe(0);
  });

  it('fails with WriteError when the destination errors mid-way, closes the source and frees the slot', async () => {
    const closed = deferred();
    const exports = manager({
      endless: {
        source: async function* () {
          try {
            for (let id = 1; ; id++) yield { id, pad: 'y'.repeat(50) };
          } finally {
            closed.resolve();
          }
        },
      },
    });
    const diskFull = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    let writes = 0;
    const destination = new Writable({
      write(_chunk, _encoding, callback) {
        writes++;
        callback(writes === 3 ? diskFull : null);
      },
    });

    const error = await rejection(exports.stream({ dataset: 'endless', format: 'ndjson' }, destination));

    expect(error).toBeInstanceOf(WriteError);
    expect(error.code).toBe('WRITE_FAILED');
    expect(error.cause).toBe(diskFull);
    expect(error.message).not.toContain('ENOSPC');
    await closed.promise;
    expect(exports.inFlight).toBe(0);
    expect(finished.map((summary) => summary.outcome)).toEqual(['failed']);
    expect(
      await sample(registryOf(exports), 'export_jobs_completed_total', {
        dataset: 'endless',
        format: 'ndjson',
        outcome: 'failed',
      }),
    ).toBe(1);
  });

  it('fails with SourceError (cause === the original error) when the source throws mid-stream', async () => {
    const original = new Error('connection reset by peer 10.0.0.7:5432');
    const exports = manager(
      {
        flaky: {
          source: async function* () {
            for (let id = 1; id <= 1000; id++) {
              if (id === 600) throw original;
              yield { id };
            }
          },
        },
      },
      { batchSize: 100 },
    );

    const error = await rejection(exports.stream({ dataset: 'flaky', format: 'json' }, new MemorySink()));

    expect(error).toBeInstanceOf(SourceError);
    expect(error.cause).toBe(original);
    expect(error.statusCode).toBe(502);
    expect(error.message).not.toContain('10.0.0.7');
    expect(JSON.stringify(error)).toBe(
      '{"code":"SOURCE_FAILED","message":"The data source of dataset \\"flaky\\" failed"}',
    );
    expect(exports.inFlight).toBe(0);
    expect(finished[0]).toMatchObject({ outcome: 'failed', error });
    expect(
      await sample(registryOf(exports), 'export_jobs_completed_total', {
        dataset: 'flaky',
        format: 'json',
        outcome: 'failed',
      }),
    ).toBe(1);
    // The slot is really free: the next export runs.
    exports.defineDataset('ok', { source: () => people(1) });
    await expect(exports.stream({ dataset: 'ok', format: 'csv' }, new MemorySink())).resolves.toEqual({
      rows: 1,
      bytes: expect.any(Number),
    });
  });

  it('fails with SourceError when the source function itself throws', async () => {
    const original = new Error('no such table: orders');
    const exports = manager({
      broken: {
        source: () => {
          throw original;
        },
      },
    });
    const sink = new MemorySink();

    const error = await rejection(exports.stream({ dataset: 'broken', format: 'csv' }, sink));

    expect(error).toBeInstanceOf(SourceError);
    expect(error.cause).toBe(original);
    expect(sink.bytes).toBe(0);
    expect(exports.inFlight).toBe(0);
  });

  it.each([
    ['null', null, 'null'],
    ['an array', [1, 2], 'an array of length 2'],
    ['a number', 42, '42 (number)'],
  ])('fails with INVALID_ROW naming index 3 when row 3 is %s', async (_name, bad, described) => {
    const exports = manager({
      sloppy: { source: () => [{ id: 0 }, { id: 1 }, { id: 2 }, bad as unknown as Row, { id: 4 }] },
    });

    const error = await rejection(exports.stream({ dataset: 'sloppy', format: 'ndjson' }, new MemorySink()));

    expect(error).toBeInstanceOf(ValidationError);
    expect(error.code).toBe('INVALID_ROW');
    expect(error.message).toBe(`Expected row 3 to be a plain object, got ${described}`);
    expect((error as ValidationError).field).toBe('rows[3]');
    expect(exports.inFlight).toBe(0);
    expect(finished[0]?.outcome).toBe('failed');
  });
});

// ---- bad requests -------------------------------------------------------------------------

describe('stream(): bad requests fail before anything is written', () => {
  const definitions = (calls: { count: number }): Record<string, DatasetDefinition> => ({
    people: {
      columns,
      formats: ['csv', 'ndjson'],
      params: {
        limit: { type: 'integer', min: 1, max: 1000 },
        region: { type: 'enum', values: ['eu', 'us'], required: true },
      },
      source: () => {
        calls.count++;
        return people(3);
      },
    },
  });

  it.each<[string, ExportRequest, new (...args: never[]) => ExportError, string, RegExp]>([
    [
      'an unknown dataset',
      { dataset: 'nope', format: 'csv' },
      NotFoundError,
      'UNKNOWN_DATASET',
      /Unknown dataset "nope"/,
    ],
    [
      'an unknown format',
      { dataset: 'people', format: 'xml' as FormatName, params: { region: 'eu' } },
      ValidationError,
      'UNKNOWN_FORMAT',
      /Unknown format "xml"; expected one of csv, json, ndjson, xlsx, parquet/,
    ],
    [
      'a format the dataset does not offer',
      { dataset: 'people', format: 'json', params: { region: 'eu' } },
      ValidationError,
      'UNKNOWN_FORMAT',
      /cannot be exported as json; expected one of csv, ndjson/,
    ],
    [
      'an unknown column',
      { dataset: 'people', format: 'csv', columns: 'id,salary', params: { region: 'eu' } },
      ValidationError,
      'UNKNOWN_COLUMN',
      /Unknown column "salary" .*expected some of id, name, active/,
    ],
    [
      'an invalid param',
      { dataset: 'people', format: 'csv', params: { region: 'eu', limit: 'ten' } },
      ValidationError,
      'INVALID_PARAMS',
      /param "limit" to be an integer, got "ten"/,
    ],
    [
      'a param out of bounds',
      { dataset: 'people', format: 'csv', params: { region: 'eu', limit: 5000 } },
      ValidationError,
      'INVALID_PARAMS',
      /param "limit" to be <= 1000/,
    ],
    [
      'a missing required param',
      { dataset: 'people', format: 'csv' },
      ValidationError,
      'INVALID_PARAMS',
      /Missing required param "region"/,
    ],
    [
      'an unknown param',
      { dataset: 'people', format: 'csv', params: { region: 'eu', secret: '1' } },
      ValidationError,
      'INVALID_PARAMS',
      /Unknown param "secret".*one of limit, region/,
    ],
  ])('rejects %s with a clear error', async (_name, request, ErrorClass, code, message) => {
    const calls = { count: 0 };
    const exports = manager(definitions(calls));
    const sink = new MemorySink();

    const error = await rejection(exports.stream(request, sink));

    expect(error).toBeInstanceOf(ErrorClass);
    expect(error.code).toBe(code);
    expect(error.statusCode).toBe(code === 'UNKNOWN_DATASET' ? 404 : 422);
    expect(error.message).toMatch(message);
    expect(sink.bytes).toBe(0);
    expect(sink.writableEnded).toBe(false);
    expect(sink.destroyed).toBe(false);
    expect(calls.count).toBe(0);
    expect(exports.inFlight).toBe(0);
    const registry = registryOf(exports);
    expect(
      await sample(registry, 'export_jobs_started_total', {
        dataset: String(request.dataset),
        format: String(request.format),
      }),
    ).toBeUndefined();
    expect(await registry.metrics()).not.toContain('dataset="nope"');
  });

  it('names the offending param in the error field', async () => {
    const exports = manager(definitions({ count: 0 }));
    const error = await rejection(
      exports.stream({ dataset: 'people', format: 'csv', params: { region: 'asia' } }, new MemorySink()),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('params.region');
    expect(error.message).toBe('Expected param "region" to be one of eu, us, got "asia" (string)');
  });
});

// ---- concurrency ----------------------------------------------------------------------------

/** A dataset whose exports each wait for their own gate before the first row. */
function gatedDataset() {
  const gates: ReturnType<typeof deferred<void>>[] = [];
  const opened: number[] = [];
  const definition: DatasetDefinition = {
    source: async function* () {
      const index = gates.length;
      const gate = deferred();
      gates.push(gate);
      opened.push(index);
      await gate.promise;
      yield { export: index };
    },
  };
  return { gates, opened, definition };
}

describe('stream(): concurrency', () => {
  it('turns a third export away at once with a 429 BackpressureError when two are running', async () => {
    const { gates, definition } = gatedDataset();
    const exports = manager({ slow: definition }, { maxConcurrent: 2 });
    const rejected: string[] = [];
    exports.on('rejected', (event) => rejected.push(`${event.reason}:${event.dataset}`));

    const first = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    const second = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    await turns(3);
    expect(exports.inFlight).toBe(2);
    const sink = new MemorySink();
    const error = await rejection(exports.stream({ dataset: 'slow', format: 'ndjson' }, sink));

    expect(error).toBeInstanceOf(BackpressureError);
    const backpressure = error as BackpressureError;
    expect(backpressure.statusCode).toBe(429);
    expect(backpressure.code).toBe('BACKPRESSURE');
    expect(backpressure.reason).toBe('concurrency_limit');
    expect(backpressure.limit).toBe(2);
    expect(backpressure.inFlight).toBe(2);
    expect(Number.isInteger(backpressure.retryAfterSeconds)).toBe(true);
    expect(backpressure.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(sink.bytes).toBe(0);
    expect(gates).toHaveLength(2);
    expect(rejected).toEqual(['concurrency_limit:slow']);
    expect(
      await sample(registryOf(exports), 'export_jobs_rejected_total', { reason: 'concurrency_limit' }),
    ).toBe(1);

    for (const gate of gates) gate.resolve();
    await expect(Promise.all([first, second])).resolves.toHaveLength(2);
    expect(exports.inFlight).toBe(0);
  });

  it('counts an owner from admission on, so two simultaneous streams cannot both slip under maxConcurrentPerOwner', async () => {
    const { gates, definition } = gatedDataset();
    const exports = manager({ slow: definition }, { maxConcurrent: 5, maxConcurrentPerOwner: 1 });
    // Both calls are made in the same tick, before either export has pulled a row.
    const first = exports.stream({ dataset: 'slow', format: 'ndjson', owner: 'alice' }, new MemorySink());
    const second = rejection(
      exports.stream({ dataset: 'slow', format: 'ndjson', owner: 'alice' }, new MemorySink()),
    );
    expect(((await second) as BackpressureError).reason).toBe('owner_limit');
    // Another owner is not held back by alice's export.
    const other = exports.stream({ dataset: 'slow', format: 'ndjson', owner: 'bob' }, new MemorySink());
    await turns(3);
    expect(exports.inFlight).toBe(2);
    for (const gate of gates) gate.resolve();
    await Promise.all([first, other]);
    expect(exports.inFlight).toBe(0);
    // Once alice's export is over, she may start another.
    const again = exports.stream({ dataset: 'slow', format: 'ndjson', owner: 'alice' }, new MemorySink());
    await turns(3);
    for (const gate of gates) gate.resolve();
    await expect(again).resolves.toMatchObject({ rows: 1 });
  });

  it('with maxQueued: 1 lets a third export wait and run once a slot frees up', async () => {
    const { gates, opened, definition } = gatedDataset();
    const exports = manager({ slow: definition }, { maxConcurrent: 2, maxQueued: 1 });
    const registry = registryOf(exports);

    const first = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    const second = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    const thirdSink = new MemorySink();
    const third = exports.stream({ dataset: 'slow', format: 'ndjson' }, thirdSink);
    await turns(3);

    expect(exports.inFlight).toBe(2);
    expect(exports.queued).toBe(1);
    expect(await sample(registry, 'export_jobs_queued')).toBe(1);
    expect(opened).toEqual([0, 1]);
    // The queue is full: a fourth is turned away with queue_full.
    const fourth = await rejection(exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink()));
    expect((fourth as BackpressureError).reason).toBe('queue_full');

    gates[0]?.resolve();
    await first;
    await turns(3);
    expect(opened).toEqual([0, 1, 2]);
    expect(exports.queued).toBe(0);
    expect(await sample(registry, 'export_jobs_queued')).toBe(0);

    gates[2]?.resolve();
    await expect(third).resolves.toMatchObject({ rows: 1 });
    expect(thirdSink.text()).toBe('{"export":2}\n');
    gates[1]?.resolve();
    await second;
    expect(exports.inFlight).toBe(0);
    expect(await sample(registry, 'export_jobs_rejected_total', { reason: 'queue_full' })).toBe(1);
  });

  it('gives up a place in the queue when the waiting export is aborted', async () => {
    const { gates, opened, definition } = gatedDataset();
    const exports = manager({ slow: definition }, { maxConcurrent: 1, maxQueued: 1 });
    const controller = new AbortController();

    const first = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    const waiting = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink(), {
      signal: controller.signal,
    });
    await turns(3);
    expect(exports.queued).toBe(1);
    controller.abort();

    expect(await rejection(waiting)).toBeInstanceOf(CancelledError);
    expect(exports.queued).toBe(0);
    gates[0]?.resolve();
    await first;
    expect(opened).toEqual([0]);
    expect(exports.inFlight).toBe(0);
  });
});

// ---- open() -------------------------------------------------------------------------------

describe('open()', () => {
  it('returns a body that streams the export, with its content type and file name', async () => {
    const exports = manager({ people: { columns, source: () => people(3) } });

    const opened = await exports.open({ dataset: 'people', format: 'csv', filename: 'team' });
    expect(opened.contentType).toBe('text/csv; charset=utf-8');
    expect(opened.filename).toBe('team.csv');
    expect(exports.inFlight).toBe(1);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.body) chunks.push(chunk as Buffer);

    expect(Buffer.concat(chunks).toString('utf8')).toBe(
      'id,Full name,active\n1,person 1,true\n2,person 2,false\n3,person 3,true\n',
    );
    await expect(opened.done).resolves.toEqual({ rows: 3, bytes: Buffer.concat(chunks).length });
    expect(exports.inFlight).toBe(0);
  });

  it('frees the slot, closes the source and counts a cancellation when the body is destroyed', async () => {
    const closed = deferred();
    const exports = manager(
      {
        endless: {
          source: async function* () {
            try {
              for (let id = 1; ; id++) yield { id };
            } finally {
              closed.resolve();
            }
          },
        },
      },
      { maxConcurrent: 1 },
    );

    const opened = await exports.open({ dataset: 'endless', format: 'ndjson' });
    await new Promise((resolve) => opened.body.once('data', resolve));
    expect(exports.inFlight).toBe(1);
    opened.body.destroy();

    await expect(opened.done).resolves.toBeUndefined();
    await closed.promise;
    expect(exports.inFlight).toBe(0);
    expect(finished.map((summary) => summary.outcome)).toEqual(['cancelled']);
    expect(
      await sample(registryOf(exports), 'export_jobs_completed_total', {
        dataset: 'endless',
        format: 'ndjson',
        outcome: 'cancelled',
      }),
    ).toBe(1);
    // The slot is usable again.
    exports.defineDataset('one', { source: () => [{ id: 1 }] });
    await expect(
      exports.stream({ dataset: 'one', format: 'ndjson' }, new MemorySink()),
    ).resolves.toMatchObject({ rows: 1 });
  });

  it('answers 429 before any body exists when every slot is taken', async () => {
    const { gates, definition } = gatedDataset();
    const exports = manager({ slow: definition }, { maxConcurrent: 1 });

    const first = exports.stream({ dataset: 'slow', format: 'ndjson' }, new MemorySink());
    await turns(3);
    const error = await rejection(exports.open({ dataset: 'slow', format: 'ndjson' }));

    expect(error).toBeInstanceOf(BackpressureError);
    expect(error.statusCode).toBe(429);
    gates[0]?.resolve();
    await first;
  });
});

describe('stream(): slow sources', () => {
  /** Resolves once a write makes `ready(sink)` true (by default: any chunk); no polling of time. */
  function firstChunk(sink: MemorySink, ready: (sink: MemorySink) => boolean = () => true): Promise<void> {
    return new Promise((resolve) => {
      const write = sink._write.bind(sink);
      sink._write = (chunk, encoding, callback) => {
        write(chunk, encoding, callback);
        if (ready(sink)) resolve();
      };
    });
  }

  it('hands rows already read to the destination while the source waits for more', async () => {
    const gate = deferred();
    const exports = manager({
      slow: {
        columns: [{ name: 'id' }],
        async *source() {
          yield { id: 1 };
          yield { id: 2 };
          await gate.promise;
          yield { id: 3 };
        },
      },
    });
    const sink = new MemorySink();
    const arrived = firstChunk(sink);
    const done = exports.stream({ dataset: 'slow', format: 'csv' }, sink);
    // Far fewer than a batch or a 64 KiB chunk, yet they arrive before the source goes on.
    await arrived;
    expect(sink.text()).toBe('id\n1\n2\n');
    gate.resolve();
    await expect(done).resolves.toMatchObject({ rows: 3 });
    expect(sink.text()).toBe('id\n1\n2\n3\n');
  });

  it('hands rows of a byte-stream source (fromNdjson) on while its upstream stalls', async () => {
    const upstream = new PassThrough();
    const exports = manager({ upstream: { source: () => fromNdjson(upstream) } });
    const sink = new MemorySink();
    const arrived = firstChunk(sink);
    const done = exports.stream({ dataset: 'upstream', format: 'ndjson' }, sink);
    upstream.write('{"id":1}\n{"id":2}\n');
    // The upstream says nothing more for now; what was parsed still goes out.
    await arrived;
    expect(sink.text()).toBe('{"id":1}\n{"id":2}\n');
    upstream.end('{"id":3}\n');
    await expect(done).resolves.toMatchObject({ rows: 3 });
  });

  it('pushes gzip output out too, while the source waits', async () => {
    const gate = deferred();
    const exports = manager({
      slow: {
        async *source() {
          yield { id: 1 };
          await gate.promise;
        },
      },
    });
    const sink = new MemorySink();
    // A sync-flushed gzip prefix decompresses to the rows written so far.
    const unzipped = () =>
      gunzipSync(Buffer.concat(sink.chunks), { finishFlush: zlibConstants.Z_SYNC_FLUSH }).toString();
    const arrived = firstChunk(sink, () => unzipped() !== '');
    const done = exports.stream({ dataset: 'slow', format: 'ndjson', compression: 'gzip' }, sink);
    await arrived;
    expect(
      gunzipSync(Buffer.concat(sink.chunks), { finishFlush: zlibConstants.Z_SYNC_FLUSH }).toString(),
    ).toBe('{"id":1}\n');
    gate.resolve();
    await done;
  });

  it('frees the slot on abort even when the source ignores the signal and never returns', async () => {
    const exports = manager({
      deaf: {
        async *source() {
          yield { id: 1 };
          await new Promise(() => {}); // never settles, never looks at the signal
        },
      },
    });
    const sink = new MemorySink();
    const arrived = firstChunk(sink);
    const controller = new AbortController();
    const done = exports.stream({ dataset: 'deaf', format: 'ndjson' }, sink, { signal: controller.signal });
    await arrived;
    controller.abort();
    await expect(done).rejects.toBeInstanceOf(CancelledError);
    expect(exports.inFlight).toBe(0);
  });
});
