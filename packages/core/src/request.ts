// An export request on its way in: validated against its dataset and format into a
// PreparedExport, named, typed, and mapped to and from the job record that stores it.
import { checkOptionalString } from './checks.js';
import {
  type Dataset,
  findDataset,
  hasTypedColumns,
  type Params,
  resolveColumns,
  validateParams,
} from './dataset.js';
import { describeValue, ValidationError } from './errors.js';
import { getFormat } from './formats/index.js';
import type {
  AnyRowEncoder,
  ColumnSpec,
  CsvOptions,
  Format,
  FormatName,
  ParquetOptions,
  XlsxOptions,
} from './formats/types.js';
import type { Compression, JobRecord } from './jobs/job.js';

/** What to export. The same shape for streamed exports and jobs. */
export interface ExportRequest {
  dataset: string;
  format: FormatName;
  /** Dataset params; validated and coerced against the dataset's declared params. */
  params?: Record<string, unknown>;
  /** Columns to write, in order (names or a comma-separated string). @default the dataset's columns */
  columns?: readonly string[] | string;
  /** The download file name to suggest to clients. @default `<dataset>-<timestamp>.<ext>` */
  filename?: string;
  /** @default 'none' */
  compression?: Compression;
  /** CSV options for this export, over the manager's defaults. */
  csv?: CsvOptions;
  /** Who asks; jobs are only visible to the same owner. Derive it from your own auth. */
  owner?: string;
  /** With `start()`: a second request with the same owner and key returns the first job. */
  idempotencyKey?: string;
}

/** A request checked against its dataset and format: everything an export needs to run. */
export interface PreparedExport {
  dataset: Dataset;
  format: Format;
  params: Params;
  columns: readonly ColumnSpec[] | undefined;
  compression: Compression;
  /** The request's own CSV options (stored with a job). */
  requestCsv: CsvOptions | undefined;
  /** The CSV options in effect: the manager's defaults under the request's. */
  csv: CsvOptions | undefined;
  /** The manager's XLSX and Parquet options (there are none per request). */
  xlsx?: XlsxOptions | undefined;
  parquet?: ParquetOptions | undefined;
  owner: string | undefined;
  filename: string | undefined;
  idempotencyKey: string | undefined;
}

const MAX_OWNER_LENGTH = 256;
const MAX_FILENAME_LENGTH = 255;
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/**
 * Checks a request before any slot is taken or byte written.
 * @throws {ValidationError | NotFoundError} 400/404/422 naming the field
 */
export function prepare(
  request: ExportRequest,
  datasets: ReadonlyMap<string, Dataset>,
  csvDefaults: CsvOptions | undefined,
  formatDefaults: { xlsx?: XlsxOptions | undefined; parquet?: ParquetOptions | undefined } = {},
): PreparedExport {
  if (typeof request !== 'object' || request === null) {
    throw new ValidationError(`Expected an export request object, got ${describeValue(request)}`, {
      statusCode: 400,
    });
  }
  const dataset = findDataset(datasets, request.dataset);
  const format = getFormat(request.format);
  if (!dataset.formats.includes(format.name)) {
    throw new ValidationError(
      `Dataset "${dataset.name}" cannot be exported as ${format.name}; expected one of ${dataset.formats.join(', ')}${format.name === 'parquet' && !hasTypedColumns(dataset) ? ' (parquet needs typed columns: the dataset declares no type for some of its columns)' : ''}`,
      { field: 'format', code: 'UNKNOWN_FORMAT' },
    );
  }
  const params = validateParams(dataset, request.params);
  const columns = resolveColumns(dataset, request.columns);
  const compression = request.compression ?? 'none';
  if (compression !== 'none' && compression !== 'gzip') {
    throw new ValidationError(
      `Expected compression to be "none" or "gzip", got ${describeValue(compression)}`,
      {
        field: 'compression',
      },
    );
  }
  if (compression === 'gzip' && format.gzip === false) {
    throw new ValidationError(
      `Expected compression "none" for ${format.name}: a .${format.extension} file is compressed already, and programs do not open it gzipped; got "gzip"`,
      { field: 'compression' },
    );
  }
  const owner = checkOptionalString('owner', request.owner, MAX_OWNER_LENGTH);
  const filename = checkOptionalString('filename', request.filename, MAX_FILENAME_LENGTH);
  const idempotencyKey = checkOptionalString(
    'idempotencyKey',
    request.idempotencyKey,
    MAX_IDEMPOTENCY_KEY_LENGTH,
  );
  const csv = request.csv || csvDefaults ? { ...csvDefaults, ...request.csv } : undefined;
  const prepared: PreparedExport = {
    dataset,
    format,
    params,
    columns,
    compression,
    requestCsv: request.csv,
    csv,
    ...(formatDefaults.xlsx ? { xlsx: formatDefaults.xlsx } : {}),
    ...(formatDefaults.parquet ? { parquet: formatDefaults.parquet } : {}),
    owner,
    filename,
    idempotencyKey,
  };
  // Fail on bad CSV options (and Parquet's untyped columns) now, not after the slot was taken.
  createEncoder(prepared);
  return prepared;
}

export function createEncoder(
  prepared: Pick<PreparedExport, 'format' | 'columns' | 'csv' | 'xlsx' | 'parquet'>,
): AnyRowEncoder {
  return prepared.format.createEncoder({
    ...(prepared.columns ? { columns: prepared.columns } : {}),
    ...(prepared.csv ? { csv: prepared.csv } : {}),
    ...(prepared.xlsx && prepared.format.name === 'xlsx' ? { xlsx: prepared.xlsx } : {}),
    ...(prepared.parquet && prepared.format.name === 'parquet' ? { parquet: prepared.parquet } : {}),
  });
}

/** The fields of a job record that describe its request. */
export type RequestFields = Pick<
  JobRecord,
  | 'dataset'
  | 'format'
  | 'params'
  | 'columns'
  | 'filename'
  | 'compression'
  | 'csv'
  | 'owner'
  | 'idempotencyKey'
>;

/** The request as a job record stores it. {@link requestOfRecord} is its inverse. */
export function recordOfRequest(prepared: PreparedExport): RequestFields {
  return {
    dataset: prepared.dataset.name,
    format: prepared.format.name,
    params: prepared.params,
    columns: prepared.columns ? prepared.columns.map((column) => column.name) : null,
    filename: prepared.filename ?? null,
    compression: prepared.compression,
    csv: prepared.requestCsv ?? null,
    owner: prepared.owner ?? null,
    idempotencyKey: prepared.idempotencyKey ?? null,
  };
}

/** The request a stored job was made from, to run it again (resume, another worker). */
export function requestOfRecord(record: RequestFields): ExportRequest {
  return {
    dataset: record.dataset,
    format: record.format,
    params: record.params,
    compression: record.compression,
    ...(record.columns ? { columns: record.columns } : {}),
    ...(record.filename ? { filename: record.filename } : {}),
    ...(record.csv ? { csv: record.csv } : {}),
    ...(record.owner ? { owner: record.owner } : {}),
    ...(record.idempotencyKey ? { idempotencyKey: record.idempotencyKey } : {}),
  };
}

/** True when two requests would produce the same export (for idempotency-key reuse checks). */
export function sameRequest(a: RequestFields, b: RequestFields): boolean {
  return (
    a.dataset === b.dataset &&
    a.format === b.format &&
    a.compression === b.compression &&
    a.filename === b.filename &&
    a.owner === b.owner &&
    stableJson(a.params) === stableJson(b.params) &&
    stableJson(a.columns) === stableJson(b.columns) &&
    stableJson(a.csv) === stableJson(b.csv)
  );
}

function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'undefined';
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, item]) => item !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${stableJson(item)}`).join(',')}}`;
}

/** The media type of the bytes an export produces. */
export function contentTypeOf(prepared: { format: Format; compression: Compression }): string {
  return prepared.compression === 'gzip' ? 'application/gzip' : prepared.format.contentType;
}

/** The file extension of an export, without the dot (`csv`, `ndjson.gz`). */
export function extensionOf(prepared: { format: Format; compression: Compression }): string {
  return `${prepared.format.extension}${prepared.compression === 'gzip' ? '.gz' : ''}`;
}

/** The file name suggested to clients: the requested one with the right extension, or `<dataset>-<timestamp>.<ext>`. */
export function downloadName(
  requested: string | undefined,
  prepared: { dataset: { name: string }; format: Format; compression: Compression },
  createdAtMs: number,
): string {
  const extension = `.${extensionOf(prepared)}`;
  if (requested) return requested.toLowerCase().endsWith(extension) ? requested : `${requested}${extension}`;
  const stamp = new Date(createdAtMs)
    .toISOString()
    .replace(/[:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${prepared.dataset.name}-${stamp}${extension}`;
}

/** The download name of a stored job. */
export function downloadNameOfRecord(record: JobRecord): string {
  return downloadName(
    record.filename ?? undefined,
    { dataset: { name: record.dataset }, format: getFormat(record.format), compression: record.compression },
    Date.parse(record.createdAt),
  );
}
