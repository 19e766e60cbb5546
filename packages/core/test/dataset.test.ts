import { describe, expect, it } from 'vitest';
import {
  type Dataset,
  type DatasetDefinition,
  defineDataset,
  type ParamSpec,
  resolveColumns,
  validateParams,
} from '../src/dataset.js';
import { ValidationError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';

const source = () => [];

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an error, nothing was thrown');
}

function withParams(params: Record<string, ParamSpec>): Dataset {
  return defineDataset('orders', { params, source });
}

/** Validates `{ [name]: value }` against one param; returns the coerced value or the error. */
function coerce(spec: ParamSpec, value: unknown): unknown {
  return validateParams(withParams({ p: spec }), { p: value }).p;
}

function invalidParam(spec: ParamSpec, value: unknown): ValidationError {
  const error = errorOf(() => coerce(spec, value));
  expect(error).toBeInstanceOf(ValidationError);
  const validation = error as ValidationError;
  expect(validation.code).toBe('INVALID_PARAMS');
  expect(validation.statusCode).toBe(422);
  expect(validation.field).toBe('params.p');
  return validation;
}

describe('defineDataset', () => {
  it('returns the definition with its name and every format by default, Parquet only with typed columns', () => {
    const dataset = defineDataset('orders.v2', { description: 'All orders', source });
    expect(dataset).toMatchObject({
      name: 'orders.v2',
      description: 'All orders',
      formats: ['csv', 'json', 'ndjson', 'xlsx'],
    });
    const partly = defineDataset('orders', {
      columns: [{ name: 'id', type: 'integer' }, { name: 'note' }],
      source,
    });
    expect(partly.formats).toEqual(['csv', 'json', 'ndjson', 'xlsx']);
    const typed = defineDataset('orders', { columns: [{ name: 'id', type: 'integer' }], source });
    expect(typed.formats).toEqual(['csv', 'json', 'ndjson', 'xlsx', 'parquet']);
  });

  it('checks a param default against its own type when the dataset is defined', () => {
    expect(() =>
      defineDataset('orders', { source, params: { limit: { type: 'integer', default: 'ten' } } }),
    ).toThrow(
      'Dataset "orders" params.limit.default is invalid: Expected param "limit" to be an integer, got "ten" (string)',
    );
    expect(() =>
      defineDataset('orders', { source, params: { state: { type: 'enum', values: ['a'], default: 'b' } } }),
    ).toThrow(/params\.state\.default is invalid/);
    expect(defineDataset('orders', { source, params: { limit: { type: 'integer', default: 5 } } }).name).toBe(
      'orders',
    );
  });

  it.each<[string, string, DatasetDefinition, string]>([
    [
      'a name with a slash',
      '../etc',
      { source },
      'Expected dataset name to be 1-64 letters, digits, "_", "-" or ".", got "../etc" (string)',
    ],
    [
      'an empty name',
      '',
      { source },
      'Expected dataset name to be 1-64 letters, digits, "_", "-" or ".", got "" (string)',
    ],
    [
      'a missing source',
      'orders',
      {} as DatasetDefinition,
      'Expected dataset "orders" source to be a function, got undefined',
    ],
    [
      'a duplicate column',
      'orders',
      { columns: [{ name: 'id' }, { name: 'total' }, { name: 'id' }], source },
      'Dataset "orders" declares column "id" twice',
    ],
    [
      'a column of an unknown type',
      'orders',
      { columns: [{ name: 'id', type: 'int' as never }], source },
      'Expected dataset "orders" columns[0].type to be one of string, number, integer, boolean, date, json, got "int" (string)',
    ],
    [
      'a column without a name',
      'orders',
      { columns: [{ name: 'id' }, { label: 'Total' } as never], source },
      'Expected dataset "orders" columns[1].name to be a non-empty string, got undefined',
    ],
    [
      'a bad param type',
      'orders',
      { params: { from: { type: 'datetime' as never } }, source },
      'Expected dataset "orders" params.from.type to be one of string, integer, number, boolean, date, enum, got "datetime" (string)',
    ],
    [
      'an enum without values',
      'orders',
      { params: { region: { type: 'enum' } }, source },
      'Expected dataset "orders" params.region.values to be a non-empty array of strings',
    ],
    [
      'an enum with an empty list of values',
      'orders',
      { params: { region: { type: 'enum', values: [] } }, source },
      'Expected dataset "orders" params.region.values to be a non-empty array of strings',
    ],
    [
      'a bad param name',
      'orders',
      { params: { 'from-date': { type: 'date' } }, source },
      'Expected dataset "orders" param name to match /^[A-Za-z_][A-Za-z0-9_]{0,63}$/, got "from-date"',
    ],
    [
      'an unknown format',
      'orders',
      { formats: ['csv', 'xml' as never], source },
      'Expected dataset "orders" formats to contain only csv, json, ndjson, xlsx, parquet, got "xml" (string)',
    ],
    [
      'parquet without typed columns',
      'orders',
      { formats: ['csv', 'parquet'], columns: [{ name: 'id', type: 'integer' }, { name: 'note' }], source },
      'Dataset "orders" lists parquet, which needs typed columns: declare columns with a type each (string, number, integer, boolean, date or json)',
    ],
  ])(
    'rejects %s with a TypeError that says what was expected and what was given',
    (_case, name, definition, message) => {
      const error = errorOf(() => defineDataset(name, definition));
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toBe(message);
    },
  );

  it('refuses a second dataset of the same name on one manager, in the constructor or later', () => {
    const manager = new ExportManager({ metrics: false, datasets: [defineDataset('orders', { source })] });
    expect(() => manager.defineDataset('orders', { source })).toThrow('Dataset "orders" is already defined');
    expect(manager.datasets.map((dataset) => dataset.name)).toEqual(['orders']);
  });

  it('also checks definitions passed to the ExportManager constructor', () => {
    expect(() => new ExportManager({ metrics: false, datasets: { 'bad name': { source } } })).toThrow(
      /Expected dataset name to be 1-64 letters/,
    );
  });
});

describe('validateParams', () => {
  it('accepts no params for a dataset that declares none, and rejects any it is given', () => {
    const plain = defineDataset('plain', { source });
    expect(validateParams(plain, undefined)).toEqual({});
    expect(validateParams(plain, {})).toEqual({});
    const error = errorOf(() => validateParams(plain, { limit: '10' })) as ValidationError;
    expect(error.message).toBe('Unknown param "limit" for dataset "plain"; expected no params');
    expect(error.field).toBe('params.limit');
  });

  it('rejects params that are not an object', () => {
    const error = errorOf(() => validateParams(withParams({}), ['a'])) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toBe('Expected params to be an object, got an array of length 1');
  });

  it('names an unknown param and lists the known ones', () => {
    const dataset = withParams({ from: { type: 'date' }, limit: { type: 'integer' } });
    const error = errorOf(() =>
      validateParams(dataset, { from: '2025-01-01', limt: '5' }),
    ) as ValidationError;
    expect(error.code).toBe('INVALID_PARAMS');
    expect(error.field).toBe('params.limt');
    expect(error.message).toBe('Unknown param "limt" for dataset "orders"; expected one of from, limit');
  });

  it('fills in defaults and insists on required params (an empty string counts as absent)', () => {
    const dataset = withParams({
      limit: { type: 'integer', default: 100 },
      region: { type: 'enum', values: ['eu', 'us'], required: true },
      note: { type: 'string' },
    });
    expect(validateParams(dataset, { region: 'eu' })).toEqual({ limit: 100, region: 'eu' });
    expect(validateParams(dataset, { region: 'us', limit: '', note: '' })).toEqual({
      limit: 100,
      region: 'us',
    });
    const missing = errorOf(() => validateParams(dataset, { limit: '5' })) as ValidationError;
    expect(missing.message).toBe('Missing required param "region" (enum)');
    expect(missing.field).toBe('params.region');
    expect((errorOf(() => validateParams(dataset, { region: '' })) as ValidationError).field).toBe(
      'params.region',
    );
  });

  describe('string', () => {
    it('accepts strings up to maxLength (1000 by default)', () => {
      expect(coerce({ type: 'string' }, 'x'.repeat(1000))).toBe('x'.repeat(1000));
      expect(coerce({ type: 'string', maxLength: 3 }, 'abc')).toBe('abc');
    });

    it('rejects longer strings and non-strings', () => {
      expect(invalidParam({ type: 'string', maxLength: 3 }, 'abcd').message).toBe(
        'Expected param "p" to be a string of at most 3 characters, got "abcd" (string)',
      );
      expect(invalidParam({ type: 'string' }, 'x'.repeat(1001)).message).toMatch(/at most 1000 characters/);
      expect(invalidParam({ type: 'string' }, 5).message).toBe(
        'Expected param "p" to be a string, got 5 (number)',
      );
    });
  });

  describe('integer', () => {
    it('coerces "10" and " 10 " from a query string, and takes a JSON number as is', () => {
      expect(coerce({ type: 'integer' }, '10')).toBe(10);
      expect(coerce({ type: 'integer' }, ' 10 ')).toBe(10);
      expect(coerce({ type: 'integer' }, -3)).toBe(-3);
    });

    it.each(['1.5', 'ten', '   ', 'NaN', 'Infinity', '9007199254740993', '0x10', '0b11', '1e3', '1_000'])(
      'rejects %j',
      (value) => {
        expect(invalidParam({ type: 'integer' }, value).message).toMatch(
          /^Expected param "p" to be an integer, got /,
        );
      },
    );

    it('rejects a fractional JSON number and a boolean', () => {
      expect(invalidParam({ type: 'integer' }, 1.5).message).toBe(
        'Expected param "p" to be an integer, got 1.5 (number)',
      );
      expect(invalidParam({ type: 'integer' }, true).message).toBe(
        'Expected param "p" to be an integer, got true (boolean)',
      );
    });

    it('enforces inclusive min and max', () => {
      const spec: ParamSpec = { type: 'integer', min: 1, max: 1000 };
      expect(coerce(spec, '1')).toBe(1);
      expect(coerce(spec, '1000')).toBe(1000);
      expect(invalidParam(spec, '0').message).toBe('Expected param "p" to be >= 1, got "0" (string)');
      expect(invalidParam(spec, 1001).message).toBe('Expected param "p" to be <= 1000, got 1001 (number)');
    });
  });

  describe('number', () => {
    it('coerces decimals and exponents and enforces bounds', () => {
      const spec: ParamSpec = { type: 'number', min: -1.5, max: 2.5 };
      expect(coerce(spec, '2.5')).toBe(2.5);
      expect(coerce(spec, '-1.5')).toBe(-1.5);
      expect(coerce(spec, '1e-3')).toBe(0.001);
      expect(invalidParam(spec, '2.51').message).toBe('Expected param "p" to be <= 2.5, got "2.51" (string)');
      expect(invalidParam(spec, '-2').message).toBe('Expected param "p" to be >= -1.5, got "-2" (string)');
      expect(invalidParam(spec, 'abc').message).toBe('Expected param "p" to be a number, got "abc" (string)');
      expect(invalidParam({ type: 'number' }, 'Infinity').message).toMatch(/to be a number/);
      expect(invalidParam({ type: 'number' }, '0x10').message).toMatch(/to be a number/);
    });
  });

  describe('boolean', () => {
    it.each([
      ['true', true],
      ['1', true],
      [true, true],
      ['false', false],
      ['0', false],
      [false, false],
    ])('coerces %j to %s', (value, expected) => {
      expect(coerce({ type: 'boolean' }, value)).toBe(expected);
    });

    it.each(['yes', 'TRUE', 2])('rejects %j', (value) => {
      expect(invalidParam({ type: 'boolean' }, value).message).toMatch(
        /^Expected param "p" to be a boolean \(true, false, 1 or 0\), got /,
      );
    });
  });

  describe('date', () => {
    it.each([
      ['2025-01-31', '2025-01-31'],
      ['2024-02-29', '2024-02-29'],
      ['2025-01-31T12:00', '2025-01-31T12:00:00.000Z'],
      ['2025-01-31T12:00:59Z', '2025-01-31T12:00:59.000Z'],
      ['2025-01-31 12:00:00', '2025-01-31T12:00:00.000Z'],
      ['2025-01-31T12:00:00.123Z', '2025-01-31T12:00:00.123Z'],
      ['2025-01-31T12:00:00.1239Z', '2025-01-31T12:00:00.123Z'],
      ['2025-01-31T12:00:00+01:00', '2025-01-31T11:00:00.000Z'],
      ['2025-01-31T12:00:00-0530', '2025-01-31T17:30:00.000Z'],
      ['2025-01-01T00:00:00+02:00', '2024-12-31T22:00:00.000Z'],
    ])('accepts the ISO 8601 form %s and hands the source %s', (value, expected) => {
      expect(coerce({ type: 'date' }, value)).toBe(expected);
      // Canonical values are valid input and stay as they are (a job resumed after a restart).
      expect(coerce({ type: 'date' }, expected)).toBe(expected);
    });

    it('takes a Date object as its instant', () => {
      expect(coerce({ type: 'date' }, new Date(Date.UTC(2025, 0, 31, 12)))).toBe('2025-01-31T12:00:00.000Z');
    });

    it('normalises a date default like a request value', () => {
      const dataset = withParams({ from: { type: 'date', default: '2025-01-01 12:00' } });
      expect(validateParams(dataset, {})).toEqual({ from: '2025-01-01T12:00:00.000Z' });
    });

    it.each([
      '2025-13-45',
      '2025-02-30',
      '2025-02-29',
      '2025-04-31',
      '31/01/2025',
      '2025-1-5',
      'yesterday',
      '2025-01-31T12',
      '2025-01-31T24:00',
      '2025-01-31T12:60',
      '2025-01-31T12:00:60Z',
      '2025-01-31T12:00+24:00',
      '2025-01-31T12:00z',
    ])('rejects %s', (value) => {
      expect(invalidParam({ type: 'date' }, value).message).toBe(
        `Expected param "p" to be an ISO 8601 date such as 2025-01-31 or 2025-01-31T12:00:00Z, got ${JSON.stringify(value)} (string)`,
      );
    });

    it('rejects an instant outside the years 0000-9999 in UTC', () => {
      expect(invalidParam({ type: 'date' }, '9999-12-31T23:00-02:00').message).toBe(
        'Expected param "p" to be a date between the years 0000 and 9999 in UTC, got "9999-12-31T23:00-02:00" (string)',
      );
    });

    it('rejects a number of milliseconds', () => {
      expect(invalidParam({ type: 'date' }, 1_700_000_000_000).message).toMatch(/an ISO 8601 date/);
    });

    describe('with a timeZone', () => {
      const berlin: ParamSpec = { type: 'date', timeZone: 'Europe/Berlin' };

      it.each([
        ['2025-01-31T12:00', '2025-01-31T11:00:00.000Z'],
        ['2025-07-01 12:00:00.5', '2025-07-01T10:00:00.500Z'],
        // A calendar day is its first moment in the zone.
        ['2025-01-01', '2024-12-31T23:00:00.000Z'],
        ['2025-07-01', '2025-06-30T22:00:00.000Z'],
        // Either side of the spring-forward gap (02:00-03:00 on 2025-03-30) and the fall-back hour.
        ['2025-03-30T01:59:59', '2025-03-30T00:59:59.000Z'],
        ['2025-03-30T03:00', '2025-03-30T01:00:00.000Z'],
        ['2025-10-26T01:59', '2025-10-25T23:59:00.000Z'],
        ['2025-10-26T03:00', '2025-10-26T02:00:00.000Z'],
        // An explicit offset wins over the zone, and a canonical value stays as it is.
        ['2025-10-26T02:30+01:00', '2025-10-26T01:30:00.000Z'],
        ['2025-10-26T02:30:00.000Z', '2025-10-26T02:30:00.000Z'],
      ])('reads %s as Europe/Berlin time: %s', (value, expected) => {
        expect(coerce(berlin, value)).toBe(expected);
        expect(coerce(berlin, expected)).toBe(expected);
      });

      it('rejects a local time that the spring-forward change skips, naming the param', () => {
        expect(invalidParam(berlin, '2025-03-30T02:30').message).toBe(
          'Expected param "p" to be a local time that exists in Europe/Berlin (the clocks skip this one for daylight saving time; add an offset such as +01:00), got "2025-03-30T02:30" (string)',
        );
      });

      it('rejects a local time that the fall-back change repeats, naming both offsets', () => {
        expect(invalidParam(berlin, '2025-10-26 02:30').message).toBe(
          'Expected param "p" to be a local time that occurs once in Europe/Berlin (this one occurs twice, at +02:00 and +01:00; add the offset you mean), got "2025-10-26 02:30" (string)',
        );
      });

      it('starts a day whose midnight the clocks skip when the gap ends', () => {
        // Santiago moved its clocks from 00:00 to 01:00 (-04:00 to -03:00) on 2024-09-08.
        const santiago: ParamSpec = { type: 'date', timeZone: 'America/Santiago' };
        expect(coerce(santiago, '2024-09-08')).toBe('2024-09-08T04:00:00.000Z');
        expect(invalidParam(santiago, '2024-09-08T00:30').message).toMatch(/exists in America\/Santiago/);
        expect(coerce(santiago, '2024-09-07')).toBe('2024-09-07T04:00:00.000Z');
      });

      it('is checked when the dataset is defined', () => {
        expect(() => withParams({ from: { type: 'date', timeZone: 'Mars/Olympus' } })).toThrow(
          new TypeError(
            'Expected dataset "orders" params.from.timeZone to be an IANA time zone such as Europe/Berlin, got "Mars/Olympus" (string)',
          ),
        );
        expect(() => withParams({ n: { type: 'integer', timeZone: 'UTC' } })).toThrow(
          new TypeError('Dataset "orders" params.n.timeZone only applies to type "date"'),
        );
      });
    });
  });

  describe('enum', () => {
    it('accepts only the declared values, case-sensitively', () => {
      const spec: ParamSpec = { type: 'enum', values: ['eu', 'us'] };
      expect(coerce(spec, 'us')).toBe('us');
      expect(invalidParam(spec, 'EU').message).toBe(
        'Expected param "p" to be one of eu, us, got "EU" (string)',
      );
      expect(invalidParam(spec, 1).message).toBe('Expected param "p" to be one of eu, us, got 1 (number)');
    });
  });
});

describe('resolveColumns', () => {
  const dataset = defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total', label: 'Total (EUR)' }, { name: 'status' }],
    source,
  });

  it('returns every declared column when none are requested', () => {
    expect(resolveColumns(dataset, undefined)).toBe(dataset.columns);
    expect(resolveColumns(dataset, '')).toBe(dataset.columns);
  });

  it('takes a comma-separated string (spaces trimmed) or an array, in the requested order', () => {
    expect(resolveColumns(dataset, 'status, id')).toEqual([{ name: 'status' }, { name: 'id' }]);
    expect(resolveColumns(dataset, ['total', 'id'])).toEqual([
      { name: 'total', label: 'Total (EUR)' },
      { name: 'id' },
    ]);
  });

  it('rejects a column named twice', () => {
    const error = errorOf(() => resolveColumns(dataset, 'id,total,id')) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.code).toBe('UNKNOWN_COLUMN');
    expect(error.message).toBe('Expected columns to name each column at most once');
  });

  it('names an unknown column and lists the known ones', () => {
    const error = errorOf(() => resolveColumns(dataset, ['id', 'password'])) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.code).toBe('UNKNOWN_COLUMN');
    expect(error.statusCode).toBe(422);
    expect(error.field).toBe('columns');
    expect(error.message).toBe(
      'Unknown column "password" for dataset "orders"; expected some of id, total, status',
    );
  });

  it('rejects empty names and non-lists', () => {
    expect(errorOf(() => resolveColumns(dataset, 'id,,total')).message).toMatch(
      /^Expected columns to be a non-empty list of column names, got "id,,total"/,
    );
    expect(errorOf(() => resolveColumns(dataset, [])).message).toBe(
      'Expected columns to be a non-empty list of column names, got an array of length 0',
    );
    expect(errorOf(() => resolveColumns(dataset, 5)).message).toBe(
      'Expected columns to be a non-empty list of column names, got 5 (number)',
    );
  });

  it('passes requested names through for a dataset without declared columns', () => {
    const loose = defineDataset('loose', { source });
    expect(resolveColumns(loose, 'b,a')).toEqual([{ name: 'b' }, { name: 'a' }]);
    expect(resolveColumns(loose, undefined)).toBeUndefined();
  });
});
