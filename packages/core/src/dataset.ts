import type { Readable } from 'node:stream';
import { isTimeZone, normalizeDate } from './date-param.js';
import { describeValue, NotFoundError, ValidationError } from './errors.js';
import { COLUMN_TYPES, type ColumnSpec, FORMAT_NAMES, type FormatName } from './formats/types.js';

/** A row of an export: a plain object. */
export type Row = Record<string, unknown>;

/**
 * What a dataset's `source` may return: an async iterable (async generator, DB cursor), a sync
 * iterable (array, generator) or an object-mode `Readable`. Sources are pulled lazily, as
 * fast as the destination drains; nothing is buffered whole.
 */
export type RowSource = AsyncIterable<Row> | Iterable<Row> | Readable;

export interface SourceContext {
  /** Aborted when the export is cancelled, the client goes away or the manager shuts down. */
  signal: AbortSignal;
  /** The columns the export will write, when known. A source may select only these. */
  columns: readonly string[] | undefined;
}

/** The declared type of a dataset parameter; request values are coerced to it. */
export type ParamType = 'string' | 'integer' | 'number' | 'boolean' | 'date' | 'enum';

export interface ParamSpec {
  type: ParamType;
  /** @default false */
  required?: boolean;
  /** Used when the parameter is absent. */
  default?: string | number | boolean;
  /** Allowed values, for `type: 'enum'`. */
  values?: readonly string[];
  /** Inclusive bounds for `integer` and `number`. */
  min?: number;
  max?: number;
  /** Longest accepted string, for `string`. @default 1000 */
  maxLength?: number;
  /**
   * For `date`: the IANA time zone (`Europe/Berlin`) of values that have no offset. A local
   * time there becomes its UTC instant; one that a daylight-saving change skips or repeats is
   * refused (422) rather than guessed; a calendar day means the first moment of that day there.
   * Without it, such times are UTC and a calendar day stays a calendar day.
   * @default undefined (UTC)
   */
  timeZone?: string;
  description?: string;
}

/**
 * Validated, typed parameter values. A `date` reaches the source as a string in one of two
 * forms: a calendar day `YYYY-MM-DD` (when the request gave only a day and the param has no
 * `timeZone`), or else the UTC instant `YYYY-MM-DDTHH:mm:ss.sssZ`, whatever offset or local time
 * the request used.
 */
export type Params = Record<string, string | number | boolean>;

/** Declared params by name. */
export type ParamSpecs = Readonly<Record<string, ParamSpec>>;

type ValueOfType<T extends ParamType> = T extends 'integer' | 'number'
  ? number
  : T extends 'boolean'
    ? boolean
    : string;

/**
 * What a param spec hands the source: a `number` for `integer` and `number`, a `boolean` for
 * `boolean`, one of the declared `values` for an `enum`, a string otherwise (a `date` is
 * normalised, see {@link Params}).
 */
export type ParamValue<S extends ParamSpec> = S extends {
  type: 'enum';
  values: readonly (infer V extends string)[];
}
  ? V
  : ValueOfType<S['type']>;

/** A param is always there when it is required or has a default. */
type AlwaysPresent<S extends ParamSpec> = S extends { required: true }
  ? true
  : S extends { default: string | number | boolean }
    ? true
    : false;

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/**
 * The params a dataset's `source` and `count` receive, typed from its declared params: with
 * `params: { from: { type: 'date', required: true }, n: { type: 'integer' } }` they are
 * `{ from: string; n?: number }`, and a param that is not declared does not compile. Specs
 * that are only known as `ParamSpecs` (e.g. from a config file) give {@link Params}.
 */
export type InferParams<P extends ParamSpecs> = string extends keyof P
  ? Params
  : Simplify<
      { -readonly [K in keyof P as AlwaysPresent<P[K]> extends true ? K : never]: ParamValue<P[K]> } & {
        -readonly [K in keyof P as AlwaysPresent<P[K]> extends true ? never : K]?: ParamValue<P[K]>;
      }
    >;

/** No declared params: a dataset without `params` accepts none. */
export type NoParams = Record<never, never>;

export interface DatasetDefinition<P extends ParamSpecs = ParamSpecs> {
  description?: string;
  /** Columns in output order. Without them, CSV takes its columns from the first row. */
  columns?: readonly ColumnSpec[];
  /** Declared parameters; requests with unknown or invalid params are rejected (422). */
  params?: P;
  /**
   * Formats this dataset may be exported as. Parquet takes its schema from the column types,
   * so it needs `columns` with a `type` each. @default every format (Parquet only when every
   * column has a type)
   */
  formats?: readonly FormatName[];
  /** Produces the rows. Called once per export with validated params. */
  source(params: InferParams<P>, context: SourceContext): RowSource | Promise<RowSource>;
  /**
   * Longest one export of this dataset may run; then it fails with `EXPORT_TIMEOUT`. `0` for
   * no limit. @default the manager's `maxDurationMs`
   */
  maxDurationMs?: number;
  /**
   * Longest wait for the next row from this dataset's source; then the export fails with
   * `SOURCE_IDLE`. `0` for no limit. @default the manager's `idleTimeoutMs`
   */
  idleTimeoutMs?: number;
  /** Optional cheap row count, shown as `progress.totalRows` of jobs. */
  count?(
    params: InferParams<P>,
    context: { signal: AbortSignal },
  ): number | undefined | Promise<number | undefined>;
}

/**
 * A checked dataset, as the manager keeps it. Its params are no longer typed per dataset (the
 * manager holds datasets of every shape in one map); {@link defineDataset} typed them for `source`.
 */
export interface Dataset extends DatasetDefinition {
  readonly name: string;
  readonly formats: readonly FormatName[];
}

const DATASET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const INTEGER_TEXT = /^[-+]?\d+$/;
const DATE_EXPECTED = 'an ISO 8601 date such as 2025-01-31 or 2025-01-31T12:00:00Z';
const NUMBER_TEXT = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * Checks a dataset definition and returns it with its name. Throws `TypeError` naming the
 * bad field (a programming error, not a client error). The params that `source` receives are
 * typed from `params` (see {@link InferParams}); no `as const` is needed.
 *
 * @example
 * ```ts
 * const orders = defineDataset('orders', {
 *   columns: [{ name: 'id' }, { name: 'total', label: 'Total (EUR)' }],
 *   params: { from: { type: 'date', required: true } },
 *   source: (params, { signal }) => db.cursor('select id, total from orders where day >= $1', [params.from], signal),
 * });
 * ```
 */
export function defineDataset<const P extends ParamSpecs = NoParams>(
  name: string,
  definition: DatasetDefinition<P>,
): Dataset {
  if (typeof name !== 'string' || !DATASET_NAME.test(name)) {
    throw new TypeError(
      `Expected dataset name to be 1-64 letters, digits, "_", "-" or ".", got ${describeValue(name)}`,
    );
  }
  if (typeof definition?.source !== 'function') {
    throw new TypeError(
      `Expected dataset "${name}" source to be a function, got ${describeValue(definition?.source)}`,
    );
  }
  const columns = definition.columns;
  if (columns !== undefined) {
    if (!Array.isArray(columns)) {
      throw new TypeError(`Expected dataset "${name}" columns to be an array, got ${describeValue(columns)}`);
    }
    const seen = new Set<string>();
    for (const [index, column] of columns.entries()) {
      if (typeof column?.name !== 'string' || column.name === '') {
        throw new TypeError(
          `Expected dataset "${name}" columns[${index}].name to be a non-empty string, got ${describeValue(column?.name)}`,
        );
      }
      if (seen.has(column.name))
        throw new TypeError(`Dataset "${name}" declares column "${column.name}" twice`);
      if (column.type !== undefined && !COLUMN_TYPES.includes(column.type)) {
        throw new TypeError(
          `Expected dataset "${name}" columns[${index}].type to be one of ${COLUMN_TYPES.join(', ')}, got ${describeValue(column.type)}`,
        );
      }
      seen.add(column.name);
    }
  }
  for (const [param, spec] of Object.entries(definition.params ?? {})) {
    if (!PARAM_NAME.test(param)) {
      throw new TypeError(
        `Expected dataset "${name}" param name to match ${PARAM_NAME}, got ${JSON.stringify(param)}`,
      );
    }
    const types: readonly ParamType[] = ['string', 'integer', 'number', 'boolean', 'date', 'enum'];
    if (!types.includes(spec?.type)) {
      throw new TypeError(
        `Expected dataset "${name}" params.${param}.type to be one of ${types.join(', ')}, got ${describeValue(spec?.type)}`,
      );
    }
    if (spec.timeZone !== undefined) {
      if (spec.type !== 'date') {
        throw new TypeError(`Dataset "${name}" params.${param}.timeZone only applies to type "date"`);
      }
      if (!isTimeZone(spec.timeZone)) {
        throw new TypeError(
          `Expected dataset "${name}" params.${param}.timeZone to be an IANA time zone such as Europe/Berlin, got ${describeValue(spec.timeZone)}`,
        );
      }
    }
    if (spec.type === 'enum' && (!Array.isArray(spec.values) || spec.values.length === 0)) {
      throw new TypeError(
        `Expected dataset "${name}" params.${param}.values to be a non-empty array of strings`,
      );
    }
    if (spec.default !== undefined) {
      // A default is used as it is; check it now rather than on the first request without the param.
      try {
        coerceParam(param, spec, spec.default);
      } catch (error) {
        throw new TypeError(
          `Dataset "${name}" params.${param}.default is invalid: ${(error as Error).message}`,
        );
      }
    }
  }
  for (const limit of ['maxDurationMs', 'idleTimeoutMs'] as const) {
    const value = definition[limit];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
      throw new TypeError(
        `Expected dataset "${name}" ${limit} to be an integer >= 0 (milliseconds, 0 for no limit), got ${describeValue(value)}`,
      );
    }
  }
  const typed = hasTypedColumns(definition);
  const formats = definition.formats ?? FORMAT_NAMES.filter((format) => format !== 'parquet' || typed);
  for (const format of formats) {
    if (!FORMAT_NAMES.includes(format)) {
      throw new TypeError(
        `Expected dataset "${name}" formats to contain only ${FORMAT_NAMES.join(', ')}, got ${describeValue(format)}`,
      );
    }
  }
  if (formats.includes('parquet') && !typed) {
    throw new TypeError(
      `Dataset "${name}" lists parquet, which needs typed columns: declare columns with a type each (string, number, integer, boolean, date or json)`,
    );
  }
  // `source` only ever receives params validated against these specs, so the typed callback is
  // safe to keep as one taking any `Params`.
  return { ...definition, name, formats } as unknown as Dataset;
}

/** True when the dataset declares columns and each has a `type`: what Parquet's schema needs. */
export function hasTypedColumns(definition: Pick<DatasetDefinition, 'columns'>): boolean {
  const { columns } = definition;
  return (
    Array.isArray(columns) && columns.length > 0 && columns.every((column) => column?.type !== undefined)
  );
}

/**
 * Validates and coerces request params against a dataset's declared params. Values may come
 * as strings (a query string) or typed (a JSON body). Datasets that declare no params accept
 * none.
 *
 * @throws {ValidationError} 422 `INVALID_PARAMS`, naming the param
 */
export function validateParams(dataset: Dataset, raw: unknown): Params {
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalid('params', `Expected params to be an object, got ${describeValue(raw)}`);
  }
  const specs = dataset.params ?? {};
  const input = raw as Record<string, unknown>;
  const params: Params = {};
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(specs, key)) {
      const known = Object.keys(specs);
      throw invalid(
        `params.${key}`,
        `Unknown param "${key}" for dataset "${dataset.name}"; expected ${known.length ? `one of ${known.join(', ')}` : 'no params'}`,
      );
    }
  }
  for (const [key, spec] of Object.entries(specs)) {
    const value = input[key];
    if (value === undefined || value === '') {
      // Coerced like a request value, so that a date default reaches the source normalised too.
      if (spec.default !== undefined) params[key] = coerceParam(key, spec, spec.default);
      else if (spec.required)
        throw invalid(`params.${key}`, `Missing required param "${key}" (${spec.type})`);
      continue;
    }
    params[key] = coerceParam(key, spec, value);
  }
  return params;
}

function coerceParam(key: string, spec: ParamSpec, value: unknown): string | number | boolean {
  const field = `params.${key}`;
  const fail = (expected: string) =>
    invalid(field, `Expected param "${key}" to be ${expected}, got ${describeValue(value)}`);
  switch (spec.type) {
    case 'string': {
      if (typeof value !== 'string') throw fail('a string');
      const maxLength = spec.maxLength ?? 1000;
      if (value.length > maxLength) throw fail(`a string of at most ${maxLength} characters`);
      return value;
    }
    case 'integer':
    case 'number': {
      const integer = spec.type === 'integer';
      // Decimal text only: `Number()` would also take "0x10", "0b11" or "1e3" for an integer.
      const text = integer ? INTEGER_TEXT : NUMBER_TEXT;
      const trimmed = typeof value === 'string' ? value.trim() : '';
      const number = typeof value === 'number' ? value : text.test(trimmed) ? Number(trimmed) : Number.NaN;
      if (!Number.isFinite(number) || (integer && !Number.isSafeInteger(number))) {
        throw fail(integer ? 'an integer' : 'a number');
      }
      if (spec.min !== undefined && number < spec.min) throw fail(`>= ${spec.min}`);
      if (spec.max !== undefined && number > spec.max) throw fail(`<= ${spec.max}`);
      return number;
    }
    case 'boolean': {
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      throw fail('a boolean (true, false, 1 or 0)');
    }
    case 'date': {
      // A Date object (from code, not from a query string or JSON) is taken as its instant.
      const text = value instanceof Date && !Number.isNaN(value.getTime()) ? value.toISOString() : value;
      if (typeof text !== 'string') throw fail(DATE_EXPECTED);
      const result = normalizeDate(text, spec.timeZone);
      if ('value' in result) return result.value;
      const problem = result.problem;
      switch (problem.kind) {
        case 'malformed':
          throw fail(DATE_EXPECTED);
        case 'out-of-range':
          throw fail('a date between the years 0000 and 9999 in UTC');
        case 'skipped':
          throw fail(
            `a local time that exists in ${problem.timeZone} (the clocks skip this one for daylight saving time; add an offset such as +01:00)`,
          );
        case 'repeated':
          throw fail(
            `a local time that occurs once in ${problem.timeZone} (this one occurs twice, at ${problem.offsets[0]} and ${problem.offsets[1]}; add the offset you mean)`,
          );
      }
      throw fail(DATE_EXPECTED);
    }
    case 'enum': {
      const values = spec.values ?? [];
      if (typeof value !== 'string' || !values.includes(value)) throw fail(`one of ${values.join(', ')}`);
      return value;
    }
  }
}

/**
 * Checks requested columns against the dataset's declared columns and returns the column
 * specs to write. Without a request, every declared column; without declared columns, the
 * requested names as they are (or `undefined`: the first row decides).
 *
 * @throws {ValidationError} 422 `UNKNOWN_COLUMN`
 */
export function resolveColumns(dataset: Dataset, requested: unknown): readonly ColumnSpec[] | undefined {
  if (requested === undefined || requested === null || requested === '') return dataset.columns;
  const names = typeof requested === 'string' ? requested.split(',').map((name) => name.trim()) : requested;
  if (
    !Array.isArray(names) ||
    names.length === 0 ||
    names.some((name) => typeof name !== 'string' || name === '')
  ) {
    throw new ValidationError(
      `Expected columns to be a non-empty list of column names, got ${describeValue(requested)}`,
      { field: 'columns', code: 'UNKNOWN_COLUMN' },
    );
  }
  if (new Set(names).size !== names.length) {
    throw new ValidationError('Expected columns to name each column at most once', {
      field: 'columns',
      code: 'UNKNOWN_COLUMN',
    });
  }
  if (!dataset.columns) return (names as string[]).map((name) => ({ name }));
  const byName = new Map(dataset.columns.map((column) => [column.name, column]));
  return (names as string[]).map((name) => {
    const column = byName.get(name);
    if (!column) {
      throw new ValidationError(
        `Unknown column "${name}" for dataset "${dataset.name}"; expected some of ${[...byName.keys()].join(', ')}`,
        { field: 'columns', code: 'UNKNOWN_COLUMN' },
      );
    }
    return column;
  });
}

/** Looks a dataset up by name. @throws {NotFoundError} 404 `UNKNOWN_DATASET` */
export function findDataset(datasets: ReadonlyMap<string, Dataset>, name: unknown): Dataset {
  const dataset = typeof name === 'string' ? datasets.get(name) : undefined;
  if (!dataset) {
    throw new NotFoundError(
      typeof name === 'string'
        ? `Unknown dataset "${name.slice(0, 64)}"`
        : `Expected dataset to be a string, got ${describeValue(name)}`,
      { code: 'UNKNOWN_DATASET' },
    );
  }
  return dataset;
}

function invalid(field: string, message: string): ValidationError {
  return new ValidationError(message, { field, code: 'INVALID_PARAMS' });
}
