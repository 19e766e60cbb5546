import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { checkCompression, zstdAvailable } from '../src/compression.js';
import { ValidationError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import type { JobRecord } from '../src/jobs/job.js';
import {
  type ExportRequest,
  prepare,
  recordOfRequest,
  requestOfRecord,
  sameRequest,
} from '../src/request.js';
import { removeDir, tempDir } from './jobs.helpers.js';

const zstdDecompress = (zlib as { zstdDecompressSync?: (data: Buffer) => Buffer }).zstdDecompressSync;

const managers: ExportManager[] = [];
const directories: string[] = [];
afterEach(async () => {
  for (const manager of managers.splice(0)) await manager.close({ drainTimeoutMs: 0 });
  for (const directory of directories.splice(0)) await removeDir(directory);
});

const datasets = {
  payments: {
    columns: [
      { name: 'id', type: 'integer' as const },
      { name: 'amount', type: 'number' as const },
      { name: 'paid_at', type: 'date' as const },
    ],
    source: () => [
      { id: 1, amount: 2.5, paid_at: new Date('2025-10-26T00:30:00Z') },
      { id: 2, amount: 10, paid_at: '2025-10-26T01:30:00Z' },
    ],
  },
};

async function manager(options: ConstructorParameters<typeof ExportManager>[0] = {}): Promise<ExportManager> {
  const directory = await tempDir('spark-options-');
  directories.push(directory);
  const created = new ExportManager({ directory, datasets, metrics: false, ...options });
  managers.push(created);
  await created.ready;
  return created;
}

async function streamed(exports: ExportManager, request: ExportRequest): Promise<Buffer> {
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (chunk: Buffer) => chunks.push(chunk));
  await exports.stream(request, sink);
  return Buffer.concat(chunks);
}

function captureError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError, nothing was thrown');
}

describe('time zone and date format of an export', () => {
  it("takes the manager's defaults, and a request's own over them", async () => {
    const exports = await manager({ timeZone: 'Europe/Berlin', dateFormat: 'iso-local' });
    const text = (await streamed(exports, { dataset: 'payments', format: 'csv' })).toString('utf8');
    // 02:30 happens twice in Berlin on 26 October: before and after the clocks go back.
    expect(text).toBe('id,amount,paid_at\n1,2.5,2025-10-26 02:30:00\n2,10,2025-10-26 02:30:00\n');
    const own = await streamed(exports, {
      dataset: 'payments',
      format: 'ndjson',
      timeZone: 'America/New_York',
      dateFormat: 'iso',
    });
    expect(own.toString('utf8')).toBe(
      '{"id":1,"amount":2.5,"paid_at":"2025-10-25T20:30:00.000-04:00"}\n' +
        '{"id":2,"amount":10,"paid_at":"2025-10-25T21:30:00.000-04:00"}\n',
    );
  });

  it('refuses a bad default with a TypeError naming the option, and a bad request with a 422', async () => {
    expect(() => new ExportManager({ timeZone: 'Europe/Atlantis' })).toThrow(
      new TypeError(
        'Expected timeZone to be an IANA time zone name such as "Europe/Berlin", got "Europe/Atlantis"',
      ),
    );
    expect(() => new ExportManager({ dateFormat: 'long' as 'iso' })).toThrow(TypeError);
    const exports = await manager();
    await expect(
      exports.stream({ dataset: 'payments', format: 'csv', timeZone: 'Mars/Olympus' }, new PassThrough()),
    ).rejects.toMatchObject({ statusCode: 422, field: 'timeZone' });
    await expect(
      exports.start({ dataset: 'payments', format: 'csv', dateFormat: 'us' as 'iso' }),
    ).rejects.toMatchObject({
      statusCode: 422,
      field: 'dateFormat',
    });
  });

  it('stores the options in the job record, and runs the job with them', async () => {
    const exports = await manager();
    const job = await exports.start({
      dataset: 'payments',
      format: 'csv',
      timeZone: 'europe/berlin',
      dateFormat: 'date',
      csv: { preset: 'excel' },
    });
    await exports.wait(job.id);
    const directory = directories.at(-1)!;
    const record = JSON.parse(await readFile(join(directory, `${job.id}.json`), 'utf8')) as JobRecord;
    expect(record).toMatchObject({ timeZone: 'Europe/Berlin', dateFormat: 'date', csv: { preset: 'excel' } });
    const file = await readFile(join(directory, record.file!.name), 'utf8');
    expect(file).toBe('\uFEFFid;amount;paid_at\r\n1;2,5;2025-10-26\r\n2;10;2025-10-26\r\n');
  });
});

describe('request records', () => {
  const map = new Map(
    Object.entries(datasets).map(([name, definition]) => [
      name,
      { name, formats: ['csv', 'json', 'ndjson'] as const, params: {}, ...definition },
    ]),
  );
  const prepared = (request: Partial<ExportRequest>) =>
    // biome-ignore lint/suspicious/noExplicitAny: a dataset of the test's own making
    prepare({ dataset: 'payments', format: 'csv', ...request }, map as any, undefined);

  it('round-trips time zone, date format, CSV options and compression through the record', () => {
    const record = recordOfRequest(
      prepared({
        timeZone: 'America/New_York',
        dateFormat: 'iso-local',
        csv: { preset: 'excel' },
        compression: { type: 'gzip', level: 1 },
      }),
    );
    expect(record).toMatchObject({
      timeZone: 'America/New_York',
      dateFormat: 'iso-local',
      csv: { preset: 'excel' },
      compression: { type: 'gzip', level: 1 },
    });
    const again = recordOfRequest(prepared(requestOfRecord(record)));
    expect(again).toEqual(record);
    expect(sameRequest(record, again)).toBe(true);
    expect(sameRequest(record, { ...record, timeZone: 'Europe/Berlin' })).toBe(false);
    expect(sameRequest(record, { ...record, dateFormat: null })).toBe(false);
    expect(sameRequest(record, { ...record, compression: { type: 'gzip', level: 2 } })).toBe(false);
    // A record written before these options existed has none of them.
    const { timeZone: _zone, dateFormat: _format, ...old } = recordOfRequest(prepared({}));
    expect(requestOfRecord(old)).toEqual({
      dataset: 'payments',
      format: 'csv',
      params: {},
      compression: 'none',
      columns: ['id', 'amount', 'paid_at'],
    });
    expect(sameRequest(old, recordOfRequest(prepared({})))).toBe(true);
  });
});

describe('compression', () => {
  it('normalises and checks names and levels', () => {
    expect(checkCompression(undefined)).toBe('none');
    expect(checkCompression('gzip')).toBe('gzip');
    expect(checkCompression({ type: 'gzip' })).toBe('gzip');
    expect(checkCompression({ type: 'gzip', level: 0 })).toEqual({ type: 'gzip', level: 0 });
    for (const [value, field, message] of [
      ['br', 'compression', /"none", "gzip", "zstd" or \{ type, level \}, got "br"/],
      [{ type: 'gzip', level: 10 }, 'compression.level', /integer from 0 to 9 for gzip, got 10/],
      [{ type: 'gzip', level: 1.5 }, 'compression.level', /integer from 0 to 9/],
      [{ type: 'none', level: 1 }, 'compression.type', /"gzip" or "zstd"/],
      [{ type: 'gzip', strategy: 1 }, 'compression.strategy', /Unknown field "strategy"/],
    ] as const) {
      const error = captureError(() => checkCompression(value));
      expect(error.field).toBe(field);
      expect(error.statusCode).toBe(422);
      expect(error.message).toMatch(message);
    }
  });

  it('writes gzip at the level asked for: level 1 is larger than level 9 for the same rows', async () => {
    const exports = await manager({
      datasets: {
        many: {
          source: () => Array.from({ length: 5000 }, (_, id) => ({ id, text: `row ${id % 97} of many` })),
        },
      },
    });
    const fast = await streamed(exports, {
      dataset: 'many',
      format: 'csv',
      compression: { type: 'gzip', level: 1 },
    });
    const small = await streamed(exports, {
      dataset: 'many',
      format: 'csv',
      compression: { type: 'gzip', level: 9 },
    });
    expect(zlib.gunzipSync(fast).equals(zlib.gunzipSync(small))).toBe(true);
    expect(fast.length).toBeGreaterThan(small.length);
  });

  it.runIf(zstdAvailable())('writes zstd files with .zst and application/zstd', async () => {
    const exports = await manager();
    const job = await exports.start({
      dataset: 'payments',
      format: 'json',
      compression: { type: 'zstd', level: 5 },
    });
    await exports.wait(job.id);
    const file = await exports.file(job.id);
    expect(file.contentType).toBe('application/zstd');
    expect(file.filename).toMatch(/\.json\.zst$/);
    const body = await file.read();
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(JSON.parse(zstdDecompress!(Buffer.concat(chunks)).toString('utf8'))).toHaveLength(2);
  });

  it.skipIf(zstdAvailable())('refuses zstd on a Node without it, naming the running version', async () => {
    const exports = await manager();
    const error = captureError(() => checkCompression('zstd'));
    expect(error.field).toBe('compression');
    expect(error.message).toContain(process.version);
    expect(error.message).toContain('22.15');
    await expect(
      exports.start({ dataset: 'payments', format: 'csv', compression: 'zstd' }),
    ).rejects.toMatchObject({
      statusCode: 422,
      field: 'compression',
    });
  });
});
