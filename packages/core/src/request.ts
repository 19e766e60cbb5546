// An export request on its way in: validated against its dataset and format into a
// PreparedExport, named, typed, and mapped to and from the job record that stores it.
import { checkOptionalString } from './checks.js';
import {
  type Compression,
  checkCompression,
  compressedContentType,
  compressionExtension,
} from './compression.js';
import {
  type Dataset,
  findDataset,
  hasTypedColumns,
  type Params,
  resolveColumns,
  validateParams,
} from './dataset.js';
import { describeValue, ValidationError } from './errors.js';
import { expandCsvPreset } from './formats/csv.js';
import { checkDateFormat, type DateFormat, normalizeTimeZone } from './formats/dates.js';
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
import type { JobRecord } from './jobs/job.js';

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
  /**
   * gzip or zstd for the file (`.csv.gz`, `.csv.zst`), with an optional level. zstd needs
   * Node >= 22.15.
   * @default 'none'
   */
  compression?: Compression;
  /** CSV options for this export, over the manager's defaults (a `preset` expands under the request's other options). */
  csv?: CsvOptions;
  /** The IANA time zone dates are written in. @default the manager's `timeZone`, else 'UTC' */
  timeZone?: string;
  /** How dates are written. @default the manager's `dateFormat`, else 'iso' */
  dateFormat?: DateFormat;
  /** Who asks; jobs are only visible to the same owner. Derive it from your own auth. */
  owner?: string;
  /** With `start()`: a second request with the same owner and key returns the first job. */
  idempotencyKey?: string;
  /**
   * With `start()`: a tag (1-64 letters, digits, `.`, `_`, `:`, `-`) handed to the
   * `webhooks.endpointsFor` option, which maps it to endpoints the operator configured.
   * Never a URL: clients never choose where webhooks go.
   */
  notify?: string;
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
  /** The request's own time zone (normalised) and date format, as a job stores them. */
  requestTimeZone: string | undefined;
  requestDateFormat: DateFormat | undefined;
  /** The time zone and date format in effect: the request's, else the manager's defaults. */
  timeZone: string | undefined;
  dateFormat: DateFormat | undefined;
  /** The manager's XLSX and Parquet options (there are none per request). */
  xlsx?: XlsxOptions | undefined;
  parquet?: ParquetOptions | undefined;
  owner: string | undefined;
  filename: string | undefined;
  idempotencyKey: string | undefined;
  notify: string | undefined;
}

const NOTIFY_TAG = /^[A-Za-z0-9._:-]{1,64}$/;
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
  defaults: {
    timeZone?: string | undefined;
    dateFormat?: DateFormat | undefined;
    xlsx?: XlsxOptions | undefined;
    parquet?: ParquetOptions | undefined;
  } = {},
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
  const compression = checkCompression(request.compression);
  const requestTimeZone =
    request.timeZone === undefined ? undefined : normalizeTimeZone(request.timeZone, 'timeZone');
  const requestDateFormat =
    request.dateFormat === undefined ? undefined : checkDateFormat(request.dateFormat, 'dateFormat');
  if (compression !== 'none' && format.gzip === false) {
    throw new ValidationError(
      `Expected compression "none" for ${format.name}: a .${format.extension} file is compressed already, and programs do not open it compressed again; got ${describeValue(compression)}`,
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
  const notify = request.notify ?? undefined;
  if (notify !== undefined && (typeof notify !== 'string' || !NOTIFY_TAG.test(notify))) {
    throw new ValidationError(
      `Expected notify to be a tag of 1-64 letters, digits, ".", "_", ":" or "-" (not a URL), got ${describeValue(notify)}`,
      { field: 'notify' },
    );
  }
  // The request's preset is expanded first, so that it wins over the manager's defaults too.
  const requestCsv = isPlainObject(request.csv) ? expandCsvPreset(request.csv) : request.csv;
  const csv = request.csv || csvDefaults ? { ...csvDefaults, ...requestCsv } : undefined;
  const prepared: PreparedExport = {
    dataset,
    format,
    params,
    columns,
    compression,
    requestCsv: request.csv,
    csv,
    requestTimeZone,
    requestDateFormat,
    timeZone: requestTimeZone ?? defaults.timeZone,
    dateFormat: requestDateFormat ?? defaults.dateFormat,
    ...(defaults.xlsx ? { xlsx: defaults.xlsx } : {}),
    ...(defaults.parquet ? { parquet: defaults.parquet } : {}),
    owner,
    filename,
    idempotencyKey,
    notify,
  };
  // Fail on bad CSV options (and Parquet's untyped columns) now, not after the slot was taken.
  createEncoder(prepared);
  return prepared;
}

export function createEncoder(
  prepared: Pick<
    PreparedExport,
    'format' | 'columns' | 'csv' | 'timeZone' | 'dateFormat' | 'xlsx' | 'parquet'
  >,
): AnyRowEncoder {
  return prepared.format.createEncoder({
    ...(prepared.columns ? { columns: prepared.columns } : {}),
    ...(prepared.csv ? { csv: prepared.csv } : {}),
    ...(prepared.timeZone ? { timeZone: prepared.timeZone } : {}),
    ...(prepared.dateFormat ? { dateFormat: prepared.dateFormat } : {}),
    ...(prepared.xlsx && prepared.format.name === 'xlsx' ? { xlsx: prepared.xlsx } : {}),
    ...(prepared.parquet && prepared.format.name === 'parquet' ? { parquet: prepared.parquet } : {}),
  });
}

function isPlainObject(value: unknown): value is CsvOptions {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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
  | 'timeZone'
  | 'dateFormat'
  | 'owner'
  | 'idempotencyKey'
  | 'notify'
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
    timeZone: prepared.requestTimeZone ?? null,
    dateFormat: prepared.requestDateFormat ?? null,
    owner: prepared.owner ?? null,
    idempotencyKey: prepared.idempotencyKey ?? null,
    // Only set when given, so that records of jobs without webhooks keep their old shape.
    ...(prepared.notify === undefined ? {} : { notify: prepared.notify }),
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
    ...(record.timeZone ? { timeZone: record.timeZone } : {}),
    ...(record.dateFormat ? { dateFormat: record.dateFormat } : {}),
    ...(record.owner ? { owner: record.owner } : {}),
    ...(record.idempotencyKey ? { idempotencyKey: record.idempotencyKey } : {}),
    ...(record.notify ? { notify: record.notify } : {}),
  };
}

/** True when two requests would produce the same export (for idempotency-key reuse checks). */
export function sameRequest(a: RequestFields, b: RequestFields): boolean {
  return (
    a.dataset === b.dataset &&
    a.format === b.format &&
    stableJson(a.compression) === stableJson(b.compression) &&
    a.filename === b.filename &&
    (a.timeZone ?? null) === (b.timeZone ?? null) &&
    (a.dateFormat ?? null) === (b.dateFormat ?? null) &&
    a.owner === b.owner &&
    (a.notify ?? null) === (b.notify ?? null) &&
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
  return compressedContentType(prepared.compression) ?? prepared.format.contentType;
}

/** The file extension of an export, without the dot (`csv`, `ndjson.gz`, `csv.zst`). */
export function extensionOf(prepared: { format: Format; compression: Compression }): string {
  return `${prepared.format.extension}${compressionExtension(prepared.compression)}`;
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
