import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import {
  createDateRenderer,
  type DateFormat,
  normalizeTimeZone,
  timeZoneOffsetMinutes,
} from '../src/formats/dates.js';
import {
  type ColumnSpec,
  csvFormat,
  type EncoderOptions,
  type Format,
  jsonFormat,
  ndjsonFormat,
  type RowEncoder,
} from '../src/formats/index.js';

type Row = Record<string, unknown>;

function encodeAll(format: Format<RowEncoder>, rows: Row[], options?: EncoderOptions): string {
  const encoder = format.createEncoder(options);
  return encoder.encode(rows) + encoder.finish();
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

/*
 * The instants around the 2025 clock changes:
 * - Europe/Berlin: 30 March 01:00 UTC (02:00 CET -> 03:00 CEST), 26 October 01:00 UTC (03:00 CEST -> 02:00 CET);
 * - America/New_York: 9 March 07:00 UTC (02:00 EST -> 03:00 EDT), 2 November 06:00 UTC (02:00 EDT -> 01:00 EST).
 */
const cases: Record<string, { instant: string; expected: Record<DateFormat, string> }[]> = {
  'Europe/Berlin': [
    {
      instant: '2025-03-30T00:59:59.500Z',
      expected: {
        iso: '2025-03-30T01:59:59.500+01:00',
        'iso-local': '2025-03-30 01:59:59',
        date: '2025-03-30',
      },
    },
    {
      instant: '2025-03-30T01:00:00.000Z',
      expected: {
        iso: '2025-03-30T03:00:00.000+02:00',
        'iso-local': '2025-03-30 03:00:00',
        date: '2025-03-30',
      },
    },
    // The hour 02:00–03:00 local happens twice in October: before and after the change.
    {
      instant: '2025-10-26T00:30:00.000Z',
      expected: {
        iso: '2025-10-26T02:30:00.000+02:00',
        'iso-local': '2025-10-26 02:30:00',
        date: '2025-10-26',
      },
    },
    {
      instant: '2025-10-26T01:30:00.000Z',
      expected: {
        iso: '2025-10-26T02:30:00.000+01:00',
        'iso-local': '2025-10-26 02:30:00',
        date: '2025-10-26',
      },
    },
    // Late on 31 January in Berlin is already 1 February: the date is the zone's, not UTC's.
    {
      instant: '2025-01-31T23:30:00.000Z',
      expected: {
        iso: '2025-02-01T00:30:00.000+01:00',
        'iso-local': '2025-02-01 00:30:00',
        date: '2025-02-01',
      },
    },
  ],
  'America/New_York': [
    {
      instant: '2025-03-09T06:59:00.000Z',
      expected: {
        iso: '2025-03-09T01:59:00.000-05:00',
        'iso-local': '2025-03-09 01:59:00',
        date: '2025-03-09',
      },
    },
    {
      instant: '2025-03-09T07:00:00.000Z',
      expected: {
        iso: '2025-03-09T03:00:00.000-04:00',
        'iso-local': '2025-03-09 03:00:00',
        date: '2025-03-09',
      },
    },
    {
      instant: '2025-11-02T05:30:00.000Z',
      expected: {
        iso: '2025-11-02T01:30:00.000-04:00',
        'iso-local': '2025-11-02 01:30:00',
        date: '2025-11-02',
      },
    },
    {
      instant: '2025-11-02T06:30:00.000Z',
      expected: {
        iso: '2025-11-02T01:30:00.000-05:00',
        'iso-local': '2025-11-02 01:30:00',
        date: '2025-11-02',
      },
    },
    // Early on 1 February UTC is still 31 January in New York.
    {
      instant: '2025-02-01T03:00:00.000Z',
      expected: {
        iso: '2025-01-31T22:00:00.000-05:00',
        'iso-local': '2025-01-31 22:00:00',
        date: '2025-01-31',
      },
    },
  ],
};

const formats: DateFormat[] = ['iso', 'iso-local', 'date'];

describe('createDateRenderer', () => {
  it('writes a Date as toISOString() does with the defaults', () => {
    const render = createDateRenderer();
    for (const ms of [0, 1_738_364_700_123, -1e14, 8.64e15, 253402300800000]) {
      expect(render(new Date(ms))).toBe(new Date(ms).toISOString());
    }
    expect(render(new Date(Number.NaN))).toBe('');
    expect(render(Number.POSITIVE_INFINITY)).toBe('');
  });

  for (const [timeZone, instants] of Object.entries(cases)) {
    for (const dateFormat of formats) {
      it(`writes instants at the ${timeZone} clock changes as ${dateFormat}`, () => {
        const render = createDateRenderer({ timeZone, dateFormat });
        for (const { instant, expected } of instants) {
          // The same instant as a Date, as epoch milliseconds and as ISO text with an offset.
          expect(render(new Date(instant))).toBe(expected[dateFormat]);
          expect(render(Date.parse(instant))).toBe(expected[dateFormat]);
          expect(render(instant.replace('Z', '+00:00'))).toBe(expected[dateFormat]);
        }
      });
    }
  }

  it('reads ISO text without an offset as UTC, keeps calendar dates and other text as they are', () => {
    const render = createDateRenderer({ timeZone: 'Europe/Berlin', dateFormat: 'iso-local' });
    expect(render('2025-03-30 01:00:00')).toBe('2025-03-30 03:00:00');
    expect(render('2025-03-30T01:00')).toBe('2025-03-30 03:00:00');
    expect(render('2025-03-30T03:00:00+02:00')).toBe('2025-03-30 03:00:00');
    expect(render('2025-03-30T07:30:00.250-0430')).toBe('2025-03-30 14:00:00');
    expect(render('2025-01-31')).toBe('2025-01-31');
    expect(render('next tuesday')).toBe('next tuesday');
  });

  it('writes UTC aliases with Z and a zero-offset zone with +00:00', () => {
    expect(createDateRenderer({ timeZone: 'Etc/UTC' })(new Date(0))).toBe('1970-01-01T00:00:00.000Z');
    expect(createDateRenderer({ timeZone: 'Europe/London' })(Date.UTC(2025, 0, 15, 12))).toBe(
      '2025-01-15T12:00:00.000+00:00',
    );
  });

  it('writes zones with half- and quarter-hour offsets', () => {
    expect(createDateRenderer({ timeZone: 'Asia/Kathmandu' })(Date.UTC(2025, 0, 1))).toBe(
      '2025-01-01T05:45:00.000+05:45',
    );
    expect(
      createDateRenderer({ timeZone: 'Asia/Kolkata', dateFormat: 'iso-local' })(Date.UTC(2025, 0, 1, 20)),
    ).toBe('2025-01-02 01:30:00');
  });

  it('agrees with Intl on every hour of a year, and within the hours of a change', () => {
    for (const timeZone of ['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe']) {
      const render = createDateRenderer({ timeZone, dateFormat: 'iso-local' });
      const reference = new Intl.DateTimeFormat('sv-SE', {
        timeZone,
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
        hourCycle: 'h23',
      });
      for (let ms = Date.UTC(2025, 0, 1); ms < Date.UTC(2026, 0, 1); ms += 3 * 3_600_000 + 7 * 60_000) {
        expect(render(ms), `${timeZone} ${new Date(ms).toISOString()}`).toBe(reference.format(ms));
      }
    }
  });

  it('validates and normalises the time zone and the format', () => {
    expect(normalizeTimeZone('europe/berlin')).toBe('Europe/Berlin');
    expect(normalizeTimeZone('Etc/UTC')).toBe('UTC');
    const zone = captureError(() => createDateRenderer({ timeZone: 'Mars/Olympus' }));
    expect(zone.field).toBe('timeZone');
    expect(zone.statusCode).toBe(422);
    expect(zone.message).toBe(
      'Expected timeZone to be an IANA time zone name such as "Europe/Berlin", got "Mars/Olympus"',
    );
    const format = captureError(() => createDateRenderer({ dateFormat: 'us' as DateFormat }));
    expect(format.field).toBe('dateFormat');
    expect(format.message).toMatch(/one of "iso", "iso-local", "date", got "us"/);
  });

  it('gives the offset in minutes', () => {
    expect(timeZoneOffsetMinutes(Date.UTC(2025, 2, 30, 0, 59), 'Europe/Berlin')).toBe(60);
    expect(timeZoneOffsetMinutes(Date.UTC(2025, 2, 30, 1), 'Europe/Berlin')).toBe(120);
    expect(timeZoneOffsetMinutes(Date.UTC(2025, 10, 2, 6), 'America/New_York')).toBe(-300);
    expect(timeZoneOffsetMinutes(Date.UTC(2025, 10, 2, 5, 59), 'America/New_York')).toBe(-240);
    expect(timeZoneOffsetMinutes(0, 'UTC')).toBe(0);
  });
});

describe('dates in the encoders', () => {
  const columns: ColumnSpec[] = [
    { name: 'id', type: 'integer' },
    { name: 'at', type: 'date' },
    { name: 'text', type: 'date' },
    { name: 'ms', type: 'date' },
  ];

  for (const [timeZone, instants] of Object.entries(cases)) {
    // Dates, ISO text and epoch milliseconds in date columns; a Date also where no type is declared.
    const rows = instants.map(({ instant }, index) => ({
      id: index,
      at: new Date(instant),
      text: instant,
      ms: Date.parse(instant),
    }));
    for (const dateFormat of formats) {
      const wanted = instants.map(({ expected }) => expected[dateFormat]);

      it(`CSV writes ${timeZone} dates as ${dateFormat}`, () => {
        const text = encodeAll(csvFormat, rows, { columns, timeZone, dateFormat });
        const cells = parse(text) as string[][];
        expect(cells[0]).toEqual(['id', 'at', 'text', 'ms']);
        expect(cells.slice(1)).toEqual(wanted.map((date, index) => [String(index), date, date, date]));
        // Undeclared columns: a Date value still is a date.
        const undeclared = parse(encodeAll(csvFormat, rows, { timeZone, dateFormat })) as string[][];
        expect(undeclared.slice(1).map((row) => row[1])).toEqual(wanted);
        // A multi-character delimiter goes through csv-stringify: the same cells.
        const wide = encodeAll(csvFormat, rows, { columns, timeZone, dateFormat, csv: { delimiter: '||' } });
        expect((parse(wide, { delimiter: '||' }) as string[][]).slice(1)).toEqual(cells.slice(1));
      });

      it(`JSON writes ${timeZone} dates as ${dateFormat}`, () => {
        const projected = JSON.parse(encodeAll(jsonFormat, rows, { columns, timeZone, dateFormat }));
        expect(projected).toEqual(
          wanted.map((date, index) => ({ id: index, at: date, text: date, ms: date })),
        );
        // Without columns the rows are stringified whole: Dates (also nested) in the zone, the rest as is.
        const nested = rows.map((row) => ({ ...row, nested: { at: row.at } }));
        const whole = JSON.parse(encodeAll(jsonFormat, nested, { timeZone, dateFormat }));
        expect(whole.map((row: Row) => [row.at, (row.nested as Row).at, row.text, row.ms])).toEqual(
          rows.map((row, index) => [wanted[index], wanted[index], row.text, row.ms]),
        );
      });

      it(`NDJSON writes ${timeZone} dates as ${dateFormat}`, () => {
        const lines = encodeAll(ndjsonFormat, rows, { columns, timeZone, dateFormat }).split('\n');
        expect(lines.pop()).toBe('');
        expect(lines.map((line) => JSON.parse(line))).toEqual(
          wanted.map((date, index) => ({ id: index, at: date, text: date, ms: date })),
        );
        const whole = encodeAll(ndjsonFormat, rows, { timeZone, dateFormat }).trim().split('\n');
        expect(whole.map((line) => JSON.parse(line).at)).toEqual(wanted);
      });
    }
  }

  it('writes an invalid date as an empty CSV cell and JSON null; other values of a date column stay', () => {
    const rows = [{ at: new Date(Number.NaN), flag: true }, { at: null }, { at: true }];
    const options = { columns: [{ name: 'at', type: 'date' as const }], timeZone: 'Europe/Berlin' };
    expect(encodeAll(csvFormat, rows, options)).toBe('at\n\n\ntrue\n');
    expect(JSON.parse(encodeAll(jsonFormat, rows, options))).toEqual([
      { at: null },
      { at: null },
      { at: true },
    ]);
    expect(encodeAll(ndjsonFormat, [{ at: new Date(Number.NaN) }], { timeZone: 'Europe/Berlin' })).toBe(
      '{"at":null}\n',
    );
  });

  it('with the defaults, writes text and numbers of date columns as they are (as before time zones)', () => {
    const rows = [{ at: '2025-01-01 00:00:09', ms: 1_735_689_609_000, date: new Date(1_735_689_609_000) }];
    const columns: ColumnSpec[] = [
      { name: 'at', type: 'date' },
      { name: 'ms', type: 'date' },
      { name: 'date', type: 'date' },
    ];
    for (const options of [{ columns }, { columns, timeZone: 'Etc/UTC', dateFormat: 'iso' as const }]) {
      expect(encodeAll(csvFormat, rows, options)).toBe(
        'at,ms,date\n2025-01-01 00:00:09,1735689609000,2025-01-01T00:00:09.000Z\n',
      );
      expect(encodeAll(ndjsonFormat, rows, options)).toBe(
        '{"at":"2025-01-01 00:00:09","ms":1735689609000,"date":"2025-01-01T00:00:09.000Z"}\n',
      );
    }
    // Asked for a format, the same text is read as UTC and written in it.
    expect(encodeAll(csvFormat, rows, { columns, dateFormat: 'iso-local' })).toBe(
      'at,ms,date\n2025-01-01 00:00:09,2025-01-01 00:00:09,2025-01-01 00:00:09\n',
    );
  });

  it('refuses a bad time zone or date format when the encoder is made', () => {
    expect(captureError(() => csvFormat.createEncoder({ timeZone: 'Europe/Berlinn' })).field).toBe(
      'timeZone',
    );
    expect(captureError(() => jsonFormat.createEncoder({ dateFormat: 'locale' as DateFormat })).field).toBe(
      'dateFormat',
    );
  });
});

describe('CSV for Excel', () => {
  const rows = [
    { name: 'Ada', amount: 1.5, count: 3, big: 12345678901234567890n, at: new Date('2025-03-30T01:00:00Z') },
    { name: 'Grace; Hopper', amount: -0.25, count: 1e21, big: 1n, at: new Date('2025-10-26T01:30:00Z') },
  ];

  it('the excel preset writes a BOM, semicolons, CRLF and decimal commas', () => {
    const text = encodeAll(csvFormat, rows, {
      csv: { preset: 'excel' },
      timeZone: 'Europe/Berlin',
      dateFormat: 'iso-local',
    });
    expect(text).toBe(
      '\uFEFFname;amount;count;big;at\r\n' +
        'Ada;1,5;3;12345678901234567890;2025-03-30 03:00:00\r\n' +
        '"Grace; Hopper";-0,25;1e+21;1;2025-10-26 02:30:00\r\n',
    );
  });

  it('options given beside the preset win over it', () => {
    const text = encodeAll(csvFormat, rows.slice(0, 1), {
      csv: { preset: 'excel', delimiter: '\t', bom: false },
    });
    expect(text).toBe(
      'name\tamount\tcount\tbig\tat\r\nAda\t1,5\t3\t12345678901234567890\t2025-03-30T01:00:00.000Z\r\n',
    );
  });

  it('a decimal comma alone, and with a multi-character delimiter', () => {
    const only = [{ amount: 2.75 }];
    expect(encodeAll(csvFormat, only, { csv: { decimalSeparator: ',', delimiter: ';' } })).toBe(
      'amount\n2,75\n',
    );
    expect(
      encodeAll(csvFormat, [{ a: 2.75, b: 'x' }], { csv: { decimalSeparator: ',', delimiter: ';;' } }),
    ).toBe('a;;b\n2,75;;x\n');
  });

  it('refuses an unknown preset, a bad separator, and a decimal comma with the comma delimiter', () => {
    const preset = captureError(() => csvFormat.createEncoder({ csv: { preset: 'numbers' as 'excel' } }));
    expect(preset.field).toBe('csv.preset');
    expect(preset.message).toBe('Expected csv.preset to be "excel", got "numbers" (string)');
    const separator = captureError(() =>
      csvFormat.createEncoder({ csv: { decimalSeparator: ' ' as ',', delimiter: ';' } }),
    );
    expect(separator.field).toBe('csv.decimalSeparator');
    const clash = captureError(() => csvFormat.createEncoder({ csv: { decimalSeparator: ',' } }));
    expect(clash.field).toBe('csv.decimalSeparator');
    expect(clash.message).toMatch(/other than ","/);
  });
});
