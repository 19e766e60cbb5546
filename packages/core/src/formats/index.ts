import { describeValue, ValidationError } from '../errors.js';
import { csvFormat } from './csv.js';
import { jsonFormat } from './json.js';
import { ndjsonFormat } from './ndjson.js';
import { parquetFormat } from './parquet.js';
import { FORMAT_NAMES, type Format, type FormatName } from './types.js';
import { xlsxFormat } from './xlsx.js';

export { csvFormat } from './csv.js';
export { jsonFormat } from './json.js';
export { ndjsonFormat } from './ndjson.js';
export { parquetFormat } from './parquet.js';
export type {
  AnyRowEncoder,
  ByteRowEncoder,
  ColumnSpec,
  ColumnType,
  CsvOptions,
  EncoderOptions,
  Format,
  FormatName,
  ParquetOptions,
  RowEncoder,
  XlsxOptions,
} from './types.js';
export { FORMAT_NAMES } from './types.js';
export { xlsxFormat } from './xlsx.js';

const FORMATS: Readonly<Record<FormatName, Format>> = {
  csv: csvFormat,
  json: jsonFormat,
  ndjson: ndjsonFormat,
  xlsx: xlsxFormat,
  parquet: parquetFormat,
};

/**
 * The format of the given name.
 *
 * @throws {ValidationError} `UNKNOWN_FORMAT` (422, field `format`) for any other value.
 * @example
 * ```ts
 * const format = getFormat(request.query.format ?? 'csv');
 * response.setHeader('Content-Type', format.contentType);
 * ```
 */
export function getFormat(name: unknown): Format {
  if (typeof name === 'string' && Object.hasOwn(FORMATS, name)) return FORMATS[name as FormatName];
  const given =
    typeof name === 'string'
      ? JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name)
      : describeValue(name);
  throw new ValidationError(`Unknown format ${given}; expected one of ${FORMAT_NAMES.join(', ')}`, {
    code: 'UNKNOWN_FORMAT',
    statusCode: 422,
    field: 'format',
  });
}
