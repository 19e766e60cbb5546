// XLSX read back by real consumers: exceljs's reader (every cell's value and type) and
// LibreOffice (`soffice --convert-to csv`), hostile strings, and a file of two sheets.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { parse } from 'csv-parse/sync';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { type EncoderOptions, getFormat, xlsxFormat } from '../src/formats/index.js';
import { XLSX_MAX_CELL_CHARS, XLSX_MAX_ROWS_PER_SHEET } from '../src/formats/xlsx.js';

type Row = Record<string, unknown>;

function encodeAll(batches: Row[][], options?: EncoderOptions): Buffer {
  const encoder = xlsxFormat.createEncoder(options);
  const parts = batches.map((batch) => encoder.encode(batch));
  parts.push(encoder.finish());
  return Buffer.concat(parts);
}

async function load(bytes: Buffer): Promise<ExcelJS.Workbook> {
  const workbook = new ExcelJS.Workbook();
  await workbook.xlsx.load(bytes as unknown as ArrayBuffer);
  return workbook;
}

const columns = [
  { name: 'id', label: 'ID', type: 'integer' },
  { name: 'name', label: 'Name', type: 'string' },
  { name: 'amount', label: 'Amount', type: 'number' },
  { name: 'paid', label: 'Paid', type: 'boolean' },
  { name: 'at', label: 'At', type: 'date' },
  { name: 'meta', label: 'Meta', type: 'json' },
] as const;

const rows: Row[] = [
  { id: 1, name: 'Ada', amount: 12.5, paid: true, at: new Date('2024-03-31T01:30:00.000Z'), meta: { a: 1 } },
  { id: 2, name: 'Grace', amount: '7.25', paid: false, at: '2024-10-27T00:59:59.000Z', meta: [1, 'x'] },
  { id: 3n, name: 42, amount: -0.001, paid: null, at: undefined, meta: null },
  { id: '9007199254740993', name: 'big id as text', amount: 1234567.125, paid: true, at: 0, meta: 'plain' },
];

const at = (iso: string) => new Date(iso);

/** What exceljs reads for each cell of `rows`: the value and its exceljs type. */
const expected: [unknown, ExcelJS.ValueType][][] = [
  [
    [1, ExcelJS.ValueType.Number],
    ['Ada', ExcelJS.ValueType.String],
    [12.5, ExcelJS.ValueType.Number],
    [true, ExcelJS.ValueType.Boolean],
    [at('2024-03-31T01:30:00.000Z'), ExcelJS.ValueType.Date],
    ['{"a":1}', ExcelJS.ValueType.String],
  ],
  [
    [2, ExcelJS.ValueType.Number],
    ['Grace', ExcelJS.ValueType.String],
    [7.25, ExcelJS.ValueType.Number],
    [false, ExcelJS.ValueType.Boolean],
    [at('2024-10-27T00:59:59.000Z'), ExcelJS.ValueType.Date],
    ['[1,"x"]', ExcelJS.ValueType.String],
  ],
  [
    [3, ExcelJS.ValueType.Number],
    ['42', ExcelJS.ValueType.String],
    [-0.001, ExcelJS.ValueType.Number],
    [null, ExcelJS.ValueType.Null],
    [null, ExcelJS.ValueType.Null],
    [null, ExcelJS.ValueType.Null],
  ],
  [
    // More than 15 digits stay text, every digit kept: Excel would round them.
    ['9007199254740993', ExcelJS.ValueType.String],
    ['big id as text', ExcelJS.ValueType.String],
    [1234567.125, ExcelJS.ValueType.Number],
    [true, ExcelJS.ValueType.Boolean],
    [at('1970-01-01T00:00:00.000Z'), ExcelJS.ValueType.Date],
    ['plain', ExcelJS.ValueType.String],
  ],
];

describe('xlsx read back by exceljs', () => {
  it('has every cell equal in value and type, from batches of any size', async () => {
    const workbook = await load(encodeAll([rows.slice(0, 1), [], rows.slice(1)], { columns: [...columns] }));
    expect(workbook.worksheets.map((sheet) => sheet.name)).toEqual(['Sheet1']);
    const sheet = workbook.worksheets[0]!;
    expect(sheet.rowCount).toBe(1 + rows.length);
    const header = sheet.getRow(1);
    expect(columns.map((_, c) => header.getCell(c + 1).value)).toEqual(columns.map((column) => column.label));
    expect(header.getCell(1).font?.bold).toBe(true);
    for (let r = 0; r < rows.length; r++) {
      const row = sheet.getRow(r + 2);
      const cells = columns.map((_, c) => row.getCell(c + 1));
      expect(
        cells.map((cell) => [cell.value, cell.type]),
        `row ${r + 1}`,
      ).toEqual(expected[r]);
    }
    // Dates carry a date-time number format, so Excel shows them as dates.
    expect(sheet.getRow(2).getCell(5).numFmt).toBe('yyyy-mm-dd hh:mm:ss');
  });

  it("writes serial dates as the wall clock of the export's time zone, across DST changes", async () => {
    const instants = [
      '2025-03-30T00:59:59.000Z', // Berlin 01:59:59 +01:00, just before summer time
      '2025-03-30T01:00:00.000Z', // Berlin 03:00:00 +02:00
      '2025-11-02T05:30:00.000Z', // New York 01:30 EDT (the first of two)
      '2025-11-02T06:30:00.000Z', // New York 01:30 EST (the second)
    ];
    const wallClock = async (timeZone: string | undefined) => {
      const bytes = encodeAll([instants.map((iso, id) => ({ id, at: iso }))], {
        columns: [
          { name: 'id', type: 'integer' },
          { name: 'at', type: 'date' },
        ],
        ...(timeZone ? { timeZone } : {}),
      });
      const sheet = (await load(bytes)).worksheets[0]!;
      // exceljs reads a serial date as a UTC Date: its ISO text is the wall clock written.
      return instants.map((_, r) => (sheet.getRow(r + 2).getCell(2).value as Date).toISOString());
    };
    expect(await wallClock(undefined)).toEqual(instants);
    expect(await wallClock('Europe/Berlin')).toEqual([
      '2025-03-30T01:59:59.000Z',
      '2025-03-30T03:00:00.000Z',
      '2025-11-02T06:30:00.000Z',
      '2025-11-02T07:30:00.000Z',
    ]);
    expect(await wallClock('america/new_york')).toEqual([
      '2025-03-29T20:59:59.000Z',
      '2025-03-29T21:00:00.000Z',
      '2025-11-02T01:30:00.000Z',
      '2025-11-02T01:30:00.000Z',
    ]);
    // Text without an offset is UTC, as in the text formats, not the server's zone.
    const bytes = encodeAll([[{ at: '2025-03-30 01:00:00' }]], {
      columns: [{ name: 'at', type: 'date' }],
      timeZone: 'Europe/Berlin',
    });
    const cell = (await load(bytes)).worksheets[0]!.getRow(2).getCell(1).value as Date;
    expect(cell.toISOString()).toBe('2025-03-30T03:00:00.000Z');
  });

  it('freezes the header row and gives every column the default width', async () => {
    const workbook = await load(encodeAll([rows], { columns: [...columns], xlsx: { columnWidth: 20 } }));
    const sheet = workbook.worksheets[0]!;
    expect(sheet.views[0]).toMatchObject({ state: 'frozen', ySplit: 1, topLeftCell: 'A2' });
    expect(sheet.columns.map((column) => column.width)).toEqual(columns.map(() => 20));
  });

  it('types cells by their values when no types are declared, and takes the keys of the first row', async () => {
    const workbook = await load(
      encodeAll([[{ n: 1.5, s: 'x', b: false, d: at('2025-01-31T14:05:00Z'), o: { k: 1n } }]]),
    );
    const row = workbook.worksheets[0]!.getRow(2);
    expect(workbook.worksheets[0]!.getRow(1).values).toEqual([undefined, 'n', 's', 'b', 'd', 'o']);
    expect([1, 2, 3, 4, 5].map((c) => [row.getCell(c).value, row.getCell(c).type])).toEqual([
      [1.5, ExcelJS.ValueType.Number],
      ['x', ExcelJS.ValueType.String],
      [false, ExcelJS.ValueType.Boolean],
      [at('2025-01-31T14:05:00Z'), ExcelJS.ValueType.Date],
      ['{"k":"1"}', ExcelJS.ValueType.String],
    ]);
  });

  it('writes no header row with header: false, and a plain one with boldHeader: false', async () => {
    const bare = (await load(encodeAll([[{ a: 1 }]], { xlsx: { header: false } }))).worksheets[0]!;
    expect(bare.getRow(1).getCell(1).value).toBe(1);
    expect(bare.views[0]?.state).not.toBe('frozen');
    const plain = (await load(encodeAll([[{ a: 1 }]], { xlsx: { boldHeader: false } }))).worksheets[0]!;
    expect(plain.getRow(1).getCell(1).value).toBe('a');
    expect(plain.getRow(1).getCell(1).font?.bold).toBeFalsy();
  });

  it('is a valid workbook of the header alone when there are no rows', async () => {
    const workbook = await load(encodeAll([], { columns: [...columns] }));
    expect(workbook.worksheets[0]!.rowCount).toBe(1);
    expect(workbook.worksheets[0]!.getRow(1).getCell(2).value).toBe('Name');
    const empty = await load(encodeAll([]));
    expect(empty.worksheets.map((sheet) => sheet.name)).toEqual(['Sheet1']);
  });

  it('keeps hostile strings as text: formulas, controls, surrogates, markup, and cuts at 32,767', async () => {
    const long = 'y'.repeat(XLSX_MAX_CELL_CHARS + 10);
    const pairAtTheCut = `${'z'.repeat(XLSX_MAX_CELL_CHARS - 1)}😀tail`;
    const hostile: [string, string][] = [
      ["=cmd|' /C calc'!A0", "=cmd|' /C calc'!A0"],
      ['=1+1', '=1+1'],
      ['@SUM(A1)', '@SUM(A1)'],
      ['a\u0000b\u0001c\u0008d\u000be\u001ff\ufffeg', 'abcdefg'],
      ['tab\there\nline\r\nCRLF', 'tab\there\nline\r\nCRLF'],
      [
        'lone \ud800 high, lone \udc00 low, pair \ud83d\ude00',
        'lone \ufffd high, lone \ufffd low, pair \ud83d\ude00',
      ],
      ['<b>&amp; "quotes" \'single\'</b> ]]>', '<b>&amp; "quotes" \'single\'</b> ]]>'],
      ['  padded  ', '  padded  '],
      ['_x0041_', '_x0041_'],
      [long, long.slice(0, XLSX_MAX_CELL_CHARS)],
      // A surrogate pair is never cut in half: the cut falls before it.
      [pairAtTheCut, pairAtTheCut.slice(0, XLSX_MAX_CELL_CHARS - 1)],
    ];
    const workbook = await load(
      encodeAll([hostile.map(([text]) => ({ text }))], { columns: [{ name: 'text', type: 'string' }] }),
    );
    const sheet = workbook.worksheets[0]!;
    for (let r = 0; r < hostile.length; r++) {
      const cell = sheet.getRow(r + 2).getCell(1);
      expect(cell.type, `row ${r + 1}`).toBe(ExcelJS.ValueType.String);
      expect(cell.value, `row ${r + 1}`).toBe(hostile[r]![1]);
    }
    // A header label is escaped the same way.
    const labelled = await load(
      encodeAll([[{ a: 1 }]], { columns: [{ name: 'a', label: '<A & \u0007B>' }] }),
    );
    expect(labelled.worksheets[0]!.getRow(1).getCell(1).value).toBe('<A & B>');
  });

  it('refuses bad options and bad values with a ValidationError naming them', () => {
    expect(() => xlsxFormat.createEncoder({ xlsx: { compressionLevel: 10 } })).toThrow(
      /xlsx\.compressionLevel to be an integer from 0 to 9, got 10/,
    );
    expect(() => xlsxFormat.createEncoder({ xlsx: { columnWidth: 0 } })).toThrow(/xlsx\.columnWidth/);
    expect(() => xlsxFormat.createEncoder({ xlsx: { header: 'yes' as never } })).toThrow(
      /xlsx\.header to be a boolean/,
    );
    const encoder = xlsxFormat.createEncoder();
    expect(() => encoder.encode([{ f: () => 1 }])).toThrow(ValidationError);
    expect(getFormat('xlsx')).toBe(xlsxFormat);
    expect(xlsxFormat.contentType).toBe('application/vnd.openxmlformats-officedocument.spreadsheetml.sheet');
  });

  it('writes a stored (level 0) zip as well as a deflated one, with the same cells', async () => {
    const stored = encodeAll([rows], { columns: [...columns], xlsx: { compressionLevel: 0 } });
    const deflated = encodeAll([rows], { columns: [...columns], xlsx: { compressionLevel: 9 } });
    expect(stored.length).toBeGreaterThan(deflated.length);
    const values = async (bytes: Buffer) =>
      (await load(bytes)).worksheets[0]!.getSheetValues().map((row) =>
        Array.isArray(row) ? row.slice(1) : row,
      );
    expect(await values(stored)).toEqual(await values(deflated));
  });
});

describe('xlsx above the sheet limit', () => {
  it('starts Sheet2 with the header repeated after 1,048,575 data rows, read back by exceljs streaming', async () => {
    const total = XLSX_MAX_ROWS_PER_SHEET + 9; // 1,048,575 in Sheet1, 10 in Sheet2
    const encoder = xlsxFormat.createEncoder({ columns: [{ name: 'n', label: 'N', type: 'integer' }] });
    const parts: Uint8Array[] = [];
    const batch: Row[] = [];
    for (let n = 1; n <= total; n++) {
      batch.push({ n });
      if (batch.length === 10_000 || n === total) {
        parts.push(encoder.encode(batch));
        batch.length = 0;
      }
    }
    parts.push(encoder.finish());
    const reader = new ExcelJS.stream.xlsx.WorkbookReader(Readable.from([Buffer.concat(parts)]), {
      worksheets: 'emit',
    });
    const sheets: { name: string; rows: number; header: unknown; first: unknown; last: unknown }[] = [];
    let expectedN = 1;
    for await (const worksheet of reader) {
      const summary = {
        name: (worksheet as unknown as { name: string }).name,
        rows: 0,
        header: undefined as unknown,
        first: undefined as unknown,
        last: undefined as unknown,
      };
      for await (const row of worksheet) {
        summary.rows++;
        const value = row.getCell(1).value;
        if (row.number === 1) summary.header = value;
        else {
          // Every row in order, none lost or doubled at the sheet boundary.
          if (value !== expectedN)
            throw new Error(
              `expected ${expectedN} in ${summary.name} row ${row.number}, got ${String(value)}`,
            );
          expectedN++;
          summary.first ??= value;
          summary.last = value;
        }
      }
      sheets.push(summary);
    }
    expect(sheets).toEqual([
      {
        name: 'Sheet1',
        rows: XLSX_MAX_ROWS_PER_SHEET,
        header: 'N',
        first: 1,
        last: XLSX_MAX_ROWS_PER_SHEET - 1,
      },
      { name: 'Sheet2', rows: 11, header: 'N', first: XLSX_MAX_ROWS_PER_SHEET, last: total },
    ]);
  }, 300_000);
});

async function findSoffice(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    try {
      await access(join(dir, 'soffice'), constants.X_OK);
      return join(dir, 'soffice');
    } catch {
      // not here
    }
  }
  return undefined;
}

const soffice = await findSoffice();
if (soffice === undefined && process.env.CI) {
  throw new Error(
    'soffice is not installed: apt-get install -y --no-install-recommends libreoffice-calc-nogui (.ci/run does)',
  );
}

describe.skipIf(soffice === undefined)('xlsx read back by LibreOffice', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spark-export-xlsx-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The CSV LibreOffice makes of the file's first sheet, parsed. */
  async function libreOfficeCsv(bytes: Buffer): Promise<string[][]> {
    const input = join(dir, 'export.xlsx');
    await writeFile(input, bytes);
    await promisify(execFile)(
      soffice!,
      [
        `-env:UserInstallation=file://${join(dir, 'profile')}`,
        '--headless',
        '--norestore',
        '--convert-to',
        // UTF-8 (76), comma, double quotes, first line plain, text as shown.
        'csv:Text - txt - csv (StarCalc):44,34,76,1',
        '--outdir',
        dir,
        input,
      ],
      { timeout: 120_000 },
    );
    return parse(await readFile(join(dir, 'export.csv'), 'utf8'), { relax_column_count: true });
  }

  it('converts to CSV rows equal to the source rows', { timeout: 150_000 }, async () => {
    const csv = await libreOfficeCsv(
      encodeAll(
        [
          rows,
          [
            {
              id: 5,
              name: "=cmd|' /C calc'!A0",
              amount: 0.1,
              paid: false,
              at: '2025-01-31T14:05:00Z',
              meta: { q: '"' },
            },
            { id: 6, name: 'ctrl\u0001 & <x> \ud800', amount: 100 },
          ],
        ],
        {
          columns: [...columns],
        },
      ),
    );
    expect(csv).toEqual([
      ['ID', 'Name', 'Amount', 'Paid', 'At', 'Meta'],
      ['1', 'Ada', '12.5', 'TRUE', '2024-03-31 01:30:00', '{"a":1}'],
      ['2', 'Grace', '7.25', 'FALSE', '2024-10-27 00:59:59', '[1,"x"]'],
      ['3', '42', '-0.001', '', '', ''],
      ['9007199254740993', 'big id as text', '1234567.125', 'TRUE', '1970-01-01 00:00:00', 'plain'],
      ['5', "=cmd|' /C calc'!A0", '0.1', 'FALSE', '2025-01-31 14:05:00', '{"q":"\\""}'],
      ['6', 'ctrl & <x> \ufffd', '100', '', '', ''],
    ]);
  });
});
