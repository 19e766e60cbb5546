import { describeValue, ValidationError } from '../errors.js';
import type { ExportRequest } from '../request.js';

export const JOB_REQUEST_FIELDS = [
  'dataset',
  'format',
  'params',
  'columns',
  'filename',
  'compression',
  'notify',
  'timeZone',
  'dateFormat',
  'decimalSeparator',
  'csvPreset',
] as const;
export const LIST_QUERY_KEYS = new Set(['status', 'dataset', 'limit', 'cursor']);
/** The export options a stream takes in its query; every other key is a dataset param. */
export const STREAM_QUERY_KEYS = new Set([
  'format',
  'columns',
  'filename',
  'compression',
  'compressionLevel',
  'timeZone',
  'dateFormat',
  'decimalSeparator',
  'csvPreset',
]);

/** The HTTP names of the CSV options, flat in the body and the query. */
const CSV_FIELDS = { csvPreset: 'preset', decimalSeparator: 'decimalSeparator' } as const;

/**
 * A problem with an option named as the client sent it: `csv.preset` is `csvPreset` over HTTP,
 * and a stream's `compression.level` is its `compressionLevel` query parameter. Other errors
 * are returned as they are.
 */
export function withHttpFieldNames(error: unknown, route: string | undefined): unknown {
  if (!(error instanceof ValidationError) || error.field === undefined) return error;
  const names: [string, string][] = Object.entries(CSV_FIELDS).map(([name, option]) => [
    `csv.${option}`,
    name,
  ]);
  if (route === 'stream') names.push(['compression.level', 'compressionLevel']);
  const entry = names.find(([option]) => option === error.field);
  if (entry === undefined) return error;
  const [option, name] = entry;
  return new ValidationError(error.message.replaceAll(option, name), {
    field: name,
    code: error.code as 'VALIDATION_FAILED',
    statusCode: error.statusCode as 422,
    cause: error,
  });
}

/** The body of `POST /jobs` as an export request, or a 400 naming the field. */
export function checkJobRequest(body: unknown): ExportRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ValidationError(`Expected the request body to be a JSON object, got ${describeValue(body)}`, {
      statusCode: 400,
      code: 'BAD_REQUEST',
    });
  }
  const input = body as Record<string, unknown>;
  for (const key of Object.keys(input)) {
    if (!(JOB_REQUEST_FIELDS as readonly string[]).includes(key)) {
      throw badField(key, `Unknown field "${key.slice(0, 64)}"; expected ${JOB_REQUEST_FIELDS.join(', ')}`);
    }
  }
  const request: Record<string, unknown> = {};
  for (const field of ['dataset', 'format'] as const) {
    if (typeof input[field] !== 'string') {
      throw badField(field, `Expected ${field} to be a string, got ${describeValue(input[field])}`);
    }
    request[field] = input[field];
  }
  if (input.compression !== undefined) {
    const compression = input.compression;
    if (typeof compression !== 'string' && (typeof compression !== 'object' || compression === null)) {
      throw badField(
        'compression',
        `Expected compression to be a string or an object { type, level }, got ${describeValue(compression)}`,
      );
    }
    request.compression = compression;
  }
  const csv: Record<string, unknown> = {};
  for (const [field, option] of Object.entries(CSV_FIELDS)) {
    if (input[field] !== undefined) csv[option] = input[field];
  }
  if (Object.keys(csv).length > 0) request.csv = csv;
  for (const field of ['filename', 'timeZone', 'dateFormat', 'notify'] as const) {
    const value = input[field];
    if (value === undefined) continue;
    if (typeof value !== 'string')
      throw badField(field, `Expected ${field} to be a string, got ${describeValue(value)}`);
    request[field] = value;
  }
  if (input.params !== undefined) {
    if (typeof input.params !== 'object' || input.params === null || Array.isArray(input.params)) {
      throw badField('params', `Expected params to be an object, got ${describeValue(input.params)}`);
    }
    request.params = input.params;
  }
  if (input.columns !== undefined) {
    const columns = input.columns;
    const ok =
      typeof columns === 'string' ||
      (Array.isArray(columns) && columns.every((column) => typeof column === 'string'));
    if (!ok) {
      throw badField(
        'columns',
        `Expected columns to be an array of column names or a comma-separated string, got ${describeValue(columns)}`,
      );
    }
    request.columns = columns;
  }
  return request as unknown as ExportRequest;
}

/** The query of `GET /stream/:dataset` as an export request (params in a null-prototype object). */
export function streamRequest(dataset: string, query: URLSearchParams): ExportRequest {
  // Without a prototype, `?__proto__=1` is an own (and so unknown, 422) param like any other;
  // on a plain object the assignment would only try to change the prototype and be lost.
  const params: Record<string, string> = Object.create(null);
  const request: Record<string, unknown> = { dataset, format: 'csv' };
  for (const key of new Set(query.keys())) {
    const values = query.getAll(key);
    const field = STREAM_QUERY_KEYS.has(key) ? key : `params.${key}`;
    if (values.length > 1)
      throw badQuery(field, `Expected at most one "${key.slice(0, 64)}" query parameter`);
    if (STREAM_QUERY_KEYS.has(key)) request[key] = values[0];
    else params[key] = values[0]!;
  }
  request.params = params;
  const csv: Record<string, unknown> = {};
  for (const [field, option] of Object.entries(CSV_FIELDS)) {
    if (request[field] === undefined) continue;
    csv[option] = request[field];
    delete request[field];
  }
  if (Object.keys(csv).length > 0) request.csv = csv;
  if (request.compressionLevel !== undefined) {
    const level = request.compressionLevel as string;
    delete request.compressionLevel;
    if (request.compression === undefined) {
      throw new ValidationError('Expected compression ("gzip" or "zstd") beside compressionLevel', {
        field: 'compressionLevel',
      });
    }
    if (!/^\d{1,2}$/.test(level)) {
      throw new ValidationError(
        `Expected compressionLevel to be an integer, got ${JSON.stringify(level.slice(0, 20))}`,
        {
          field: 'compressionLevel',
        },
      );
    }
    request.compression = { type: request.compression, level: Number(level) };
  }
  return request as unknown as ExportRequest;
}

export function badField(field: string, message: string): ValidationError {
  return new ValidationError(message, { field: field.slice(0, 64), statusCode: 400, code: 'BAD_REQUEST' });
}

export function badQuery(field: string, message: string): ValidationError {
  return new ValidationError(message, { field: field.slice(0, 64), statusCode: 400, code: 'BAD_REQUEST' });
}
