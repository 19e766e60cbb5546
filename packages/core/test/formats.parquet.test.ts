// Parquet read back by independent readers: DuckDB (row count, column types, every value) and
// hyparquet; row groups written as they fill; the schema from the declared types only.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import * as zlib from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import { parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import { type ColumnSpec, type EncoderOptions, getFormat, parquetFormat } from '../src/formats/index.js';

type Row = Record<string, unknown>;

function encodeAll(batches: Row[][], options?: EncoderOptions): Buffer {
  const encoder = parquetFormat.createEncoder(options);
  const parts = batches.map((batch) => encoder.encode(batch));
  parts.push(encoder.finish());
  return Buffer.concat(parts);
}

const columns: ColumnSpec[] = [
  { name: 'id', type: 'integer' },
  { name: 'name', type: 'string' },
  { name: 'amount', type: 'number' },
  { name: 'paid', type: 'boolean' },
  { name: 'at', type: 'date' },
  { name: 'meta', type: 'json' },
];

/** 10 rows of every type, with nulls, numeric strings from a driver, and hostile text. */
const rows: Row[] = Array.from({ length: 10 }, (_, i) => ({
  id: i === 3 ? '9007199254740993' : i === 4 ? 12n : i + 1,
  name: i === 5 ? "=cmd|' /C calc'!A0 \u0001 ü 😀" : i === 6 ? null : `name ${i}`,
  amount: i === 7 ? '2.5' : i * 1.25 - 3,
  paid: i === 8 ? undefined : i % 2 === 0,
  at: i === 9 ? null : i === 2 ? '2024-03-31T01:30:00Z' : new Date(Date.UTC(2024, 9, 27, 0, 59, 59, i)),
  meta: i === 1 ? { nested: { big: 2n ** 64n, list: [1, 'x'] } } : i === 2 ? null : { i },
}));

/** The rows as DuckDB should read them back, in the shapes the query below gives. */
const expected = rows.map((row, i) => ({
  id: i === 3 ? 9007199254740993n : i === 4 ? 12n : BigInt(i + 1),
  name: row.name ?? null,
  amount: i === 7 ? 2.5 : i * 1.25 - 3,
  paid: row.paid ?? null,
  at_ms:
    i === 9
      ? null
      : i === 2
        ? BigInt(Date.parse('2024-03-31T01:30:00Z'))
        : BigInt(Date.UTC(2024, 9, 27, 0, 59, 59, i)),
  meta: i === 1 ? '{"nested":{"big":"18446744073709551616","list":[1,"x"]}}' : i === 2 ? null : `{"i":${i}}`,
}));

let dir: string;
let duckdb: DuckDBInstance;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spark-export-parquet-'));
  duckdb = await DuckDBInstance.create(':memory:');
});
afterAll(async () => {
  duckdb?.closeSync();
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function query(bytes: Buffer, sql: (file: string) => string): Promise<Record<string, unknown>[]> {
  const file = join(dir, `export-${++files}.parquet`);
  await writeFile(file, bytes);
  const connection = await duckdb.connect();
  try {
    return (await connection.runAndReadAll(sql(`'${file}'`))).getRowObjectsJS();
  } finally {
    connection.closeSync();
  }
}

describe('parquet read back by DuckDB', () => {
  it('has the row count, the column types and every value of the source rows', async () => {
    const bytes = encodeAll([rows.slice(0, 4), [], rows.slice(4)], { columns, parquet: { rowGroupSize: 3 } });
    expect(await query(bytes, (file) => `SELECT count(*) AS n FROM read_parquet(${file})`)).toEqual([
      { n: 10n },
    ]);
    const types = await query(bytes, (file) => `DESCRIBE SELECT * FROM read_parquet(${file})`);
    expect(types.map((column) => [column.column_name, column.column_type])).toEqual([
      ['id', 'BIGINT'],
      ['name', 'VARCHAR'],
      ['amount', 'DOUBLE'],
      ['paid', 'BOOLEAN'],
      ['at', 'TIMESTAMP WITH TIME ZONE'],
      ['meta', 'JSON'],
    ]);
    const values = await query(
      bytes,
      (file) =>
        `SELECT id, name, amount, paid, epoch_ms("at") AS at_ms, meta::VARCHAR AS meta FROM read_parquet(${file})`,
    );
    expect(values).toEqual(expected);
    // Row groups of 3 as they filled, snappy by default.
    const groups = await query(
      bytes,
      (file) =>
        `SELECT row_group_id, any_value(row_group_num_rows) AS rows, any_value(compression) AS compression FROM parquet_metadata(${file}) GROUP BY row_group_id ORDER BY row_group_id`,
    );
    expect(groups).toEqual([
      { row_group_id: 0n, rows: 3n, compression: 'SNAPPY' },
      { row_group_id: 1n, rows: 3n, compression: 'SNAPPY' },
      { row_group_id: 2n, rows: 3n, compression: 'SNAPPY' },
      { row_group_id: 3n, rows: 1n, compression: 'SNAPPY' },
    ]);
  });

  it('reads gzip, uncompressed and (where Node.js has it) zstd files alike', async () => {
    const compressions = ['gzip', 'none', ...('zstdCompressSync' in zlib ? ['zstd' as const] : [])] as const;
    for (const compression of compressions) {
      const bytes = encodeAll([rows], { columns, parquet: { compression } });
      const values = await query(
        bytes,
        (file) =>
          `SELECT id, name, amount, paid, epoch_ms("at") AS at_ms, meta::VARCHAR AS meta FROM read_parquet(${file})`,
      );
      expect(values, compression).toEqual(expected);
      const codecs = await query(
        bytes,
        (file) => `SELECT DISTINCT compression FROM parquet_metadata(${file})`,
      );
      expect(codecs, compression).toEqual([
        { compression: { gzip: 'GZIP', none: 'UNCOMPRESSED', zstd: 'ZSTD' }[compression] },
      ]);
    }
  });

  it('is a valid file of no rows when the source is empty', async () => {
    const bytes = encodeAll([], { columns });
    expect(await query(bytes, (file) => `SELECT count(*) AS n FROM read_parquet(${file})`)).toEqual([
      { n: 0n },
    ]);
    const types = await query(bytes, (file) => `DESCRIBE SELECT * FROM read_parquet(${file})`);
    expect(types.map((column) => column.column_name)).toEqual(columns.map((column) => column.name));
  });
});

describe('parquet read back by hyparquet', () => {
  it('has every value of the source rows', async () => {
    const bytes = encodeAll([rows], { columns, parquet: { rowGroupSize: 4 } });
    const read = await parquetReadObjects({
      file: new Uint8Array(bytes).buffer,
    });
    expect(read).toEqual(
      expected.map(({ at_ms, meta, ...row }) => ({
        ...row,
        at: at_ms === null ? null : new Date(Number(at_ms)),
        meta: meta === null ? null : JSON.parse(meta),
      })),
    );
  });
});

describe('parquet encoder', () => {
  it('returns a row group as soon as it is full, and holds no more than one', () => {
    const encoder = parquetFormat.createEncoder({
      columns: [{ name: 'n', type: 'integer' }],
      parquet: { rowGroupSize: 1000 },
    });
    const batch = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ n: from + i }));
    // The magic number only: 999 rows wait for the group to fill.
    expect(Buffer.from(encoder.encode(batch(0, 999))).toString('latin1')).toBe('PAR1');
    const group = encoder.encode(batch(999, 1));
    expect(group.length).toBeGreaterThan(100);
    expect(encoder.encode(batch(1000, 500)).length).toBe(0);
    const footer = encoder.finish();
    expect(Buffer.from(footer.subarray(-4)).toString('latin1')).toBe('PAR1');
  });

  it('refuses untyped columns: parquet needs typed columns', () => {
    const error = (() => {
      try {
        parquetFormat.createEncoder({
          columns: [{ name: 'id', type: 'integer' }, { name: 'note' }, { name: 'x' }],
        });
      } catch (caught) {
        return caught as ValidationError;
      }
      throw new Error('expected a ValidationError');
    })();
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.statusCode).toBe(422);
    expect(error.message).toBe(
      'Parquet needs typed columns: columns "note", "x" have no type; declare each column\'s type (string, number, integer, boolean, date or json)',
    );
    expect(() => parquetFormat.createEncoder()).toThrow(
      /Parquet needs typed columns: the dataset declares no columns/,
    );
  });

  it('refuses a value its column type cannot hold, naming the column', () => {
    const encoder = parquetFormat.createEncoder({
      columns: [
        { name: 'n', type: 'integer' },
        { name: 'd', type: 'date' },
      ],
    });
    expect(() => encoder.encode([{ n: 1.5 }])).toThrow(
      'Expected column "n" to hold a integer (its declared type), got 1.5 (number)',
    );
    expect(() => encoder.encode([{ d: 'yesterday' }])).toThrow(
      'Expected column "d" to hold a date (its declared type), got "yesterday"',
    );
  });

  it('checks its options', () => {
    expect(() => parquetFormat.createEncoder({ columns, parquet: { rowGroupSize: 0 } })).toThrow(
      /parquet\.rowGroupSize to be an integer from 1 to 10000000, got 0/,
    );
    expect(() => parquetFormat.createEncoder({ columns, parquet: { compression: 'lz4' as never } })).toThrow(
      /parquet\.compression to be one of snappy, gzip, zstd, none, got "lz4"/,
    );
    expect(getFormat('parquet')).toBe(parquetFormat);
  });
});

describe('parquet through the manager', () => {
  it("takes the manager's parquet options, and refuses bad ones with a TypeError", async () => {
    expect(() => new ExportManager({ parquet: { rowGroupSize: 0 } })).toThrow(TypeError);
    expect(() => new ExportManager({ xlsx: { compressionLevel: 12 } })).toThrow(
      /xlsx\.compressionLevel to be an integer from 0 to 9, got 12/,
    );
    const manager = new ExportManager({
      parquet: { rowGroupSize: 4, compression: 'gzip' },
      datasets: { typed: { columns, source: () => rows } },
    });
    try {
      const chunks: Buffer[] = [];
      const out = new PassThrough();
      out.on('data', (chunk: Buffer) => chunks.push(chunk));
      const result = await manager.stream({ dataset: 'typed', format: 'parquet' }, out);
      expect(result.rows).toBe(10);
      const bytes = Buffer.concat(chunks);
      const groups = await query(
        bytes,
        (file) =>
          `SELECT row_group_id, any_value(row_group_num_rows) AS rows, any_value(compression) AS compression FROM parquet_metadata(${file}) GROUP BY row_group_id ORDER BY row_group_id`,
      );
      expect(groups.map((group) => [group.rows, group.compression])).toEqual([
        [4n, 'GZIP'],
        [4n, 'GZIP'],
        [2n, 'GZIP'],
      ]);
    } finally {
      await manager.close();
    }
  });
});
