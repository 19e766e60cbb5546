import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { csvFormat, csvStringifyOptions } from '../src/formats/csv.js';
import { jsonFormat } from '../src/formats/json.js';
import { ndjsonFormat } from '../src/formats/ndjson.js';
import type { CsvOptions, EncoderOptions, Format } from '../src/formats/types.js';

type Row = Record<string, unknown>;

/** Characters that make CSV interesting: quotes, delimiters, line breaks, formula starters. */
const special = fc.constantFrom(
  '"',
  ',',
  ';',
  '\t',
  '|',
  '\n',
  '\r',
  '\r\n',
  '=',
  '+',
  '-',
  '@',
  "'",
  ' ',
  'a',
  'é',
  '日本',
  '😀',
  '\uFF1D',
  '\uFF0B',
  '\uFF0D',
  '\uFF20',
  '\u2028',
  '\0',
);
/** Strings made of special characters and arbitrary (also lone-surrogate) text. */
const text = fc.oneof(
  fc
    .array(fc.oneof(special, fc.string({ unit: 'binary', maxLength: 3 })), { maxLength: 8 })
    .map((parts) => parts.join('')),
  fc.string({ unit: 'grapheme' }),
);

const value = fc.oneof(
  { weight: 6, arbitrary: text },
  fc.integer({ min: -1_000_000, max: 1_000_000 }),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.date(),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }),
  fc.array(fc.oneof(text, fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(text, fc.bigInt(), fc.boolean()), { maxKeys: 3 }),
);

const csvOptions = fc.record(
  {
    delimiter: fc.constantFrom(',', ';', '\t', '|', ' ', '.', '-', 'a', 'é', '\u2028', '||', '::', ', '),
    bom: fc.boolean(),
    eol: fc.constantFrom('lf' as const, 'crlf' as const),
    header: fc.boolean(),
    escapeFormulas: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** Rows over the keys k0..k(width-1), some of them left out, and labels for the header. */
const table = fc.integer({ min: 1, max: 5 }).chain((width) => {
  const keys = Array.from({ length: width }, (_, index) => `k${index}`);
  return fc.record({
    keys: fc.constant(keys),
    labels: fc.array(text, { minLength: width, maxLength: width }),
    rows: fc.array(fc.record(Object.fromEntries(keys.map((key) => [key, value])), { requiredKeys: [] }), {
      maxLength: 12,
    }),
  });
});

/** Splits rows into batches at arbitrary points (empty batches included). */
function splitInto(rows: Row[], cuts: number[]): Row[][] {
  const points = [...new Set(cuts.map((cut) => cut % (rows.length + 1)))].sort((a, b) => a - b);
  const batches: Row[][] = [];
  let start = 0;
  for (const point of [...points, rows.length]) {
    batches.push(rows.slice(start, point));
    start = point;
  }
  return batches;
}

function encodeAll(format: Format, batches: Row[][], options?: EncoderOptions): string {
  const encoder = format.createEncoder(options);
  return batches.map((batch) => encoder.encode(batch)).join('') + encoder.finish();
}

function referenceCsv(rows: Row[], columns: { key: string; header: string }[] | undefined, csv: CsvOptions) {
  return stringify(rows, {
    ...csvStringifyOptions({
      delimiter: csv.delimiter ?? ',',
      eol: csv.eol === 'crlf' ? '\r\n' : '\n',
      escapeFormulas: csv.escapeFormulas ?? true,
    }),
    columns,
    header: csv.header ?? true,
    bom: csv.bom ?? false,
  });
}

const cuts = fc.array(fc.nat(), { maxLength: 4 });

describe('csv encoder compared with csv-stringify', () => {
  it('gives byte-identical text for declared columns, any options and any batching', () => {
    fc.assert(
      fc.property(table, csvOptions, cuts, ({ keys, labels, rows }, csv, at) => {
        const columns = keys.map((name, index) => ({ name, label: labels[index]! }));
        const actual = encodeAll(csvFormat, splitInto(rows, at), { columns, csv });
        const expected = referenceCsv(
          rows,
          keys.map((key, index) => ({ key, header: labels[index]! })),
          csv,
        );
        expect(actual).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('gives byte-identical text when the columns come from the first row', () => {
    fc.assert(
      fc.property(table, csvOptions, cuts, ({ rows }, csv, at) => {
        const actual = encodeAll(csvFormat, splitInto(rows, at), { csv });
        expect(actual).toBe(
          rows.length === 0 ? (csv.bom ? '\uFEFF' : '') : referenceCsv(rows, undefined, csv),
        );
      }),
      { numRuns: 300 },
    );
  });
});

describe('csv read back with csv-parse', () => {
  const expectedCell = (cell: string, escapeFormulas: boolean) =>
    escapeFormulas && /^[=+\-@\t\r\uFF1D\uFF0B\uFF0D\uFF20]/.test(cell) ? `'${cell}` : cell;

  it.each([true, false])('returns every string (escapeFormulas: %s)', (escapeFormulas) => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 4 })
          .chain((width) =>
            fc.tuple(
              fc.array(text, { minLength: width, maxLength: width }),
              fc.array(fc.array(text, { minLength: width, maxLength: width }), { maxLength: 10 }),
            ),
          ),
        csvOptions,
        cuts,
        ([labels, cells], csv, at) => {
          const options = { ...csv, escapeFormulas };
          if (!escapeFormulas && options.delimiter === undefined) options.delimiter = ',';
          const columns = labels.map((label, index) => ({ name: `c${index}`, label }));
          const rows = cells.map((line) =>
            Object.fromEntries(line.map((cell, index) => [`c${index}`, cell])),
          );
          const output = encodeAll(csvFormat, splitInto(rows, at), { columns, csv: options });
          const records: string[][] = parse(output, {
            bom: true,
            delimiter: options.delimiter ?? ',',
            record_delimiter: options.eol === 'crlf' ? '\r\n' : '\n',
          });
          const expected = [...(options.header === false ? [] : [labels]), ...cells].map((line) =>
            line.map((cell) => expectedCell(cell, escapeFormulas)),
          );
          expect(records).toEqual(expected);
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('json and ndjson read back with JSON.parse', () => {
  const jsonRow = fc.dictionary(
    fc.string({ maxLength: 4 }),
    fc.oneof(text, fc.integer(), fc.boolean(), fc.constant(null), fc.array(text, { maxLength: 2 })),
    { maxKeys: 4 },
  );
  const rowsAndColumns = fc.record({
    rows: fc.array(jsonRow, { maxLength: 15 }),
    columns: fc.option(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 4 }), { maxLength: 4 }), {
      nil: undefined,
    }),
  });
  const project = (rows: Row[], columns: string[] | undefined) =>
    columns === undefined
      ? rows
      : rows.map((row) =>
          Object.fromEntries(columns.map((key) => [key, Object.hasOwn(row, key) ? row[key] : null])),
        );

  it('json: one array equal to the rows, projected onto the columns', () => {
    fc.assert(
      fc.property(rowsAndColumns, cuts, ({ rows, columns }, at) => {
        const options = columns && { columns: columns.map((name) => ({ name })) };
        const parsed = JSON.parse(encodeAll(jsonFormat, splitInto(rows, at), options));
        expect(parsed).toEqual(project(rows, columns));
        // Objects list integer-like keys first whatever the text says, so only check the others.
        if (columns?.every((key) => !/^(0|[1-9]\d*)$/.test(key))) {
          for (const row of parsed) expect(Object.keys(row)).toEqual(columns);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('ndjson: one line per row, each equal to the row projected onto the columns', () => {
    fc.assert(
      fc.property(rowsAndColumns, cuts, ({ rows, columns }, at) => {
        const options = columns && { columns: columns.map((name) => ({ name })) };
        const output = encodeAll(ndjsonFormat, splitInto(rows, at), options);
        const lines = output.split('\n');
        expect(lines.pop()).toBe('');
        expect(lines.map((line) => JSON.parse(line))).toEqual(project(rows, columns));
      }),
      { numRuns: 300 },
    );
  });
});
