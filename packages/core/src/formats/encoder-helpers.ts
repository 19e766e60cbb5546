import { describeValue, ValidationError } from '../errors.js';
import type { ColumnSpec, EncoderOptions, RowEncoder } from './types.js';

/*
 * Helpers shared by the three encoders: option checks for `columns`, row checks, projection
 * and BigInt-safe JSON, and the base class of the JSON and NDJSON encoders.
 */

/** A row as the encoders read it. */
export type Row = Readonly<Record<string, unknown>>;

/**
 * Checks `options` and `options.columns`; returns the column names, or `undefined` when the
 * columns are to be taken from the first row.
 */
export function checkEncoderOptions(options: unknown): { columns: readonly ColumnSpec[] | undefined } {
  if (options === undefined) return { columns: undefined };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ValidationError(`Expected the encoder options to be an object, got ${describeValue(options)}`, {
      field: 'options',
    });
  }
  const columns = (options as EncoderOptions).columns;
  if (columns === undefined) return { columns: undefined };
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
  return { columns };
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

  constructor(keys: readonly string[], json: { bigint: boolean }) {
    this.#keys = keys;
    this.#inherited = inheritedKeys(keys);
    this.#prefixes = keys.map((key, index) => (index === 0 ? '' : ',') + JSON.stringify(key) + ':');
    this.#json = json;
  }

  /** The rows as objects, `lead` before the first, `between` before each other one, `after` after each. */
  write(rows: readonly Row[], lead: string, between: string, after: string): string {
    const keys = this.#keys;
    const inherited = this.#inherited;
    const prefixes = this.#prefixes;
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
        out += this.#value(value);
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
        return value === null ? 'null' : (stringifyJson(value, this.#json) ?? 'null');
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
  /** Rows encoded so far. */
  protected rows = 0;
  #finished = false;

  constructor(options: EncoderOptions | undefined) {
    const { columns } = checkEncoderOptions(options);
    if (columns !== undefined) {
      this.projected = new ProjectedJsonWriter(
        columns.map((column) => column.name),
        this.json,
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

  /** Encodes a checked batch; `this.rows` still counts the rows before it. */
  protected abstract encodeBatch(rows: readonly Row[]): string;
  protected abstract closing(): string;
}
