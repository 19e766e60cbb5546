import { constants, crc32, deflateRawSync } from 'node:zlib';
import { Zip, ZipPassThrough } from 'fflate';
import { describeValue, ValidationError } from '../errors.js';
import { normalizeTimeZone, parseIsoText, timeZoneOffsetMinutes } from './dates.js';
import { checkEncoderOptions, checkRows, inheritedKeys, type Row, stringifyJson } from './encoder-helpers.js';
import type { ByteRowEncoder, ColumnType, EncoderOptions, Format, XlsxOptions } from './types.js';

/*
 * A streaming XLSX writer: the workbook is a zip of a few small XML parts and one sheet part
 * per 1,048,576 rows. Sheet XML is built row by row with inline strings (no shared-strings
 * table to hold in memory), deflated piece by piece, and laid into fflate's streaming zip,
 * whose output is returned from each `encode()`. Only the current batch is in memory.
 */

/**
 * A zip entry compressed by Node's native zlib, synchronously: fflate's own `ZipDeflate` and
 * CRC are pure JavaScript, and took most of the CPU time of an export (docs/benchmarks.md).
 * Each piece is deflated on its own and ends in a sync flush instead of a final block, so the
 * pieces join into one deflate stream (as pigz joins its blocks); an empty final block closes
 * it. Level 0 stores the pieces as they are. fflate's `Zip` writes the headers, the data
 * descriptor and the central directory.
 */
class ZlibZipEntry extends ZipPassThrough {
  readonly #level: number;
  #runningCrc = 0;

  constructor(filename: string, level: number) {
    super(filename);
    this.#level = level;
    this.compression = level === 0 ? 0 : 8;
    // The zip header's deflate option bits, as fflate sets them: fast, normal or maximum.
    (this as { flag?: number }).flag =
      level === 0 ? 0 : level === 1 ? 3 : level < 6 ? 2 : level === 9 ? 1 : 0;
  }

  override push(chunk: Uint8Array<ArrayBuffer>, final?: boolean): void {
    this.#runningCrc = crc32(chunk, this.#runningCrc);
    this.size += chunk.length;
    if (final) this.crc = this.#runningCrc >>> 0;
    this.process(chunk, final ?? false);
  }

  protected override process(chunk: Uint8Array<ArrayBuffer>, final: boolean): void {
    if (this.#level === 0) {
      this.ondata(null, chunk, final);
      return;
    }
    const deflated =
      chunk.length > 0
        ? deflateRawSync(chunk, { level: this.#level, finishFlush: constants.Z_SYNC_FLUSH })
        : undefined;
    if (!final) {
      if (deflated !== undefined) this.ondata(null, deflated, false);
      return;
    }
    this.ondata(null, deflated === undefined ? FINAL_BLOCK : Buffer.concat([deflated, FINAL_BLOCK]), true);
  }
}

/** An empty final deflate block: fixed Huffman codes, the end-of-block code at once. */
const FINAL_BLOCK = new Uint8Array([0x03, 0x00]);

/** Excel's rows per sheet, the header row included. */
export const XLSX_MAX_ROWS_PER_SHEET = 1_048_576;
/** Excel's longest text in one cell, in UTF-16 code units; longer strings are cut to it. */
export const XLSX_MAX_CELL_CHARS = 32_767;
/**
 * fflate writes no Zip64 records, so a zip part and the whole file must stay under 4 GiB. A
 * sheet whose XML passes this size (4 GiB less room for a batch of rows) ends early and the
 * rows go on in the next sheet; a file that would pass 4 GiB fails (a `ValidationError`).
 */
const MAX_SHEET_XML_BYTES = 2 ** 32 - 2 ** 28;
const MAX_ZIP_BYTES = 2 ** 32 - 2 ** 20;
/** Sheet XML is handed to the deflater in pieces of about this many characters. */
const PIECE_CHARS = 256 * 1024;

const MAIN_NS = 'http://schemas.openxmlformats.org/spreadsheetml/2006/main';
const REL_NS = 'http://schemas.openxmlformats.org/officeDocument/2006/relationships';
const XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n';

/** Cell style indices in styles.xml's `cellXfs`. */
const STYLE_BOLD = 1;
const STYLE_DATE = 2;
/** Days from Excel's epoch (1899-12-30, counting Lotus's 1900-02-29) to 1970-01-01. */
const EXCEL_EPOCH_OFFSET_DAYS = 25_569;
const MS_PER_DAY = 86_400_000;
/** 1900-03-01: earlier serial numbers mean other days in Excel than in Lotus or LibreOffice. */
const FIRST_SAFE_DATE_MS = Date.UTC(1900, 2, 1);

/** `XlsxOptions` with every default filled in. */
type XlsxSettings = Required<XlsxOptions>;

function checkBoolean(options: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const value = options[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw new ValidationError(`Expected xlsx.${key} to be a boolean, got ${describeValue(value)}`, {
      field: `xlsx.${key}`,
    });
  }
  return value;
}

/** Checks `XlsxOptions` and fills in the defaults. @throws {ValidationError} naming the field */
export function checkXlsxOptions(xlsx: unknown): XlsxSettings {
  if (xlsx === undefined) return { header: true, boldHeader: true, columnWidth: 16, compressionLevel: 1 };
  if (typeof xlsx !== 'object' || xlsx === null || Array.isArray(xlsx)) {
    throw new ValidationError(`Expected xlsx to be an object, got ${describeValue(xlsx)}`, { field: 'xlsx' });
  }
  const options = xlsx as Record<string, unknown>;
  const { columnWidth = 16, compressionLevel = 1 } = options;
  if (typeof columnWidth !== 'number' || !(columnWidth > 0 && columnWidth <= 255)) {
    throw new ValidationError(
      `Expected xlsx.columnWidth to be a number of characters above 0 and at most 255, got ${describeValue(columnWidth)}`,
      { field: 'xlsx.columnWidth' },
    );
  }
  if (
    !Number.isInteger(compressionLevel) ||
    (compressionLevel as number) < 0 ||
    (compressionLevel as number) > 9
  ) {
    throw new ValidationError(
      `Expected xlsx.compressionLevel to be an integer from 0 to 9, got ${describeValue(compressionLevel)}`,
      { field: 'xlsx.compressionLevel' },
    );
  }
  return {
    header: checkBoolean(options, 'header', true),
    boldHeader: checkBoolean(options, 'boldHeader', true),
    columnWidth,
    compressionLevel: compressionLevel as number,
  };
}

/** `A`, `B`, ..., `Z`, `AA`, ...: the letters of the 0-based column `index`. */
export function columnLetters(index: number): string {
  let letters = '';
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) {
    letters = String.fromCharCode(65 + ((n - 1) % 26)) + letters;
  }
  return letters;
}

/**
 * Characters that need work before they go into XML text: markup (`&`, `<`, `>`), CR (which
 * XML parsers would turn into LF), the C0 controls XML 1.0 cannot hold, surrogates (a lone one
 * is not well-formed) and the non-characters U+FFFE and U+FFFF.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters looked for
const NEEDS_WORK = /[&<>\r\u0000-\u0008\u000b\u000c\u000e-\u001f\ud800-\udfff\ufffe\uffff]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters dropped
const NOT_IN_XML = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * `text` as the content of an XML text node, with Excel's rules: controls XML cannot hold are
 * dropped, lone surrogates become U+FFFD, and text past 32,767 code units is cut (never in the
 * middle of a surrogate pair).
 */
export function xmlText(text: string): string {
  if (text.length <= XLSX_MAX_CELL_CHARS && !NEEDS_WORK.test(text)) return text;
  let clean = text.replace(NOT_IN_XML, '');
  clean = clean.replace(LONE_SURROGATE, '\ufffd');
  if (clean.length > XLSX_MAX_CELL_CHARS) {
    const last = clean.charCodeAt(XLSX_MAX_CELL_CHARS - 1);
    clean = clean.slice(0, last >= 0xd800 && last <= 0xdbff ? XLSX_MAX_CELL_CHARS - 1 : XLSX_MAX_CELL_CHARS);
  }
  return clean.replace(/[&<>\r]/g, (char) =>
    char === '&' ? '&amp;' : char === '<' ? '&lt;' : char === '>' ? '&gt;' : '&#13;',
  );
}

/** An Excel serial date (days since 1899-12-30, UTC) for epoch milliseconds. */
export function excelSerialDate(epochMs: number): number {
  return epochMs / MS_PER_DAY + EXCEL_EPOCH_OFFSET_DAYS;
}

/** A decimal number as text, as database drivers give big integers and decimals. */
const NUMERIC = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;
/** Excel keeps 15 significant digits; a numeric string with more stays text, every digit kept. */
const MAX_EXCEL_DIGITS = 15;

function fitsExcelNumber(numeric: string): boolean {
  const mantissa = numeric
    .replace(/[eE].*$/, '')
    .replace(/[^\d]/g, '')
    .replace(/^0+/, '')
    .replace(/0+$/, '');
  return mantissa.length <= MAX_EXCEL_DIGITS;
}

function invalidValue(key: string, value: unknown): ValidationError {
  return new ValidationError(
    `Expected column "${key}" to hold a string, number, boolean, bigint, Date, object or null, got a ${typeof value}`,
    { code: 'INVALID_ROW', field: key },
  );
}

class XlsxEncoder implements ByteRowEncoder {
  readonly output = 'bytes';
  readonly #settings: XlsxSettings;
  readonly #json = { bigint: false };
  readonly #zip: Zip;
  /** Zip output not yet returned. */
  #out: Uint8Array[] = [];
  #zipBytes = 0;
  #zipError: Error | undefined;
  #keys: readonly string[] | undefined;
  #labels: readonly string[] | undefined;
  #types: readonly (ColumnType | undefined)[] = [];
  #inherited: readonly boolean[] | undefined;
  /** `A`, `B`, ... for each column. */
  #letters: readonly string[] = [];
  #sheet: ZipPassThrough | undefined;
  #sheets = 0;
  /** Rows in the current sheet, the header included; the next row's number is one more. */
  #sheetRows = 0;
  #sheetXmlBytes = 0;
  #rows = 0;
  #finished = false;

  /** Serial dates are the wall clock of this zone (IANA, normalised). */
  readonly #timeZone: string;

  constructor(options: EncoderOptions | undefined) {
    const { columns } = checkEncoderOptions(options);
    this.#settings = checkXlsxOptions(options?.xlsx);
    this.#timeZone = options?.timeZone === undefined ? 'UTC' : normalizeTimeZone(options.timeZone);
    if (columns !== undefined) {
      this.#setColumns(
        columns.map((column) => column.name),
        columns.map((column) => column.label ?? column.name),
        columns.map((column) => column.type),
      );
    }
    this.#zip = new Zip((error, chunk) => {
      if (error) {
        this.#zipError ??= error;
        return;
      }
      this.#zipBytes += chunk.length;
      this.#out.push(chunk);
    });
  }

  #setColumns(
    keys: readonly string[],
    labels: readonly string[],
    types: readonly (ColumnType | undefined)[],
  ) {
    this.#keys = keys;
    this.#labels = labels;
    this.#types = types;
    this.#inherited = inheritedKeys(keys);
    this.#letters = keys.map((_, index) => columnLetters(index));
  }

  encode(rows: readonly Row[]): Uint8Array {
    if (this.#finished) throw new Error('encode() was called after finish()');
    checkRows(rows, this.#rows);
    if (rows.length === 0) return new Uint8Array(0);
    if (this.#keys === undefined) {
      const keys = Object.keys(rows[0]!);
      this.#setColumns(keys, keys, []);
    }
    let xml = '';
    for (let r = 0; r < rows.length; r++) {
      if (
        this.#sheet === undefined ||
        this.#sheetRows >= XLSX_MAX_ROWS_PER_SHEET ||
        this.#sheetXmlBytes >= MAX_SHEET_XML_BYTES
      ) {
        this.#push(xml);
        xml = '';
        this.#startSheet();
      }
      xml += this.#row(rows[r]!, ++this.#sheetRows);
      if (xml.length >= PIECE_CHARS) {
        this.#push(xml);
        xml = '';
      }
    }
    this.#push(xml);
    this.#rows += rows.length;
    return this.#take();
  }

  finish(): Uint8Array {
    if (this.#finished) throw new Error('finish() was called twice');
    this.#finished = true;
    // A workbook has at least one sheet: an empty export is a sheet with the header alone.
    if (this.#sheet === undefined) this.#startSheet();
    this.#endSheet();
    this.#file('[Content_Types].xml', this.#contentTypes());
    this.#file('_rels/.rels', rootRels());
    this.#file('xl/workbook.xml', this.#workbook());
    this.#file('xl/_rels/workbook.xml.rels', this.#workbookRels());
    this.#file('xl/styles.xml', STYLES);
    this.#zip.end();
    return this.#take();
  }

  #take(): Uint8Array {
    if (this.#zipError) throw this.#zipError;
    if (this.#zipBytes > MAX_ZIP_BYTES) {
      throw new ValidationError(
        'The XLSX file would pass 4 GiB, the most a zip without Zip64 can address; export fewer rows or columns, or use CSV or Parquet',
        { field: 'format' },
      );
    }
    const out = this.#out;
    this.#out = [];
    if (out.length === 1) return out[0]!;
    return Buffer.concat(out);
  }

  #zipEntry(name: string): ZipPassThrough {
    const level = this.#settings.compressionLevel;
    const entry = new ZlibZipEntry(name, level);
    this.#zip.add(entry);
    return entry;
  }

  #file(name: string, xml: string): void {
    this.#zipEntry(name).push(Buffer.from(xml, 'utf8'), true);
  }

  #push(xml: string): void {
    if (xml.length === 0) return;
    const bytes = Buffer.from(xml, 'utf8');
    this.#sheetXmlBytes += bytes.length;
    this.#sheet!.push(bytes, false);
  }

  #startSheet(): void {
    this.#endSheet();
    this.#sheets++;
    this.#sheet = this.#zipEntry(`xl/worksheets/sheet${this.#sheets}.xml`);
    this.#sheetRows = 0;
    this.#sheetXmlBytes = 0;
    const { header, boldHeader, columnWidth } = this.#settings;
    const labels = this.#labels;
    const frozen = header && labels !== undefined;
    let xml = `${XML_HEAD}<worksheet xmlns="${MAIN_NS}" xmlns:r="${REL_NS}"><sheetViews><sheetView workbookViewId="0"${this.#sheets === 1 ? ' tabSelected="1"' : ''}>`;
    if (frozen)
      xml +=
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/>';
    xml += '</sheetView></sheetViews><sheetFormatPr defaultRowHeight="15"/>';
    if (labels !== undefined && labels.length > 0) {
      xml += `<cols><col min="1" max="${labels.length}" width="${columnWidth}" customWidth="1"/></cols>`;
    }
    xml += '<sheetData>';
    if (frozen) {
      this.#sheetRows = 1;
      const style = boldHeader ? ` s="${STYLE_BOLD}"` : '';
      xml += '<row r="1">';
      for (let c = 0; c < labels.length; c++) {
        xml += `<c r="${this.#letters[c]}1"${style} t="inlineStr"><is><t xml:space="preserve">${xmlText(labels[c]!)}</t></is></c>`;
      }
      xml += '</row>';
    }
    this.#push(xml);
  }

  #endSheet(): void {
    if (this.#sheet === undefined) return;
    this.#sheet.push(Buffer.from('</sheetData></worksheet>', 'utf8'), true);
    this.#sheet = undefined;
  }

  #row(row: Row, number: number): string {
    const keys = this.#keys!;
    const inherited = this.#inherited;
    const types = this.#types;
    const letters = this.#letters;
    const n = `${number}`;
    let xml = `<row r="${n}">`;
    for (let c = 0; c < keys.length; c++) {
      const key = keys[c]!;
      const value = inherited?.[c] && !Object.hasOwn(row, key) ? undefined : row[key];
      if (value === null || value === undefined) continue;
      xml += this.#cell(letters[c] + n, value, types[c], key);
    }
    return `${xml}</row>`;
  }

  /** One `<c>` element, typed by the declared column type or else by the value. */
  #cell(ref: string, value: unknown, type: ColumnType | undefined, key: string): string {
    switch (type) {
      case 'string':
        return typeof value === 'string' ? text(ref, value) : text(ref, this.#asText(value, key));
      case 'number':
      case 'integer':
        if (typeof value === 'string' && NUMERIC.test(value) && fitsExcelNumber(value)) {
          return this.#number(ref, Number(value), value);
        }
        break;
      case 'date':
        if (typeof value === 'string' || typeof value === 'number') {
          // Text without an offset is UTC (SQLite's CURRENT_TIMESTAMP), never the server's zone.
          const ms = typeof value === 'number' ? value : parseIsoText(value);
          if (ms !== undefined && Number.isFinite(ms)) return this.#date(ref, new Date(ms));
        }
        break;
    }
    switch (typeof value) {
      case 'string':
        return text(ref, value);
      case 'number':
        return this.#number(ref, value, `${value}`);
      case 'bigint':
        // Excel keeps 15 significant digits: a bigint beyond 2^53 stays exact as text.
        return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
          ? `<c r="${ref}"><v>${value}</v></c>`
          : text(ref, `${value}`);
      case 'boolean':
        return `<c r="${ref}" t="b"><v>${value ? 1 : 0}</v></c>`;
      case 'object':
        if (value instanceof Date) return this.#date(ref, value);
        return text(ref, stringifyJson(value, this.#json) ?? '');
      default:
        throw invalidValue(key, value);
    }
  }

  #number(ref: string, value: number, original: string): string {
    // Excel has no NaN or infinity: those stay text, as written by the source.
    if (!Number.isFinite(value)) return text(ref, original);
    return `<c r="${ref}"><v>${value}</v></c>`;
  }

  #date(ref: string, date: Date): string {
    const ms = date.getTime();
    if (Number.isNaN(ms)) return '';
    // Excel cannot show dates before 1900, and counts days up to March 1900 its own way.
    if (ms < FIRST_SAFE_DATE_MS) return text(ref, date.toISOString());
    // A serial date has no zone: it is the wall clock of the export's time zone at that instant.
    const zone = this.#timeZone;
    const wallClockMs = zone === 'UTC' ? ms : ms + timeZoneOffsetMinutes(ms, zone) * 60_000;
    return `<c r="${ref}" s="${STYLE_DATE}"><v>${excelSerialDate(wallClockMs)}</v></c>`;
  }

  #asText(value: unknown, key: string): string {
    switch (typeof value) {
      case 'number':
      case 'bigint':
      case 'boolean':
        return `${value}`;
      case 'object':
        if (value instanceof Date) return Number.isNaN(value.getTime()) ? '' : value.toISOString();
        return stringifyJson(value, this.#json) ?? '';
      default:
        throw invalidValue(key, value);
    }
  }

  #contentTypes(): string {
    let sheets = '';
    for (let n = 1; n <= this.#sheets; n++) {
      sheets += `<Override PartName="/xl/worksheets/sheet${n}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>`;
    }
    return `${XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>${sheets}<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>`;
  }

  #workbook(): string {
    let sheets = '';
    for (let n = 1; n <= this.#sheets; n++)
      sheets += `<sheet name="Sheet${n}" sheetId="${n}" r:id="rId${n}"/>`;
    return `${XML_HEAD}<workbook xmlns="${MAIN_NS}" xmlns:r="${REL_NS}"><bookViews><workbookView/></bookViews><sheets>${sheets}</sheets></workbook>`;
  }

  #workbookRels(): string {
    let rels = '';
    for (let n = 1; n <= this.#sheets; n++) {
      rels += `<Relationship Id="rId${n}" Type="${REL_NS}/worksheet" Target="worksheets/sheet${n}.xml"/>`;
    }
    rels += `<Relationship Id="rId${this.#sheets + 1}" Type="${REL_NS}/styles" Target="styles.xml"/>`;
    return `${XML_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">${rels}</Relationships>`;
  }
}

function text(ref: string, value: string): string {
  return `<c r="${ref}" t="inlineStr"><is><t xml:space="preserve">${xmlText(value)}</t></is></c>`;
}

function rootRels(): string {
  return `${XML_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="${REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>`;
}

/** Default, bold (the header) and date-time (`yyyy-mm-dd hh:mm:ss`) cell styles. */
const STYLES = `${XML_HEAD}<styleSheet xmlns="${MAIN_NS}"><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts><fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font><font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/><xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>`;

/**
 * Excel workbooks (Office Open XML), streamed: typed cells from the declared column types,
 * inline strings, a frozen bold header, a new sheet every 1,048,575 data rows. Strings are
 * never formulas here, so a cell starting with `=` is shown as written.
 *
 * @example
 * ```ts
 * const encoder = xlsxFormat.createEncoder({ columns: [{ name: 'total', type: 'number' }] });
 * const bytes = Buffer.concat([encoder.encode([{ total: 9.5 }]), encoder.finish()]); // a .xlsx file
 * ```
 */
export const xlsxFormat: Format<ByteRowEncoder> = {
  name: 'xlsx',
  contentType: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  extension: 'xlsx',
  gzip: false,
  createEncoder: (options) => new XlsxEncoder(options),
};
