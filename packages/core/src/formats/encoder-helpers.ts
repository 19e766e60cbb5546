import { describeValue, ValidationError } from '../errors.js';
import { createDateRenderer, type DateRenderer, isDefaultDateRendering } from './dates.js';
import {
  COLUMN_TYPES,
  type ColumnSpec,
  type ColumnType,
  type EncoderOptions,
  type RowEncoder,
} from './types.js';

/*
 * Helpers shared by the three encoders: option checks for `columns`, row checks, projection
 * and BigInt-safe JSON, and the base class of the JSON and NDJSON encoders.
 */

/** A row as the encoders read it. */
export type Row = Readonly<Record<string, unknown>>;

/** How an encoder writes dates: its renderer, and which columns are declared `type: 'date'`. */
export interface DateRendering {
  render: DateRenderer;
  /** False with the defaults (UTC, `'iso'`): a Date is written as `JSON.stringify` writes it. */
  custom: boolean;
  /**
   * For each declared column, whether it is `type: 'date'`, so that its text and epoch
   * milliseconds are written as dates too; `undefined` when none is, and with the defaults:
   * then such values are written as they are, as before time zones existed.
   */
  columns: readonly boolean[] | undefined;
}

const DEFAULT_DATES: DateRendering = { render: createDateRenderer(), custom: false, columns: undefined };

function dateRenderingOf(options: EncoderOptions, columns: readonly ColumnSpec[] | undefined): DateRendering {
  const rendering = { timeZone: options.timeZone, dateFormat: options.dateFormat };
  const dateColumns = columns?.map((column) => column.type === 'date');
  const custom = !isDefaultDateRendering(rendering);
  return {
    render: custom ? createDateRenderer(rendering) : DEFAULT_DATES.render,
    custom,
    columns: custom && dateColumns?.includes(true) ? dateColumns : undefined,
  };
}

/**
 * Checks `options` and `options.columns`; returns the columns, or `undefined` when the
 * columns are to be taken from the first row, and how dates are written.
 */
export function checkEncoderOptions(options: unknown): {
  columns: readonly ColumnSpec[] | undefined;
  dates: DateRendering;
} {
  if (options === undefined) return { columns: undefined, dates: DEFAULT_DATES };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ValidationError(`Expected the encoder options to be an object, got ${describeValue(options)}`, {
      field: 'options',
    });
  }
  const columns = (options as EncoderOptions).columns;
  if (columns === undefined) return { columns: undefined, dates: dateRenderingOf(options, undefined) };
  if (!Array.isArray(columns)) {
    throw new ValidationError(`Expected columns to be an array, got ${describeValue(columns)}`, {
      field: 'columns',
    });
  }
  columns.forEach((column: unknown, index) => {
    const field = `columns[${index}]`;
    if (typeof column !== 'object' || column === null || Array.isArray(column)) {
      throw new ValidationError(`Expected ${field} to be an object, got ${describeValue(column)}`, { field });
    }
    const { name, label } = column as Partial<ColumnSpec>;
    if (typeof name !== 'string' || name === '') {
      throw new ValidationError(
        `Expected ${field}.name to be a non-empty string, got ${describeValue(name)}`,
        {
          field: `${field}.name`,
        },
      );
    }
    if (label !== undefined && typeof label !== 'string') {
      throw new ValidationError(`Expected ${field}.label to be a string, got ${describeValue(label)}`, {
        field: `${field}.label`,
      });
    }
    const { type } = column as Partial<ColumnSpec>;
    if (type !== undefined && !COLUMN_TYPES.includes(type)) {
      throw new ValidationError(
        `Expected ${field}.type to be one of ${COLUMN_TYPES.join(', ')}, got ${describeValue(type)}`,
        { field: `${field}.type` },
      );
    }
  });
  return { columns, dates: dateRenderingOf(options, columns) };
}

/** Throws `INVALID_ROW` unless every row of the batch is an object. `offset` counts earlier rows. */
export function checkRows(rows: readonly unknown[], offset: number): void {
  if (!Array.isArray(rows)) {
    throw new ValidationError(`Expected a batch of rows to be an array, got ${describeValue(rows)}`, {
      code: 'INVALID_ROW',
      field: 'rows',
    });
  }
  for (let index = 0; index < rows.length; index++) {
    const row = rows[index];
    if (typeof row !== 'object' || row === null || Array.isArray(row)) {
      throw new ValidationError(
        `Expected row ${offset + index + 1} to be an object, got ${describeValue(row)}`,
        {
          code: 'INVALID_ROW',
          field: 'rows',
        },
      );
    }
  }
}

/**
 * For each key, whether a row that lacks it would still find it on `Object.prototype`
 * (`toString`, `constructor`, ...); `undefined` when no key is such a name. Reading those keys
 * takes an `Object.hasOwn` check; the others are read as plain properties.
 */
export function inheritedKeys(keys: readonly string[]): readonly boolean[] | undefined {
  const inherited = keys.map((key) => key in Object.prototype);
  return inherited.includes(true) ? inherited : undefined;
}

/** A column as the compiled encoders see it. */
export interface CompiledColumn {
  readonly name: string;
  readonly label: string;
  readonly type: ColumnType | undefined;
  /** A row lacking the key would find it on `Object.prototype`: read it with `Object.hasOwn`. */
  readonly inherited: boolean;
}

export function compileColumns(columns: readonly ColumnSpec[]): CompiledColumn[] {
  return columns.map((column) => ({
    name: column.name,
    label: column.label ?? column.name,
    type: column.type,
    inherited: column.name in Object.prototype,
  }));
}

/**
 * A JavaScript string literal of `text`, for generated code: `JSON.stringify` escapes quotes,
 * backslashes, control characters and lone surrogates, and since ES2019 every JSON string is
 * also a valid ECMAScript string literal (U+2028 and U+2029 included). Names and labels only
 * ever enter generated code through this function.
 */
export function literal(text: string): string {
  return JSON.stringify(text);
}

/** Code that reads `column` from `row` into `v` (the generated encoders' convention). */
export function readValueCode(column: CompiledColumn): string {
  const key = literal(column.name);
  return column.inherited ? `v = hasOwn(row, ${key}) ? row[${key}] : undefined;` : `v = row[${key}];`;
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

function isBigIntError(error: unknown): boolean {
  return error instanceof TypeError && /BigInt/i.test(error.message);
}

/**
 * `JSON.stringify` that writes a BigInt as a string of its digits instead of throwing. The
 * replacer costs a call per value, so it is only used once a BigInt has turned up; callers
 * keep `state.bigint` so that a dataset with BigInt columns does not throw on every row.
 */
export function stringifyJson(value: unknown, state: { bigint: boolean }): string | undefined {
  if (!state.bigint) {
    try {
      return JSON.stringify(value);
    } catch (error) {
      if (!isBigIntError(error)) throw error;
      state.bigint = true;
    }
  }
  return JSON.stringify(value, bigintReplacer);
}

/**
 * `JSON.stringify` that writes every Date (also nested) with `render`, and BigInts as strings.
 * Only for exports with a time zone or date format of their own: the replacer costs a call per value.
 */
export function stringifyJsonWithDates(value: unknown, render: DateRenderer): string | undefined {
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string, item: unknown) {
    // `toJSON` has already turned a Date into text; the holder still has the Date itself.
    const raw = this[key];
    if (raw instanceof Date) {
      const text = render(raw);
      return text === '' ? null : text;
    }
    return typeof item === 'bigint' ? item.toString() : item;
  });
}

/** A date cell as JSON: the rendered text, or `null` for an invalid date. */
export function jsonDate(value: unknown, dates: DateRendering, json: { bigint: boolean }): string {
  if (!(value instanceof Date) && typeof value !== 'string' && typeof value !== 'number') {
    return stringifyJson(value, json) ?? 'null';
  }
  const text = dates.render(value);
  return text === '' && typeof value !== 'string' ? 'null' : JSON.stringify(text);
}

/**
 * How a JSON value of a declared type is written; one function each per export, chosen when the
 * encoder is compiled, so that per-export date and number options plug in at one place.
 */
export interface JsonRenderers {
  /** The JSON text of a Date value (an invalid Date is `null`, as `JSON.stringify` writes it). */
  renderDate: (value: Date) => string;
  /** The JSON text of a number value (not finite: `null`). */
  renderNumber: (value: number) => string;
  /**
   * The renderers write exactly what `JSON.stringify` writes, so rows that are exactly the
   * declared columns may be handed to `JSON.stringify` whole. Set to false by any option that
   * renders dates or numbers differently.
   */
  native: boolean;
}

export const DEFAULT_JSON_RENDERERS: JsonRenderers = {
  renderDate: (value) => JSON.stringify(value),
  renderNumber: (value) => (Number.isFinite(value) ? `${value}` : 'null'),
  native: true,
};

/** The JSON text of any value in a projected row: `null` for what JSON cannot hold. */
function jsonValue(
  value: unknown,
  json: { bigint: boolean },
  renderers: JsonRenderers,
  dates: DateRendering,
): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return renderers.renderNumber(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      return `"${value}"`;
    case 'object':
      if (value === null) return 'null';
      if (value instanceof Date) return renderers.renderDate(value);
      return (
        (dates.custom ? stringifyJsonWithDates(value, dates.render) : stringifyJson(value, json)) ?? 'null'
      );
    default:
      // undefined, and values JSON cannot hold (functions, symbols)
      return 'null';
  }
}

/** Code that appends the JSON text of `v` (a value of `column`) to `out`. */
function jsonValueCode(column: CompiledColumn, customDates: boolean): string {
  // With a time zone or date format of the export's own, a date column's text and epoch
  // milliseconds are written as dates too; with the defaults they stay as they came.
  if (column.type === 'date' && customDates) {
    return "if (v === null || v === undefined) out += 'null'; else out += dateValue(v);";
  }
  switch (column.type) {
    case 'string':
      return "if (typeof v === 'string') out += JSON.stringify(v); else out += value(v);";
    case 'integer':
    case 'number':
      return "if (typeof v === 'number') out += renderNumber(v); else out += value(v);";
    case 'boolean':
      return "if (v === true) out += 'true'; else if (v === false) out += 'false'; else out += value(v);";
    case 'date':
      return "if (typeof v === 'string') out += JSON.stringify(v); else if (v instanceof Date) out += renderDate(v); else out += value(v);";
    default:
      return 'out += value(v);';
  }
}

/**
 * Writes rows as JSON objects holding exactly the columns, in order, with `null` for missing
 * values (JSON has no `undefined`).
 *
 * Compiled once per export from the declared columns and their types. When every row of a
 * batch is exactly the declared columns (its own enumerable keys, in order, no value JSON would
 * leave out, no `toJSON` of its own), the whole batch goes through one native
 * `JSON.stringify`; otherwise a generated projection writes each value by its declared type.
 */
export class ProjectedJsonWriter {
  readonly #keys: readonly string[];
  readonly #json: { bigint: boolean };
  readonly #native: boolean;
  readonly #project: (rows: readonly Row[], lead: string, between: string, after: string) => string;

  constructor(
    columns: readonly CompiledColumn[],
    json: { bigint: boolean },
    dates: DateRendering = DEFAULT_DATES,
  ) {
    // Dates of the export's own zone or format are not what `JSON.stringify` writes: no native batches then.
    const renderers: JsonRenderers = dates.custom
      ? { ...DEFAULT_JSON_RENDERERS, renderDate: (value) => jsonDate(value, dates, json), native: false }
      : DEFAULT_JSON_RENDERERS;
    this.#keys = columns.map((column) => column.name);
    this.#json = json;
    this.#native = renderers.native;
    let body = '';
    columns.forEach((column, index) => {
      body += `out += ${literal((index === 0 ? '{' : ',') + literal(column.name) + ':')};\n`;
      body += `${readValueCode(column)}\n${jsonValueCode(column, dates.custom)}\n`;
    });
    if (columns.length === 0) body = "out += '{';\n";
    const source = `return function projectRows(rows, lead, between, after) {
  let out = '';
  let v;
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    out += r === 0 ? lead : between;
${body}    out += '}';
    out += after;
  }
  return out;
};`;
    const value = (v: unknown) => jsonValue(v, json, renderers, dates);
    const dateValue = (v: unknown) => jsonDate(v, dates, json);
    this.#project = new Function('hasOwn', 'value', 'renderNumber', 'renderDate', 'dateValue', source)(
      Object.hasOwn,
      value,
      renderers.renderNumber,
      renderers.renderDate,
      dateValue,
    );
  }

  /**
   * True when `JSON.stringify(row)` writes what the projection would: the row's own enumerable
   * keys (for-in order, which is JSON.stringify's) are exactly the columns, and no value is one
   * that JSON.stringify leaves out (undefined, a function, a symbol) instead of writing `null`.
   */
  sameShape(row: Row): boolean {
    const keys = this.#keys;
    let index = 0;
    for (const key in row) {
      if (key !== keys[index]) return false;
      const value = row[key];
      if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return false;
      index++;
    }
    return index === keys.length && typeof (row as { toJSON?: unknown }).toJSON !== 'function';
  }

  /** True when every row of the batch may go through `JSON.stringify` whole. */
  nativeBatch(rows: readonly Row[]): boolean {
    if (!this.#native) return false;
    for (let r = 0; r < rows.length; r++) if (!this.sameShape(rows[r]!)) return false;
    return true;
  }

  /** The rows as objects, `lead` before the first, `between` before each other one, `after` after each. */
  write(rows: readonly Row[], lead: string, between: string, after: string): string {
    return this.#project(rows, lead, between, after);
  }

  /** JSON text of one row known to be of the same shape (see `sameShape`). */
  stringify(value: unknown): string {
    return stringifyJson(value, this.#json)!;
  }
}

/** The JSON and NDJSON encoders: the same checks, projection and BigInt handling. */
export abstract class JsonRowsEncoder implements RowEncoder {
  protected readonly json = { bigint: false };
  protected readonly projected: ProjectedJsonWriter | undefined;
  protected readonly dates: DateRendering;
  /** Rows encoded so far. */
  protected rows = 0;
  #finished = false;

  constructor(options: EncoderOptions | undefined) {
    const { columns, dates } = checkEncoderOptions(options);
    this.dates = dates;
    if (columns !== undefined)
      this.projected = new ProjectedJsonWriter(compileColumns(columns), this.json, dates);
  }

  encode(rows: readonly Row[]): string {
    if (this.#finished) throw new Error('encode() was called after finish()');
    checkRows(rows, this.rows);
    const text = this.encodeBatch(rows);
    this.rows += rows.length;
    return text;
  }

  finish(): string {
    if (this.#finished) throw new Error('finish() was called twice');
    this.#finished = true;
    return this.closing();
  }

  /** `JSON.stringify` of the encoder: Dates in the export's zone and format when it has its own. */
  protected stringify(value: unknown): string | undefined {
    return this.dates.custom
      ? stringifyJsonWithDates(value, this.dates.render)
      : stringifyJson(value, this.json);
  }

  /** Encodes a checked batch; `this.rows` still counts the rows before it. */
  protected abstract encodeBatch(rows: readonly Row[]): string;
  protected abstract closing(): string;
}
