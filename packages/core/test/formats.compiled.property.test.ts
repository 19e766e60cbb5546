import { stringify } from 'csv-stringify/sync';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { csvFormat, csvStringifyOptions } from '../src/formats/csv.js';
import { jsonFormat } from '../src/formats/json.js';
import { ndjsonFormat } from '../src/formats/ndjson.js';
import { COLUMN_TYPES, type ColumnSpec, type CsvOptions, type Format } from '../src/formats/types.js';

// The encoders compile code from the declared columns and their types. These properties check
// that (1) column names and labels cannot break out of the generated code, whatever they are,
// and (2) a declared type never changes the output: the text stays csv-stringify's for CSV and
// JSON.stringify's for JSON and NDJSON, also when a value is not of the declared type.

type Row = Record<string, unknown>;

/** Names that would break generated code spliced without escaping, and names JS treats specially. */
const hostileName = fc.oneof(
  fc.constantFrom(
    '"]);process.exit(1);//',
    "']);process.exit(1);//",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a name that is a template literal
    '`${process.exit(1)}`',
    '*/process.exit(1)/*',
    '\\',
    '\\"',
    '__proto__',
    'constructor',
    'toString',
    'hasOwnProperty',
    'toJSON',
    'valueOf',
    '0',
    '1',
    '01',
    '-1',
    'line\nbreak',
    'carriage\rreturn',
    '\u2028',
    '\u2029',
    '\0',
    '\uD800',
    '\uDFFF',
    'é日本😀',
    ' ',
    'v',
    'row',
    'out',
    'rows',
  ),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }),
);

/** Values of every kind, whatever a column declares. */
const anyValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'binary', maxLength: 6 }) },
  fc.constantFrom('', '=1+1', '-3', 'true', 'a,b', '"q"', 'x\ny', '\uD83D', '2024-01-01T00:00:00.000Z'),
  fc.integer({ min: -1_000_000, max: 1_000_000 }),
  fc.double(),
  fc.constantFrom(0, -0, 1e21, -1e-7, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.oneof(fc.date(), fc.constant(new Date(Number.NaN)), fc.constant(new Date(8.64e15))),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
  fc.array(fc.oneof(fc.string({ unit: 'binary', maxLength: 3 }), fc.integer(), fc.constant(undefined)), {
    maxLength: 3,
  }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(fc.string({ maxLength: 3 }), fc.date(), fc.boolean()), {
    maxKeys: 3,
  }),
  // A value with toJSON (one that ignores its key, as Date's does).
  fc.string({ maxLength: 4 }).map((text) => ({ toJSON: () => ({ wrapped: text }) })),
);

/** Declared columns with hostile names and random types, and rows holding some of them. */
const typedTable = fc
  .uniqueArray(hostileName, { minLength: 1, maxLength: 5 })
  .chain((names) =>
    fc.record({
      columns: fc.tuple(
        ...names.map((name) =>
          fc.record({
            name: fc.constant(name),
            label: fc.option(hostileName, { nil: undefined }),
            type: fc.option(fc.constantFrom(...COLUMN_TYPES), { nil: undefined }),
          }),
        ),
      ),
      rows: fc.array(
        fc.tuple(
          fc.array(fc.tuple(fc.constantFrom(...names), anyValue), { maxLength: names.length + 1 }),
          // Some rows are exactly the declared columns in order: they take the native JSON path.
          fc.boolean(),
          fc.array(anyValue, { minLength: names.length, maxLength: names.length }),
        ),
        { maxLength: 10 },
      ),
    }),
  )
  .map(({ columns, rows }) => ({
    columns: columns.map(({ name, label, type }) => ({
      name,
      ...(label === undefined ? {} : { label }),
      ...(type === undefined ? {} : { type }),
    })) as ColumnSpec[],
    rows: rows.map(([entries, exact, values]) => {
      const row: Row = {};
      // defineProperty, so that `__proto__` becomes an own key like any other.
      const set = (key: string, value: unknown) => {
        Object.defineProperty(row, key, { value, enumerable: true, writable: true, configurable: true });
      };
      if (exact) {
        columns.forEach((column, index) => {
          set(column.name, values[index]);
        });
      } else for (const [key, value] of entries) set(key, value);
      return row;
    }),
  }));

const cuts = fc.array(fc.nat(), { maxLength: 3 });

function splitInto(rows: Row[], at: number[]): Row[][] {
  const points = [...new Set(at.map((cut) => cut % (rows.length + 1)))].sort((a, b) => a - b);
  const batches: Row[][] = [];
  let start = 0;
  for (const point of [...points, rows.length]) {
    batches.push(rows.slice(start, point));
    start = point;
  }
  return batches;
}

function encodeAll(format: Format, batches: Row[][], columns: ColumnSpec[], csv?: CsvOptions): string {
  const encoder = format.createEncoder({ columns, ...(csv ? { csv } : {}) });
  return batches.map((batch) => encoder.encode(batch)).join('') + encoder.finish();
}

const canCsv = (value: unknown) => typeof value !== 'function' && typeof value !== 'symbol';

/** What the JSON encoders promise for one value: JSON.stringify's text, BigInt as its digits, null for the rest. */
function referenceJsonValue(value: unknown): string {
  return (
    JSON.stringify(value, (_key, inner) => (typeof inner === 'bigint' ? inner.toString() : inner)) ?? 'null'
  );
}

/** The row projected onto the columns, as JSON.stringify writes an object with those keys in that order. */
function referenceJsonRow(row: Row, columns: ColumnSpec[]): string {
  const members = columns.map(
    (column) =>
      `${JSON.stringify(column.name)}:${referenceJsonValue(Object.hasOwn(row, column.name) ? row[column.name] : undefined)}`,
  );
  return `{${members.join(',')}}`;
}

describe('compiled encoders with hostile column names and declared types', () => {
  it('csv: byte-identical to csv-stringify', () => {
    fc.assert(
      fc.property(
        typedTable,
        fc.constantFrom(',', ';', '\t', '.', '-', 'e', '1', 't', 'T', ':', '::'),
        fc.boolean(),
        cuts,
        ({ columns, rows }, delimiter, escapeFormulas, at) => {
          const csv = { delimiter, escapeFormulas };
          const usable = rows.filter((row) => Object.values(row).every(canCsv));
          const actual = encodeAll(csvFormat, splitInto(usable, at), columns, csv);
          // csv-stringify reads `row[key]`: give it the projected rows, so that a name such as
          // `toString` does not reach Object.prototype there either.
          const projected = usable.map((row) =>
            columns.map((column) => (Object.hasOwn(row, column.name) ? row[column.name] : undefined)),
          );
          const expected = stringify(
            [columns.map((column) => column.label ?? column.name), ...projected],
            csvStringifyOptions({ delimiter, eol: '\n', escapeFormulas: csv.escapeFormulas }),
          );
          expect(actual).toBe(expected);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('json: the text JSON.stringify gives for the projected rows', () => {
    fc.assert(
      fc.property(typedTable, cuts, ({ columns, rows }, at) => {
        const actual = encodeAll(jsonFormat, splitInto(rows, at), columns);
        expect(actual).toBe(`[${rows.map((row) => referenceJsonRow(row, columns)).join(',')}]`);
      }),
      { numRuns: 400 },
    );
  });

  it('ndjson: one line per row, the text JSON.stringify gives for the projected row', () => {
    fc.assert(
      fc.property(typedTable, cuts, ({ columns, rows }, at) => {
        const actual = encodeAll(ndjsonFormat, splitInto(rows, at), columns);
        expect(actual).toBe(rows.map((row) => `${referenceJsonRow(row, columns)}\n`).join(''));
      }),
      { numRuns: 400 },
    );
  });

  it('json: rows exactly of the declared shape give exactly JSON.stringify(rows)', () => {
    const plainValue = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 8 }),
      fc.double(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.date(),
      fc.array(fc.oneof(fc.string({ unit: 'binary' }), fc.constant(undefined), fc.date()), { maxLength: 3 }),
      fc.object({ maxDepth: 2 }),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(hostileName, { minLength: 1, maxLength: 4 }).chain((names) =>
          fc.tuple(
            fc.constant(names),
            fc.array(fc.array(plainValue, { minLength: names.length, maxLength: names.length }), {
              maxLength: 8,
            }),
          ),
        ),
        cuts,
        ([names, table], at) => {
          const rows = table.map((values) => {
            const row: Row = {};
            names.forEach((name, index) => {
              Object.defineProperty(row, name, {
                value: values[index],
                enumerable: true,
                writable: true,
                configurable: true,
              });
            });
            return row;
          });
          const columns = names.map((name) => ({ name }));
          // JSON.stringify writes integer-like keys first; the encoder keeps the declared order.
          const expected = names.every((name) => !/^(0|[1-9]\d*)$/.test(name))
            ? JSON.stringify(rows)
            : `[${rows.map((row) => referenceJsonRow(row, columns)).join(',')}]`;
          expect(encodeAll(jsonFormat, splitInto(rows, at), columns)).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });
});
