import type { DateFormat } from './dates.js';

/** The export formats the library knows. */
export type FormatName = 'csv' | 'json' | 'ndjson' | 'xlsx' | 'parquet';

/** Every known format, in the order they are advertised. */
export const FORMAT_NAMES: readonly FormatName[] = ['csv', 'json', 'ndjson', 'xlsx', 'parquet'];

/**
 * How a column's values are meant to be read. XLSX writes typed cells from it (numbers, dates,
 * booleans, text), and Parquet takes its schema from it; the text formats write values as given.
 */
export type ColumnType = 'string' | 'number' | 'integer' | 'boolean' | 'date' | 'json';

/** Every column type. A declared type lets the encoders compile a faster path for its values. */
export const COLUMN_TYPES: readonly ColumnType[] = ['string', 'number', 'integer', 'boolean', 'date', 'json'];

export interface ColumnSpec {
  /** The key of the field in each row. */
  name: string;
  /** The CSV header text. @default name */
  label?: string;
  /**
   * The values the column holds. The encoders compile a faster path for it (e.g. an integer
   * needs no CSV quoting test); a value of another type is still written as without a type.
   */
  type?: ColumnType;
  description?: string;
}

export interface CsvOptions {
  /**
   * Settings for a spreadsheet program, under any option given beside it. `'excel'`: a UTF-8
   * BOM, `;` between cells, CRLF line endings and a decimal comma, as Excel reads CSV in
   * locales that write `1,5` (most of Europe). Never guessed: ask for it.
   * @example
   * ```ts
   * const options: CsvOptions = { preset: 'excel' };
   * ```
   */
  preset?: 'excel';
  /** @default ',' (or `';'` with `preset: 'excel'`) */
  delimiter?: string;
  /**
   * The decimal mark of numbers: `','` writes `1.5` as `1,5`. It cannot be the delimiter too.
   * @default '.' (or `','` with `preset: 'excel'`)
   */
  decimalSeparator?: '.' | ',';
  /** Prefix the file with a UTF-8 byte order mark (for Excel). @default false (true with `preset: 'excel'`) */
  bom?: boolean;
  /** Line ending. @default 'lf' ('crlf' with `preset: 'excel'`) */
  eol?: 'lf' | 'crlf';
  /** Write a header row. @default true */
  header?: boolean;
  /**
   * Prefix cells that start with `=`, `+`, `-`, `@`, tab or CR with `'` so that spreadsheet
   * programs do not run them as formulas (CSV injection). Only turn off for trusted data.
   * @default true
   */
  escapeFormulas?: boolean;
}

export interface EncoderOptions {
  /**
   * The columns to write, in order. `undefined` means: every key of the first row, in its order.
   * JSON and NDJSON project each row onto these columns too.
   */
  columns?: readonly ColumnSpec[];
  csv?: CsvOptions;
  /**
   * The IANA time zone dates are written in (Dates, and values of `type: 'date'` columns).
   * @default 'UTC'
   */
  timeZone?: string;
  /** How dates are written: `'iso'`, `'iso-local'` or `'date'` (see {@link DateFormat}). @default 'iso' */
  dateFormat?: DateFormat;
  xlsx?: XlsxOptions;
  parquet?: ParquetOptions;
}

export interface XlsxOptions {
  /** Write a header row of the column labels, frozen at the top of each sheet. @default true */
  header?: boolean;
  /** Set the header row in bold. @default true */
  boldHeader?: boolean;
  /** The width of every column, in characters. @default 16 */
  columnWidth?: number;
  /** The deflate level of the zip container, 0 (stored) to 9. @default 1 */
  compressionLevel?: number;
}

export interface ParquetOptions {
  /**
   * Rows per row group. A row group is held in memory until it is full, then written out: this
   * bounds the memory an export takes. @default 50_000
   */
  rowGroupSize?: number;
  /** Page compression. `'zstd'` needs a Node.js whose `zlib` has zstd (22.15+, 23.8+). @default 'snappy' */
  compression?: 'snappy' | 'gzip' | 'zstd' | 'none';
}

/**
 * A pure, stateful encoder: rows in, text out. It knows nothing of streams, so it can be
 * unit-tested and reused (the stream plumbing lives in `export-stream.ts`).
 */
export interface RowEncoder {
  /** Text encoders leave this out; see {@link ByteRowEncoder}. */
  readonly output?: 'text';
  /** Encodes one batch of rows. The first call also carries any preamble (BOM, header, `[`). */
  encode(rows: readonly Record<string, unknown>[]): string;
  /** The closing text (e.g. `]`, or the header alone for an empty CSV). Call exactly once. */
  finish(): string;
}

/**
 * An encoder of a binary file (a zip container, Parquet): rows in, bytes out. The same
 * contract as {@link RowEncoder}, with `Uint8Array` for text. A returned array is the
 * caller's: the encoder does not write to it again.
 */
export interface ByteRowEncoder {
  readonly output: 'bytes';
  encode(rows: readonly Record<string, unknown>[]): Uint8Array;
  finish(): Uint8Array;
}

/** Either kind of encoder; tell them apart by `output`. */
export type AnyRowEncoder = RowEncoder | ByteRowEncoder;

export interface Format<Encoder extends AnyRowEncoder = AnyRowEncoder> {
  readonly name: FormatName;
  /** Full media type, with the charset for text, e.g. `text/csv; charset=utf-8`. */
  readonly contentType: string;
  /** File extension without the dot. */
  readonly extension: string;
  /**
   * `false` for files that are compressed already (XLSX is a zip, Parquet compresses its
   * pages): an export of them with `compression: 'gzip'` is refused. @default true
   */
  readonly gzip?: boolean;
  createEncoder(options?: EncoderOptions): Encoder;
}
