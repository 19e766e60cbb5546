import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import {
  csvFormat,
  type EncoderOptions,
  type Format,
  getFormat,
  jsonFormat,
  ndjsonFormat,
} from '../src/formats/index.js';

type Row = Record<string, unknown>;

/** Runs an encoder the way the stream plumbing does: one `encode` per batch, then `finish`. */
function encodeAll(format: Format, batches: Row[][], options?: EncoderOptions): string {
  const encoder = format.createEncoder(options);
  return batches.map((batch) => encoder.encode(batch)).join('') + encoder.finish();
}

function readCsv(text: string, options: { delimiter?: string } = {}): string[][] {
  return parse(text, { bom: true, ...options });
}

function captureError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }
  throw new Error('expected a ValidationError, nothing was thrown');
}

const people: Row[] = [
  { id: 1, name: 'Ada', email: 'ada@example.com' },
  { id: 2, name: 'Grace', email: 'grace@example.com' },
  { id: 3, name: 'Linus', email: 'linus@example.com' },
];

describe('getFormat', () => {
  it('returns each format with its media type and extension', () => {
    expect(getFormat('csv')).toBe(csvFormat);
    expect(getFormat('json')).toBe(jsonFormat);
    expect(getFormat('ndjson')).toBe(ndjsonFormat);
    expect(
      [csvFormat, jsonFormat, ndjsonFormat].map(({ name, contentType, extension }) => [
        name,
        contentType,
        extension,
      ]),
    ).toEqual([
      ['csv', 'text/csv; charset=utf-8', 'csv'],
      ['json', 'application/json; charset=utf-8', 'json'],
      ['ndjson', 'application/x-ndjson; charset=utf-8', 'ndjson'],
    ]);
  });

  it('rejects an unknown name with UNKNOWN_FORMAT, 422 and the names it knows', () => {
    const error = captureError(() => getFormat('xml'));
    expect(error.message).toBe('Unknown format "xml"; expected one of csv, json, ndjson, xlsx, parquet');
    expect(error.code).toBe('UNKNOWN_FORMAT');
    expect(error.statusCode).toBe(422);
    expect(error.field).toBe('format');
  });

  it('rejects non-strings and names that only exist on Object.prototype', () => {
    expect(captureError(() => getFormat(5)).message).toBe(
      'Unknown format 5 (number); expected one of csv, json, ndjson, xlsx, parquet',
    );
    expect(captureError(() => getFormat(undefined)).code).toBe('UNKNOWN_FORMAT');
    expect(captureError(() => getFormat('toString')).code).toBe('UNKNOWN_FORMAT');
    expect(captureError(() => getFormat('__proto__')).code).toBe('UNKNOWN_FORMAT');
    expect(captureError(() => getFormat('CSV')).code).toBe('UNKNOWN_FORMAT');
  });
});

describe('csv', () => {
  it('writes a header from labels (else names) and projects rows onto the columns in order', () => {
    const text = encodeAll(csvFormat, [people], {
      columns: [{ name: 'email', label: 'E-mail' }, { name: 'id' }, { name: 'missing', label: 'Missing' }],
    });
    expect(text).toBe('E-mail,id,Missing\nada@example.com,1,\ngrace@example.com,2,\nlinus@example.com,3,\n');
    expect(readCsv(text)).toEqual([
      ['E-mail', 'id', 'Missing'],
      ['ada@example.com', '1', ''],
      ['grace@example.com', '2', ''],
      ['linus@example.com', '3', ''],
    ]);
  });

  it('takes the columns from the keys of the first row and projects later rows onto them', () => {
    const text = encodeAll(csvFormat, [[{ b: 1, a: 2 }], [{ a: 3, extra: 'x' }, { b: 4 }]]);
    expect(readCsv(text)).toEqual([
      ['b', 'a'],
      ['1', '2'],
      ['', '3'],
      ['4', ''],
    ]);
  });

  it('writes the header and the BOM once, at the very start, across batches', () => {
    const text = encodeAll(csvFormat, [[], [people[0]!], [], [people[1]!, people[2]!]], {
      csv: { bom: true },
    });
    expect(text.startsWith('\uFEFFid,name,email\n')).toBe(true);
    expect(text.split('\uFEFF')).toHaveLength(2);
    expect(text.match(/id,name,email/g)).toHaveLength(1);
    expect(readCsv(text)).toHaveLength(4);
  });

  it('gives the header alone for an empty export with known columns, else nothing', () => {
    const columns = [{ name: 'id' }, { name: 'name', label: 'Name' }];
    expect(encodeAll(csvFormat, [], { columns })).toBe('id,Name\n');
    expect(encodeAll(csvFormat, [[], []], { columns, csv: { bom: true, eol: 'crlf' } })).toBe(
      '\uFEFFid,Name\r\n',
    );
    expect(encodeAll(csvFormat, [], { columns, csv: { header: false } })).toBe('');
    expect(encodeAll(csvFormat, [[]])).toBe('');
    expect(encodeAll(csvFormat, [], { csv: { bom: true } })).toBe('\uFEFF');
  });

  it('leaves out the header when header is false', () => {
    expect(encodeAll(csvFormat, [people.slice(0, 2)], { csv: { header: false } })).toBe(
      '1,Ada,ada@example.com\n2,Grace,grace@example.com\n',
    );
  });

  it('ends every line with CRLF when asked, and still quotes a lone LF inside a value', () => {
    const text = encodeAll(csvFormat, [[{ a: 'one\ntwo', b: 'x' }], [{ a: 'cr\ronly', b: 'y' }]], {
      csv: { eol: 'crlf' },
    });
    expect(text).toBe('a,b\r\n"one\ntwo",x\r\n"cr\ronly",y\r\n');
    expect(readCsv(text)).toEqual([
      ['a', 'b'],
      ['one\ntwo', 'x'],
      ['cr\ronly', 'y'],
    ]);
  });

  it.each([';', '\t', '|', '||'])('uses the delimiter %j and quotes values that contain it', (delimiter) => {
    const rows = [{ a: `x${delimiter}y`, b: 'plain', c: 'quote "here"' }];
    const text = encodeAll(csvFormat, [rows], { csv: { delimiter } });
    expect(text.split('\n')[0]).toBe(['a', 'b', 'c'].join(delimiter));
    expect(readCsv(text, { delimiter })).toEqual([
      ['a', 'b', 'c'],
      [`x${delimiter}y`, 'plain', 'quote "here"'],
    ]);
  });

  it('writes booleans, Dates, null, undefined, bigint and nested values as documented', () => {
    const row = {
      yes: true,
      no: false,
      at: new Date(Date.UTC(2024, 1, 29, 12, 30, 0, 5)),
      bad: new Date(Number.NaN),
      nil: null,
      undef: undefined,
      big: 123456789012345678901234567890n,
      nested: { a: [1, 'two'], big: 5n },
      list: ['x', 'y,z'],
      neg: -1.5,
    };
    const [header, values] = readCsv(encodeAll(csvFormat, [[row]]));
    expect(header).toEqual(Object.keys(row));
    expect(values).toEqual([
      'true',
      'false',
      '2024-02-29T12:30:00.005Z',
      '',
      '',
      '',
      '123456789012345678901234567890',
      '{"a":[1,"two"],"big":"5"}',
      '["x","y,z"]',
      '-1.5',
    ]);
  });

  it('escapes formula-like cells by default and leaves them alone when escapeFormulas is false', () => {
    const row = {
      eq: '=1+1',
      plus: '+1',
      minus: '-1',
      at: '@SUM(A1)',
      tab: '\tx',
      cr: '\rx',
      safe: 'a=b',
      num: -3,
    };
    const [, escaped] = readCsv(encodeAll(csvFormat, [[row]]));
    expect(escaped).toEqual(["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", 'a=b', '-3']);
    const [, raw] = readCsv(encodeAll(csvFormat, [[row]], { csv: { escapeFormulas: false } }));
    expect(raw).toEqual(['=1+1', '+1', '-1', '@SUM(A1)', '\tx', '\rx', 'a=b', '-3']);
  });

  it('escapes formula-like header labels too', () => {
    const text = encodeAll(csvFormat, [], { columns: [{ name: 'a', label: '=cmd' }] });
    expect(text).toBe("'=cmd\n");
  });

  it('does not read columns a row lacks from Object.prototype', () => {
    const columns = [{ name: 'toString' }, { name: 'constructor' }, { name: 'id' }];
    expect(encodeAll(csvFormat, [[{ id: 1 }, { toString: 'own', id: 2 }]], { columns })).toBe(
      'toString,constructor,id\n,,1\nown,,2\n',
    );
  });

  it('rejects rows that are not objects and values CSV cannot hold, naming the row or column', () => {
    const encoder = csvFormat.createEncoder();
    encoder.encode([{ a: 1 }]);
    const notObject = captureError(() => encoder.encode([{ a: 2 }, null as unknown as Row]));
    expect(notObject.code).toBe('INVALID_ROW');
    expect(notObject.message).toBe('Expected row 3 to be an object, got null');
    const fn = captureError(() => csvFormat.createEncoder().encode([{ f: () => 1 }]));
    expect(fn.code).toBe('INVALID_ROW');
    expect(fn.message).toContain('column "f"');
    const multi = captureError(() =>
      csvFormat.createEncoder({ csv: { delimiter: '::' } }).encode([{ s: Symbol('x') }]),
    );
    expect(multi.code).toBe('INVALID_ROW');
  });

  it('writes typed columns like untyped ones, also values of another type', () => {
    const columns = [
      { name: 'i', type: 'integer' },
      { name: 'b', type: 'boolean' },
      { name: 'd', type: 'date' },
      { name: 'n', type: 'number' },
    ] as const;
    const rows = [
      { i: -3, b: true, d: new Date(0), n: 1.5 },
      { i: '=x', b: 'yes', d: '2024-01-01', n: 10n },
      { i: null, b: false, d: new Date(Number.NaN), n: Number.NaN },
    ];
    const untyped = columns.map(({ name }) => ({ name }));
    const typedText = csvFormat.createEncoder({ columns: [...columns] }).encode(rows);
    expect(typedText).toBe(csvFormat.createEncoder({ columns: untyped }).encode(rows));
    expect(typedText).toBe(
      "i,b,d,n\n-3,true,1970-01-01T00:00:00.000Z,1.5\n'=x,yes,2024-01-01,10\n,false,,NaN\n",
    );
    // A delimiter a number is written with quotes the number.
    expect(
      csvFormat.createEncoder({ columns: [...columns], csv: { delimiter: '.' } }).encode([rows[0]!]),
    ).toBe('i.b.d.n\n-3.true."1970-01-01T00:00:00.000Z"."1.5"\n');
  });

  it('rejects an unknown column type, naming the column and the types it knows', () => {
    for (const format of [csvFormat, jsonFormat, ndjsonFormat]) {
      const error = captureError(() =>
        format.createEncoder({ columns: [{ name: 'a' }, { name: 'b', type: 'float' as 'number' }] }),
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.field).toBe('columns[1].type');
      expect(error.message).toBe(
        'Expected columns[1].type to be one of string, number, integer, boolean, date, json, got "float" (string)',
      );
    }
  });

  it('refuses to be used after finish()', () => {
    const encoder = csvFormat.createEncoder();
    encoder.finish();
    expect(() => encoder.finish()).toThrow(/twice/);
    expect(() => encoder.encode([{ a: 1 }])).toThrow(/after finish/);
  });

  it.each<[unknown, string, string]>([
    [{ delimiter: 5 }, 'csv.delimiter', 'Expected csv.delimiter to be a non-empty string, got 5 (number)'],
    [{ delimiter: '' }, 'csv.delimiter', 'Expected csv.delimiter to be a non-empty string, got "" (string)'],
    [
      { delimiter: '"' },
      'csv.delimiter',
      `Expected csv.delimiter to contain no double quote or line break, nor ' while csv.escapeFormulas is on, got "\\"" (string)`,
    ],
    [
      { delimiter: '\n', escapeFormulas: false },
      'csv.delimiter',
      'Expected csv.delimiter to contain no double quote or line break, got "\\n" (string)',
    ],
    [
      { delimiter: "'" },
      'csv.delimiter',
      `Expected csv.delimiter to contain no double quote or line break, nor ' while csv.escapeFormulas is on, got "'" (string)`,
    ],
    [{ eol: 'cr' }, 'csv.eol', 'Expected csv.eol to be "lf" or "crlf", got "cr" (string)'],
    [{ bom: 'yes' }, 'csv.bom', 'Expected csv.bom to be a boolean, got "yes" (string)'],
    [{ header: 1 }, 'csv.header', 'Expected csv.header to be a boolean, got 1 (number)'],
    [{ escapeFormulas: null }, 'csv.escapeFormulas', 'Expected csv.escapeFormulas to be a boolean, got null'],
    ['x', 'csv', 'Expected csv to be an object, got "x" (string)'],
  ])('rejects the csv options %j', (csv, field, message) => {
    const error = captureError(() => csvFormat.createEncoder({ csv } as EncoderOptions));
    expect(error.message).toBe(message);
    expect(error.field).toBe(field);
    expect(error.code).toBe('VALIDATION_FAILED');
  });

  it("accepts ' as delimiter once formula escaping is off", () => {
    const text = encodeAll(csvFormat, [[{ a: "it's", b: '=x' }]], {
      csv: { delimiter: "'", escapeFormulas: false },
    });
    expect(readCsv(text, { delimiter: "'" })).toEqual([
      ['a', 'b'],
      ["it's", '=x'],
    ]);
  });
});

describe.each([csvFormat, jsonFormat, ndjsonFormat])('$name column options', (format) => {
  it.each<[unknown, string, string]>([
    [{ columns: 'id' }, 'columns', 'Expected columns to be an array, got "id" (string)'],
    [{ columns: [null] }, 'columns[0]', 'Expected columns[0] to be an object, got null'],
    [
      { columns: [{ name: 'a' }, { name: '' }] },
      'columns[1].name',
      'Expected columns[1].name to be a non-empty string, got "" (string)',
    ],
    [
      { columns: [{ name: 'a', label: 5 }] },
      'columns[0].label',
      'Expected columns[0].label to be a string, got 5 (number)',
    ],
    [[], 'options', 'Expected the encoder options to be an object, got an array of length 0'],
  ])('rejects %j', (options, field, message) => {
    const error = captureError(() => format.createEncoder(options as EncoderOptions));
    expect(error.message).toBe(message);
    expect(error.field).toBe(field);
  });
});

describe('json', () => {
  it('writes [] for an export without rows', () => {
    expect(encodeAll(jsonFormat, [])).toBe('[]');
    expect(JSON.parse(encodeAll(jsonFormat, [[], []]))).toEqual([]);
  });

  it('writes one valid array for one row and for many rows across batches', () => {
    expect(JSON.parse(encodeAll(jsonFormat, [[people[0]!]]))).toEqual([people[0]]);
    const many = Array.from({ length: 1000 }, (_, index) => ({ index, text: `row ${index}, "quoted"\n` }));
    const batches = [many.slice(0, 1), [], many.slice(1, 400), many.slice(400, 401), many.slice(401)];
    expect(JSON.parse(encodeAll(jsonFormat, batches))).toEqual(many);
  });

  it('projects rows onto the columns in order, with null for missing values', () => {
    const text = encodeAll(jsonFormat, [people.slice(0, 2)], {
      columns: [{ name: 'email' }, { name: 'id' }, { name: 'missing' }, { name: 'toString' }],
    });
    const parsed = JSON.parse(text);
    expect(parsed).toEqual([
      { email: 'ada@example.com', id: 1, missing: null, toString: null },
      { email: 'grace@example.com', id: 2, missing: null, toString: null },
    ]);
    expect(Object.keys(parsed[0])).toEqual(['email', 'id', 'missing', 'toString']);
  });

  it.each([undefined, { columns: [{ name: 'at' }, { name: 'big' }, { name: 'nested' }, { name: 'n' }] }])(
    'writes Dates as ISO strings and BigInts as strings of digits, also in later batches (%j)',
    (options) => {
      const at = new Date(Date.UTC(2020, 0, 2, 3, 4, 5, 6));
      const text = encodeAll(
        jsonFormat,
        [
          [{ at, big: 1, nested: null, n: 1 }],
          [{ at, big: 2n ** 70n, nested: { deeper: [3n] }, n: Number.NaN }],
          [{ at, big: 4, nested: [], n: -0 }],
        ],
        options,
      );
      expect(JSON.parse(text)).toEqual([
        { at: '2020-01-02T03:04:05.006Z', big: 1, nested: null, n: 1 },
        { at: '2020-01-02T03:04:05.006Z', big: '1180591620717411303424', nested: { deeper: ['3'] }, n: null },
        { at: '2020-01-02T03:04:05.006Z', big: 4, nested: [], n: 0 },
      ]);
    },
  );

  it('handles a column named __proto__ like any other', () => {
    const row = JSON.parse('{"__proto__":"p","id":1}');
    const columns = [{ name: '__proto__' }, { name: 'id' }];
    expect(encodeAll(jsonFormat, [[row]], { columns })).toBe('[{"__proto__":"p","id":1}]');
    expect(encodeAll(ndjsonFormat, [[row, { id: 2 }]], { columns })).toBe(
      '{"__proto__":"p","id":1}\n{"__proto__":null,"id":2}\n',
    );
    expect(encodeAll(csvFormat, [[row, { id: 2 }]], { columns })).toBe('__proto__,id\np,1\n,2\n');
  });

  it('still throws for a circular row instead of writing something wrong', () => {
    const row: Row = { a: 1 };
    row.self = row;
    expect(() => jsonFormat.createEncoder().encode([row])).toThrow(TypeError);
  });

  it('rejects rows that are not objects', () => {
    expect(captureError(() => jsonFormat.createEncoder().encode(['x' as unknown as Row])).code).toBe(
      'INVALID_ROW',
    );
  });
});

describe('ndjson', () => {
  const readLines = (text: string) => {
    expect(text === '' || text.endsWith('\n')).toBe(true);
    return text === ''
      ? []
      : text
          .slice(0, -1)
          .split('\n')
          .map((line) => JSON.parse(line));
  };

  it('writes nothing for an export without rows', () => {
    expect(encodeAll(ndjsonFormat, [[], []])).toBe('');
  });

  it('writes one object per line, each line ending in \\n, across batches', () => {
    const rows = [{ text: 'line\nbreak' }, { text: 'a\r\nb' }, { text: '\u2028' }];
    const text = encodeAll(ndjsonFormat, [rows.slice(0, 1), [], rows.slice(1)]);
    expect(text.split('\n')).toHaveLength(4);
    expect(readLines(text)).toEqual(rows);
  });

  it('projects rows onto the columns and writes Dates and BigInts like JSON', () => {
    const at = new Date(0);
    const text = encodeAll(ndjsonFormat, [[{ id: 1n, at, x: 'drop' }], [{ id: 2 }]], {
      columns: [{ name: 'at' }, { name: 'id' }],
    });
    expect(text).toBe('{"at":"1970-01-01T00:00:00.000Z","id":"1"}\n{"at":null,"id":2}\n');
    expect(readLines(text)).toEqual([
      { at: '1970-01-01T00:00:00.000Z', id: '1' },
      { at: null, id: 2 },
    ]);
  });

  it('writes BigInts without columns too', () => {
    expect(readLines(encodeAll(ndjsonFormat, [[{ a: 1 }], [{ a: 2n }], [{ a: 3n }]]))).toEqual([
      { a: 1 },
      { a: '2' },
      { a: '3' },
    ]);
  });
});
