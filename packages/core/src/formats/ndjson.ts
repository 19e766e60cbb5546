import { checkEncoderOptions, checkRows, ProjectedJsonWriter, type Row, stringifyJson } from './json.js';
import type { EncoderOptions, Format, RowEncoder } from './types.js';

class NdjsonEncoder implements RowEncoder {
  readonly #json = { bigint: false };
  readonly #projected: ProjectedJsonWriter | undefined;
  #rows = 0;
  #finished = false;

  constructor(options: EncoderOptions | undefined) {
    const { columns } = checkEncoderOptions(options);
    if (columns !== undefined) {
      this.#projected = new ProjectedJsonWriter(
        columns.map((column) => column.name),
        this.#json,
      );
    }
  }

  encode(rows: readonly Row[]): string {
    if (this.#finished) throw new Error('encode() was called after finish()');
    checkRows(rows, this.#rows);
    this.#rows += rows.length;
    if (this.#projected !== undefined) return this.#projected.write(rows, '', '', '\n');
    let out = '';
    for (let r = 0; r < rows.length; r++) out += (stringifyJson(rows[r], this.#json) ?? 'null') + '\n';
    return out;
  }

  finish(): string {
    if (this.#finished) throw new Error('finish() was called twice');
    this.#finished = true;
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
export const ndjsonFormat: Format = {
  name: 'ndjson',
  contentType: 'application/x-ndjson; charset=utf-8',
  extension: 'ndjson',
  createEncoder: (options) => new NdjsonEncoder(options),
};
