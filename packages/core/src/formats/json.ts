import { JsonRowsEncoder, type Row } from './encoder-helpers.js';
import type { Format, RowEncoder } from './types.js';

class JsonEncoder extends JsonRowsEncoder {
  protected encodeBatch(rows: readonly Row[]): string {
    if (rows.length === 0) return '';
    const lead = this.rows === 0 ? '[' : ',';
    const projected = this.projected;
    if (projected !== undefined && !projected.nativeBatch(rows)) return projected.write(rows, lead, ',', '');
    // One stringify per batch is faster than one per row; the batch's own brackets are cut off.
    return lead + this.stringify(rows)!.slice(1, -1);
  }

  protected closing(): string {
    return this.rows === 0 ? '[]' : ']';
  }
}

/**
 * One JSON array of row objects. Dates become ISO 8601 strings (or the export's `timeZone` and `dateFormat`), BigInts strings of their digits.
 *
 * @example
 * ```ts
 * const encoder = jsonFormat.createEncoder({ columns: [{ name: 'id' }] });
 * encoder.encode([{ id: 1, secret: 'x' }]) + encoder.finish(); // '[{"id":1}]'
 * ```
 */
export const jsonFormat: Format<RowEncoder> = {
  name: 'json',
  contentType: 'application/json; charset=utf-8',
  extension: 'json',
  createEncoder: (options) => new JsonEncoder(options),
};
