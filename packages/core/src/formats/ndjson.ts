import { JsonRowsEncoder, type Row } from './encoder-helpers.js';
import type { Format, RowEncoder } from './types.js';

class NdjsonEncoder extends JsonRowsEncoder {
  protected encodeBatch(rows: readonly Row[]): string {
    const projected = this.projected;
    if (projected !== undefined && !projected.nativeBatch(rows)) return projected.write(rows, '', '', '\n');
    let out = '';
    for (let r = 0; r < rows.length; r++) out += (this.stringify(rows[r]) ?? 'null') + '\n';
    return out;
  }

  protected closing(): string {
    return '';
  }
}

/**
 * Newline-delimited JSON: one row object per line, every line ending in `\n`. Dates become
 * ISO 8601 strings, BigInts strings of their digits.
 *
 * @example
 * ```ts
 * ndjsonFormat.createEncoder().encode([{ id: 1 }, { id: 2 }]); // '{"id":1}\n{"id":2}\n'
 * ```
 */
export const ndjsonFormat: Format<RowEncoder> = {
  name: 'ndjson',
  contentType: 'application/x-ndjson; charset=utf-8',
  extension: 'ndjson',
  createEncoder: (options) => new NdjsonEncoder(options),
};
