import * as zlib from 'node:zlib';
import { ByteWriter, ParquetWriter, type SchemaElement } from 'hyparquet-writer';
import { describeValue, ValidationError } from '../errors.js';
import { checkEncoderOptions, checkRows, inheritedKeys, type Row, stringifyJson } from './encoder-helpers.js';
import type {
  ByteRowEncoder,
  ColumnSpec,
  ColumnType,
  EncoderOptions,
  Format,
  ParquetOptions,
} from './types.js';

/*
 * Parquet through hyparquet-writer's incremental `ParquetWriter`: rows are gathered column by
 * column until a row group is full, the group is encoded and its bytes returned from
 * `encode()`, and the footer (schema, row-group and page indexes) comes from `finish()`. At
 * most one row group of values is held, so `rowGroupSize` bounds the memory of an export.
 */

export const PARQUET_DEFAULT_ROW_GROUP_SIZE = 50_000;
const MAX_ROW_GROUP_SIZE = 10_000_000;

type Compression = NonNullable<ParquetOptions['compression']>;
type Codec = 'SNAPPY' | 'GZIP' | 'ZSTD' | 'UNCOMPRESSED';

const CODECS: Readonly<Record<Compression, Codec>> = {
  snappy: 'SNAPPY',
  gzip: 'GZIP',
  zstd: 'ZSTD',
  none: 'UNCOMPRESSED',
};

interface ParquetSettings {
  rowGroupSize: number;
  codec: Codec;
}

/** zstd is in `node:zlib` from Node.js 22.15 and 23.8 on. */
const zstdCompressSync = (zlib as { zstdCompressSync?: (input: Uint8Array) => Uint8Array }).zstdCompressSync;

/** Checks `ParquetOptions` and fills in the defaults. @throws {ValidationError} naming the field */
export function checkParquetOptions(parquet: unknown): ParquetSettings {
  if (parquet === undefined) return { rowGroupSize: PARQUET_DEFAULT_ROW_GROUP_SIZE, codec: 'SNAPPY' };
  if (typeof parquet !== 'object' || parquet === null || Array.isArray(parquet)) {
    throw new ValidationError(`Expected parquet to be an object, got ${describeValue(parquet)}`, {
      field: 'parquet',
    });
  }
  const { rowGroupSize = PARQUET_DEFAULT_ROW_GROUP_SIZE, compression = 'snappy' } = parquet as ParquetOptions;
  if (!Number.isInteger(rowGroupSize) || rowGroupSize < 1 || rowGroupSize > MAX_ROW_GROUP_SIZE) {
    throw new ValidationError(
      `Expected parquet.rowGroupSize to be an integer from 1 to ${MAX_ROW_GROUP_SIZE}, got ${describeValue(rowGroupSize)}`,
      { field: 'parquet.rowGroupSize' },
    );
  }
  if (typeof compression !== 'string' || !Object.hasOwn(CODECS, compression)) {
    throw new ValidationError(
      `Expected parquet.compression to be one of ${Object.keys(CODECS).join(', ')}, got ${describeValue(compression)}`,
      { field: 'parquet.compression' },
    );
  }
  if (compression === 'zstd' && zstdCompressSync === undefined) {
    throw new ValidationError(
      `Expected parquet.compression "snappy", "gzip" or "none": zstd needs Node.js 22.15 or later, this is ${process.version}`,
      { field: 'parquet.compression' },
    );
  }
  return { rowGroupSize, codec: CODECS[compression] };
}

/** The Parquet column of each declared type. Every column is optional: `null` is a null. */
function schemaElement(name: string, type: ColumnType): SchemaElement {
  const repetition_type = 'OPTIONAL';
  switch (type) {
    case 'string':
      return {
        name,
        type: 'BYTE_ARRAY',
        converted_type: 'UTF8',
        logical_type: { type: 'STRING' },
        repetition_type,
      };
    case 'number':
      return { name, type: 'DOUBLE', repetition_type };
    case 'integer':
      // A plain INT64 is a signed 64-bit integer; hyparquet-writer's INTEGER annotation is not read by DuckDB.
      return { name, type: 'INT64', repetition_type };
    case 'boolean':
      return { name, type: 'BOOLEAN', repetition_type };
    case 'date':
      return {
        name,
        type: 'INT64',
        converted_type: 'TIMESTAMP_MILLIS',
        logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MILLIS' },
        repetition_type,
      };
    case 'json':
      return {
        name,
        type: 'BYTE_ARRAY',
        converted_type: 'JSON',
        logical_type: { type: 'JSON' },
        repetition_type,
      };
  }
}

/**
 * The typed columns, or the 422 that says which have no type. A schema guessed from the first
 * rows would change with the data (a first batch of nulls, a number column that later holds
 * text): a file's schema is a contract, so it comes from the declaration only.
 */
function typedColumns(
  columns: readonly ColumnSpec[] | undefined,
): readonly (ColumnSpec & { type: ColumnType })[] {
  const untyped = columns?.filter((column) => column.type === undefined).map((column) => column.name);
  if (columns === undefined || columns.length === 0 || (untyped && untyped.length > 0)) {
    const which =
      columns === undefined || columns.length === 0
        ? 'the dataset declares no columns'
        : `column${untyped!.length > 1 ? 's' : ''} ${untyped!.map((name) => `"${name}"`).join(', ')} ${untyped!.length > 1 ? 'have' : 'has'} no type`;
    throw new ValidationError(
      `Parquet needs typed columns: ${which}; declare each column's type (string, number, integer, boolean, date or json)`,
      { field: 'format' },
    );
  }
  return columns as readonly (ColumnSpec & { type: ColumnType })[];
}

function badValue(column: string, type: ColumnType, value: unknown): ValidationError {
  const shown =
    typeof value === 'string'
      ? JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
      : describeValue(value);
  return new ValidationError(
    `Expected column "${column}" to hold a ${type} (its declared type), got ${shown}`,
    {
      code: 'INVALID_ROW',
      field: column,
    },
  );
}

const INTEGER = /^\s*[-+]?\d+\s*$/;
const NUMERIC = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/**
 * A converter per declared type: the JS value hyparquet-writer takes for it, or a clear error.
 * Database drivers hand big integers and decimals over as strings, so numeric strings count.
 */
function converter(type: ColumnType, column: string, json: { bigint: boolean }): (value: unknown) => unknown {
  switch (type) {
    case 'string':
      return (value) => {
        if (typeof value === 'string') return value;
        if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
        if (typeof value === 'object') return stringifyJson(value, json) ?? null;
        if (typeof value === 'function' || typeof value === 'symbol') throw badValue(column, type, value);
        return `${value as number | bigint | boolean}`;
      };
    case 'number':
      return (value) => {
        if (typeof value === 'number') return value;
        if (typeof value === 'bigint') return Number(value);
        if (typeof value === 'string' && NUMERIC.test(value)) return Number(value);
        throw badValue(column, type, value);
      };
    case 'integer':
      return (value) => {
        if (typeof value === 'bigint') return value;
        if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
        if (typeof value === 'string' && INTEGER.test(value)) return BigInt(value.trim());
        throw badValue(column, type, value);
      };
    case 'boolean':
      return (value) => {
        if (typeof value === 'boolean') return value;
        throw badValue(column, type, value);
      };
    case 'date':
      return (value) => {
        const date =
          value instanceof Date
            ? value
            : typeof value === 'string' || typeof value === 'number'
              ? new Date(value)
              : undefined;
        if (date === undefined) throw badValue(column, type, value);
        const ms = date.getTime();
        // An invalid Date is written as null, as JSON writes it; an unreadable date string is an error.
        if (Number.isNaN(ms)) {
          if (value instanceof Date) return null;
          throw badValue(column, type, value);
        }
        return BigInt(ms);
      };
    case 'json':
      // hyparquet-writer would write a nested bigint as a (rounded) number: go through our JSON,
      // where it is a string of its digits, as in the JSON formats.
      return (value) => {
        if (typeof value === 'function' || typeof value === 'symbol') throw badValue(column, type, value);
        if (typeof value !== 'object' && typeof value !== 'bigint') return value;
        const text = stringifyJson(value, json);
        return text === undefined ? null : JSON.parse(text);
      };
  }
}

/** hyparquet-writer's `ByteWriter`, emptied after each row group: the offsets keep counting. */
class DrainedByteWriter extends ByteWriter {
  drain(): Uint8Array {
    const bytes = new Uint8Array(this.buffer.slice(0, this.index));
    this.index = 0;
    return bytes;
  }
}

class ParquetEncoder implements ByteRowEncoder {
  readonly output = 'bytes';
  readonly #settings: ParquetSettings;
  readonly #writer = new DrainedByteWriter(64 * 1024);
  readonly #parquet: ParquetWriter;
  readonly #keys: readonly string[];
  readonly #inherited: readonly boolean[] | undefined;
  readonly #convert: readonly ((value: unknown) => unknown)[];
  /** The values of the row group being gathered, one array per column. */
  #columns: unknown[][];
  #rows = 0;
  #finished = false;

  constructor(options: EncoderOptions | undefined) {
    const columns = typedColumns(checkEncoderOptions(options).columns);
    this.#settings = checkParquetOptions(options?.parquet);
    const json = { bigint: false };
    this.#keys = columns.map((column) => column.name);
    this.#inherited = inheritedKeys(this.#keys);
    this.#convert = columns.map((column) => converter(column.type, column.name, json));
    this.#columns = this.#emptyColumns();
    const compressors =
      this.#settings.codec === 'GZIP'
        ? { GZIP: (input: Uint8Array) => zlib.gzipSync(input) }
        : this.#settings.codec === 'ZSTD'
          ? { ZSTD: (input: Uint8Array) => zstdCompressSync!(input) }
          : undefined;
    this.#parquet = new ParquetWriter({
      writer: this.#writer,
      schema: [
        { name: 'root', num_children: columns.length },
        ...columns.map((column) => schemaElement(column.name, column.type)),
      ],
      codec: this.#settings.codec,
      ...(compressors ? { compressors } : {}),
      createdBy: 'spark-export (hyparquet-writer)',
    });
  }

  #emptyColumns(): unknown[][] {
    return this.#keys.map(() => []);
  }

  encode(rows: readonly Row[]): Uint8Array {
    if (this.#finished) throw new Error('encode() was called after finish()');
    checkRows(rows, this.#rows);
    const keys = this.#keys;
    const inherited = this.#inherited;
    const convert = this.#convert;
    const size = this.#settings.rowGroupSize;
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r]!;
      for (let c = 0; c < keys.length; c++) {
        const key = keys[c]!;
        const value = inherited?.[c] && !Object.hasOwn(row, key) ? undefined : row[key];
        this.#columns[c]!.push(value === null || value === undefined ? null : convert[c]!(value));
      }
      if (this.#columns[0]!.length >= size) this.#writeGroup();
    }
    this.#rows += rows.length;
    return this.#writer.drain();
  }

  finish(): Uint8Array {
    if (this.#finished) throw new Error('finish() was called twice');
    this.#finished = true;
    if (this.#columns[0]!.length > 0) this.#writeGroup();
    void this.#parquet.finish();
    return this.#writer.drain();
  }

  #writeGroup(): void {
    const columnData = this.#keys.map((name, c) => ({ name, data: this.#columns[c]! }));
    const length = this.#columns[0]!.length;
    this.#columns = this.#emptyColumns();
    // Our writer's flush() is synchronous, so write() is too (it only returns a promise to wait for an async flush).
    void this.#parquet.write({ columnData, rowGroupSize: length });
  }
}

/**
 * Apache Parquet, the columnar file DuckDB, Spark, pandas and Polars load without parsing
 * text. The schema comes from the declared column types (a 422 when a column has none);
 * rows are written in row groups of `parquet.rowGroupSize` as they fill, snappy-compressed.
 *
 * @example
 * ```ts
 * const encoder = parquetFormat.createEncoder({ columns: [{ name: 'id', type: 'integer' }] });
 * const bytes = Buffer.concat([encoder.encode([{ id: 1 }]), encoder.finish()]); // a .parquet file
 * ```
 */
export const parquetFormat: Format<ByteRowEncoder> = {
  name: 'parquet',
  contentType: 'application/vnd.apache.parquet',
  extension: 'parquet',
  gzip: false,
  createEncoder: (options) => new ParquetEncoder(options),
};
