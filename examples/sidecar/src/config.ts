import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ColumnSpec, FormatName, ParamSpec } from '@spark-export/core';
import { describeValue } from '@spark-export/core';
import { Ajv, type ErrorObject } from 'ajv';
import { configSchema, SOURCE_TYPES } from './config-schema.js';
import { demoConfig } from './demo.js';

export interface SqliteSourceConfig {
  type: 'sqlite';
  /** Path of the database file, relative to the config file. */
  database: string;
  /** A read-only query; `:name` placeholders bind the dataset's params. */
  query: string;
  /** Optional cheap count (same params) shown as `progress.totalRows`. */
  countQuery?: string;
  /** Rows read per event-loop turn. @default 500 */
  batchSize?: number;
}

export interface PostgresSourceConfig {
  type: 'postgres';
  /** @default the `DATABASE_URL` environment variable */
  connectionString?: string;
  /** `:name` placeholders bind the dataset's params (sent as `$n` parameters). */
  query: string;
  countQuery?: string;
  /** Rows fetched per cursor round trip. @default 500 */
  batchSize?: number;
}

export interface HttpJsonSourceConfig {
  type: 'http-json';
  url: string;
  /** @default 'GET' */
  method?: 'GET' | 'POST';
  /** Header values may use `${ENV_NAME}`, replaced from the environment at start-up. */
  headers?: Record<string, string>;
  /** Longest wait for the response headers and between body chunks. @default 30000 */
  timeoutMs?: number;
  /** @default 'json' */
  format?: 'json' | 'ndjson';
  /** Dot path of the array in a JSON body, e.g. `data.items`. */
  path?: string;
  /** @default 'query' for GET, 'body' for POST */
  paramsIn?: 'query' | 'body' | 'none';
  batchSize?: number;
}

export interface FileSourceConfig {
  type: 'file';
  /** Relative to the config file; may contain `{param}` placeholders. Must lie inside `fileRoots`. */
  path: string;
  /** @default from the extension: `.ndjson`/`.jsonl` or `.json` */
  format?: 'json' | 'ndjson';
  jsonPath?: string;
  batchSize?: number;
}

export type SourceConfig =
  | SqliteSourceConfig
  | PostgresSourceConfig
  | HttpJsonSourceConfig
  | FileSourceConfig;

export interface DatasetConfig {
  description?: string;
  columns?: ColumnSpec[];
  params?: Record<string, ParamSpec>;
  formats?: FormatName[];
  source: SourceConfig;
}

export interface DemoConfig {
  /** The SQLite file to create and seed when it does not exist. */
  database: string;
  /** @default 1000000 */
  orders?: number;
  /** @default 10000 */
  customers?: number;
}

/** The Redis the replicas share (docs/scaling.md). `EXPORT_REDIS_URL` overrides `url`. */
export interface RedisConfig {
  url?: string;
  /** Key prefix of everything the sidecar keeps in Redis. @default 'spark-export:' */
  prefix?: string;
}

/** The bucket of the job files. Each `EXPORT_S3_*` variable overrides its field. Credentials come only from the environment. */
export interface S3Config {
  bucket?: string;
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  /** @default 'exports/' */
  prefix?: string;
}

export interface SidecarConfig {
  datasets: Record<string, DatasetConfig>;
  redis?: RedisConfig;
  s3?: S3Config;
  /** Directories `file` sources may read from. @default the config file's directory */
  fileRoots?: string[];
  demo?: DemoConfig;
}

export interface LoadedConfig {
  config: SidecarConfig;
  /** The file it came from; `undefined` for the built-in demo configuration. */
  file: string | undefined;
  /** Relative paths in the config resolve against this directory. */
  baseDir: string;
}

/**
 * The sidecar's own directory (`examples/sidecar`; from `src/` and `dist/` alike). The built-in
 * demo keeps its database in `data/` here, whatever the working directory, so that a command
 * run elsewhere never drops an 80 MB file there, and `npm start` and the CLI share one copy.
 * In the Docker image `data/` here is a link to the writable `/app/data`.
 */
export const SIDECAR_HOME = fileURLToPath(new URL('..', import.meta.url));

/** The configuration file looked for in the working directory when `EXPORT_CONFIG` is not set. */
export const DEFAULT_CONFIG_FILE = 'spark-export.config.json';

/**
 * The configuration (or the environment) is invalid. `problems` holds one message per bad
 * field, each naming the field and saying what was expected and what was given.
 */
export class ConfigError extends Error {
  /** What was being read, e.g. `Invalid configuration in /etc/spark-export.config.json`. */
  readonly title: string;
  readonly problems: readonly string[];
  /**
   * For a file that failed the schema: the part that passed it (the datasets without a schema
   * problem), so that the checks of the datasets themselves (queries, paths...) can add their
   * problems to the same list (`withDatasetProblems`).
   */
  readonly partial: LoadedConfig | undefined;

  constructor(title: string, problems: readonly string[], options: { partial?: LoadedConfig } = {}) {
    super(
      problems.length === 1
        ? `${title}: ${problems[0]}`
        : `${title}:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.name = 'ConfigError';
    this.title = title;
    this.problems = problems;
    this.partial = options.partial;
  }
}

const ajv = new Ajv({
  allErrors: true,
  verbose: true,
  discriminator: true,
  strict: true,
  strictTypes: false,
});
const validate = ajv.compile(configSchema);

/**
 * Validates a parsed configuration against the schema.
 *
 * @throws {ConfigError} listing every bad field
 */
export function validateConfig(raw: unknown, where: string): SidecarConfig {
  const checked = checkSchema(raw);
  if (checked.problems.length === 0) return raw as SidecarConfig;
  throw new ConfigError(`Invalid configuration in ${where}`, checked.problems);
}

function checkSchema(raw: unknown): { problems: string[]; partial: SidecarConfig | undefined } {
  if (validate(raw)) return { problems: [], partial: raw as unknown as SidecarConfig };
  const errors = validate.errors ?? [];
  const problems = [...new Set(errors.map((error) => formatError(error, raw)).filter(isString))];
  return {
    problems: problems.length ? problems : ['the configuration is invalid'],
    partial: schemaValidPart(raw, errors),
  };
}

/**
 * The datasets without a schema problem, with the top-level fields they rely on. A bad
 * `fileRoots` leaves the `file` datasets out, a bad `demo` the datasets that read its database:
 * checking them against a default would report problems that are not there.
 */
function schemaValidPart(raw: unknown, errors: readonly ErrorObject[]): SidecarConfig | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const root = raw as Record<string, unknown>;
  const datasets = root.datasets;
  if (typeof datasets !== 'object' || datasets === null || Array.isArray(datasets)) return undefined;
  const bad = new Set<string>();
  let badRoots = false;
  let badDemo = false;
  for (const error of errors) {
    const [top, name] = error.instancePath.split('/').slice(1).map(unescapePointer);
    if (top === 'datasets' && name !== undefined) bad.add(name);
    else if (top === 'fileRoots') badRoots = true;
    else if (top === 'demo') badDemo = true;
    // A bad dataset name is reported on the datasets object itself.
    else if (top === 'datasets' && error.propertyName !== undefined) bad.add(error.propertyName);
  }
  const demo = root.demo as DemoConfig | undefined;
  const kept: Record<string, DatasetConfig> = {};
  for (const [name, dataset] of Object.entries(datasets as Record<string, DatasetConfig>)) {
    if (bad.has(name)) continue;
    if (badRoots && dataset.source.type === 'file') continue;
    if (badDemo && dataset.source.type === 'sqlite') continue;
    kept[name] = dataset;
  }
  if (Object.keys(kept).length === 0) return undefined;
  return {
    datasets: kept,
    ...(badRoots || root.fileRoots === undefined ? {} : { fileRoots: root.fileRoots as string[] }),
    ...(badDemo || demo === undefined ? {} : { demo }),
  };
}

function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}

/**
 * Finds and reads the configuration: `path` (from `EXPORT_CONFIG` or `--config`) when given,
 * else `./spark-export.config.json` when it exists, else the built-in demo configuration.
 */
export async function loadConfig(options: { path?: string | undefined; cwd: string }): Promise<LoadedConfig> {
  const explicit = options.path !== undefined;
  const file = resolve(options.cwd, options.path ?? DEFAULT_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (!explicit && code === 'ENOENT')
      return { config: demoConfig(), file: undefined, baseDir: SIDECAR_HOME };
    throw new ConfigError('Cannot read the configuration', [
      code === 'ENOENT'
        ? `EXPORT_CONFIG names ${file}, which does not exist`
        : `Cannot read ${file}: ${(error as Error).message}`,
    ]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`Invalid configuration in ${file}`, [
      `Expected valid JSON: ${(error as Error).message}`,
    ]);
  }
  const baseDir = dirname(file);
  const checked = checkSchema(raw);
  if (checked.problems.length > 0) {
    throw new ConfigError(`Invalid configuration in ${file}`, checked.problems, {
      ...(checked.partial ? { partial: { config: checked.partial, file, baseDir } } : {}),
    });
  }
  return { config: raw as SidecarConfig, file, baseDir };
}

function isString(value: unknown): value is string {
  return typeof value === 'string';
}

type Schema = Record<string, unknown>;

function formatError(error: ErrorObject, root: unknown): string | undefined {
  const path = fieldPath(error.instancePath, root);
  const schema = (error.parentSchema ?? {}) as Schema;
  switch (error.keyword) {
    case 'required': {
      const missing = (error.params as { missingProperty: string }).missingProperty;
      const properties = (schema.properties ?? {}) as Record<string, Schema>;
      const expected = properties[missing]
        ? describeSchema(properties[missing])
        : (schema.description as string);
      return `Missing ${join(path, missing)}; expected ${expected}`;
    }
    case 'additionalProperties': {
      const extra = (error.params as { additionalProperty: string }).additionalProperty;
      const known = Object.keys((schema.properties ?? {}) as Schema).filter((key) => key !== '$schema');
      return `Unknown field ${join(path, extra)}; expected only ${known.join(', ')}`;
    }
    case 'discriminator': {
      const tag = (error.params as { tag: string }).tag;
      const value = (error.data as Record<string, unknown> | undefined)?.[tag];
      return `Expected ${join(path, tag)} to be one of ${SOURCE_TYPES.map((t) => JSON.stringify(t)).join(', ')}, got ${describeValue(value)}`;
    }
    case 'propertyNames':
    case 'if':
      // Reported by the nested error that says which name or field is wrong.
      return undefined;
    case 'pattern':
      if (error.propertyName !== undefined) {
        return `Expected ${describeSchema(schema)} in ${path || 'the configuration'}, got ${JSON.stringify(error.propertyName)}`;
      }
      break;
    case 'minProperties':
      return `Expected ${path || 'the configuration'} to be ${describeSchema(schema)}, got none`;
  }
  return `Expected ${path || 'the configuration'} to be ${describeSchema(schema)}, got ${describeValue(error.data)}`;
}

/** `/datasets/orders/columns/0/name` -> `datasets.orders.columns[0].name`. */
function fieldPath(pointer: string, root: unknown): string {
  if (pointer === '') return '';
  let path = '';
  let node: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    path = Array.isArray(node) ? `${path}[${segment}]` : join(path, segment);
    node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[segment] : undefined;
  }
  return path;
}

function join(path: string, key: string): string {
  const part = /^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key) ? key : JSON.stringify(key);
  if (part.startsWith('"')) return `${path}[${part}]`;
  return path ? `${path}.${part}` : part;
}

function describeSchema(schema: Schema): string {
  if (typeof schema.description === 'string') return schema.description;
  if ('const' in schema) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum))
    return `one of ${schema.enum.map((value) => JSON.stringify(value)).join(', ')}`;
  switch (schema.type) {
    case 'string':
      return 'a string';
    case 'integer':
      return 'an integer';
    case 'number':
      return 'a number';
    case 'boolean':
      return 'true or false';
    case 'array':
      return 'an array';
    case 'object':
      return 'an object';
  }
  return 'a valid value';
}
