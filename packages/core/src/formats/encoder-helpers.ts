import { describeValue, ValidationError } from '../errors.js';
import { createDateRenderer, type DateRenderer, isDefaultDateRendering } from './dates.js';
import type { ColumnSpec, EncoderOptions, RowEncoder } from './types.js';

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
 * Writes rows as JSON objects holding exactly `keys`, in that order, with `null` for missing
 * values (JSON has no `undefined`). The text is built directly rather than by copying each
 * row into a new object for `JSON.stringify`: that copy cost about 15% of the throughput.
 */
export class ProjectedJsonWriter {
  readonly #keys: readonly string[];
  readonly #inherited: readonly boolean[] | undefined;
  /** `"key":`, with a leading comma for all but the first key. */
  readonly #prefixes: readonly string[];
  readonly #json: { bigint: boolean };
  readonly #dates: DateRendering;

  constructor(keys: readonly string[], json: { bigint: boolean }, dates: DateRendering = DEFAULT_DATES) {
    this.#keys = keys;
    this.#dates = dates;
    this.#inherited = inheritedKeys(keys);
    this.#prefixes = keys.map((key, index) => (index === 0 ? '' : ',') + JSON.stringify(key) + ':');
    this.#json = json;
  }

  /** The rows as objects, `lead` before the first, `between` before each other one, `after` after each. */
  write(rows: readonly Row[], lead: string, between: string, after: string): string {
    const keys = this.#keys;
    const inherited = this.#inherited;
    const prefixes = this.#prefixes;
    const dateColumns = this.#dates.columns;
    const width = keys.length;
    let out = '';
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r]!;
      out += r === 0 ? lead : between;
      out += '{';
      for (let c = 0; c < width; c++) {
        const key = keys[c]!;
        const value = inherited?.[c] && !Object.hasOwn(row, key) ? undefined : row[key];
        out += prefixes[c]!;
        out +=
          dateColumns?.[c] && value != null ? jsonDate(value, this.#dates, this.#json) : this.#value(value);
      }
      out += '}';
      out += after;
    }
    return out;
  }

  #value(value: unknown): string {
    switch (typeof value) {
      case 'string':
        return JSON.stringify(value);
      case 'number':
        return Number.isFinite(value) ? `${value}` : 'null';
      case 'boolean':
        return value ? 'true' : 'false';
      case 'bigint':
        return `"${value}"`;
      case 'object':
        if (value === null) return 'null';
        if (this.#dates.custom) {
          return value instanceof Date
            ? jsonDate(value, this.#dates, this.#json)
            : (stringifyJsonWithDates(value, this.#dates.render) ?? 'null');
        }
        return stringifyJson(value, this.#json) ?? 'null';
      default:
        // undefined, and values JSON cannot hold (functions, symbols)
        return 'null';
    }
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
    if (columns !== undefined) {
      this.projected = new ProjectedJsonWriter(
        columns.map((column) => column.name),
        this.json,
        dates,
      );
    }
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
