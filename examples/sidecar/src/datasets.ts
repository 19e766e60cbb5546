import { realpathSync, statSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import type { DatasetDefinition, Params, SourceContext } from '@spark-export/core';
import { defineDataset, describeValue } from '@spark-export/core';
import Database from 'better-sqlite3';
import { ConfigError, type DatasetConfig, type LoadedConfig } from './config.js';
import { seedDemoDatabase } from './demo.js';
import { type FileSourceOptions, isInside, openFileSource, pathPlaceholders } from './sources/file.js';
import { type HttpJsonSourceOptions, openHttpJsonSource } from './sources/http-json.js';
import { compilePostgresQuery, openPostgresSource, PostgresPools } from './sources/postgres.js';
import { inspectSqliteQuery, openSqliteSource, problemField, sqliteBindings } from './sources/sqlite.js';

/**
 * Rows per batch when a source does not say. Small batches keep each event-loop turn short
 * and few rows alive between turns (fewer, cheaper scavenges): with five SQLite exports,
 * 100 gave a /export/status p99 of ~10 ms where 500 gave 50-100 ms (bench/status-latency.mjs).
 */
export const DEFAULT_BATCH_SIZE = 100;

export interface BuildDatasetsOptions {
  /** Default connection string of `postgres` sources (`DATABASE_URL`). */
  databaseUrl?: string | undefined;
  /** For `${NAME}` in http-json headers. */
  env: NodeJS.ProcessEnv;
  /** Connections per PostgreSQL pool; the export concurrency is a good value. */
  poolSize: number;
  /**
   * Create and seed the demo database when it is missing. Commands that only describe the
   * datasets (`spark-export datasets`) pass `false`: they need no data, and the queries over a
   * database that does not exist yet are then not checked.
   * @default true
   */
  seedDemo?: boolean;
  /** Called when the demo database was created. */
  onSeeded?: (file: string, durationMs: number) => void;
}

export interface BuiltDatasets {
  datasets: Record<string, DatasetDefinition>;
  /** Real paths of the directories `file` sources may read. */
  fileRoots: string[];
  /** Closes database pools. */
  close(): Promise<void>;
}

/**
 * Turns the configuration into core dataset definitions, checking everything that can be
 * checked before the first request: SQLite queries are prepared against their database, SQL
 * placeholders must be declared params, files must lie inside `fileRoots`, header variables must
 * be set. Seeds the demo database first when the config asks for it.
 *
 * @throws {ConfigError} listing every problem, each naming its field
 */
export function buildDatasets(loaded: LoadedConfig, options: BuildDatasetsOptions): BuiltDatasets {
  const { config, baseDir } = loaded;
  const where = loaded.file ?? 'the built-in demo configuration';
  const problems: string[] = [];
  const pools = new PostgresPools({ max: options.poolSize });

  // A demo database that is not there (not seeded on purpose): its queries cannot be checked.
  let unseededDemo: string | undefined;
  if (config.demo) {
    const file = resolve(baseDir, config.demo.database);
    const started = performance.now();
    if (options.seedDemo === false) {
      if (!isFile(file)) unseededDemo = file;
    } else {
      try {
        if (seedDemoDatabase(file, config.demo)) options.onSeeded?.(file, performance.now() - started);
      } catch (error) {
        problems.push(`Cannot create the demo database demo.database (${file}): ${(error as Error).message}`);
      }
    }
  }

  const fileRoots: string[] = [];
  for (const [index, root] of (config.fileRoots ?? [baseDir]).entries()) {
    const absolute = resolve(baseDir, root);
    try {
      if (!statSync(absolute).isDirectory()) throw new Error('not a directory');
      fileRoots.push(realpathSync(absolute));
    } catch {
      problems.push(`Expected fileRoots[${index}] to be an existing directory, got ${describeValue(root)}`);
    }
  }

  const datasets: Record<string, DatasetDefinition> = {};
  for (const [name, dataset] of Object.entries(config.datasets)) {
    const field = `datasets.${name}.source`;
    const paramNames = Object.keys(dataset.params ?? {});
    const source = dataset.source;
    const batchSize = source.batchSize ?? DEFAULT_BATCH_SIZE;
    const problemCount = problems.length;
    let definition: DatasetDefinition | undefined;

    switch (source.type) {
      case 'sqlite': {
        const database = resolve(baseDir, source.database);
        const checkable = database !== unseededDemo;
        let columns: string[] | undefined;
        try {
          if (checkable) columns = inspectSqliteQuery(database, source.query, paramNames);
        } catch (error) {
          problems.push(`${field}.${problemField(error)} ${(error as Error).message}`);
        }
        if (source.countQuery !== undefined && checkable) {
          try {
            if (inspectSqliteQuery(database, source.countQuery, paramNames).length !== 1) {
              throw new Error('must return exactly one column (the count)');
            }
          } catch (error) {
            problems.push(`${field}.countQuery ${(error as Error).message}`);
          }
        }
        const sqlite = { dataset: name, database, query: source.query, params: paramNames, batchSize };
        const countQuery = source.countQuery;
        definition = {
          ...common(dataset),
          columns: dataset.columns ?? columns?.map((column) => ({ name: column })),
          source: (params: Params, context: SourceContext) => openSqliteSource(sqlite, params, context),
          ...(countQuery === undefined
            ? {}
            : {
                count: (params: Params) => {
                  const db = new Database(database, { readonly: true, fileMustExist: true });
                  try {
                    return Number(db.prepare(countQuery).pluck().get(sqliteBindings(paramNames, params)));
                  } finally {
                    db.close();
                  }
                },
              }),
        };
        break;
      }
      case 'postgres': {
        const connectionString = source.connectionString ?? options.databaseUrl;
        if (connectionString === undefined) {
          problems.push(
            `Missing ${field}.connectionString; expected a postgres:// connection string, or DATABASE_URL to be set`,
          );
        }
        let compiled: ReturnType<typeof compilePostgresQuery> | undefined;
        let compiledCount: ReturnType<typeof compilePostgresQuery> | undefined;
        try {
          compiled = compilePostgresQuery(source.query, paramNames);
        } catch (error) {
          problems.push(`${field}.query ${(error as Error).message}`);
        }
        try {
          if (source.countQuery !== undefined)
            compiledCount = compilePostgresQuery(source.countQuery, paramNames);
        } catch (error) {
          problems.push(`${field}.countQuery ${(error as Error).message}`);
        }
        if (!compiled || connectionString === undefined) break;
        const postgres = { dataset: name, query: source.query, compiled, batchSize };
        definition = {
          ...common(dataset),
          source: (params: Params, context: SourceContext) =>
            openPostgresSource(pools.get(connectionString), postgres, params, context),
          ...(compiledCount === undefined
            ? {}
            : {
                count: async (params: Params) => {
                  const count = compiledCount;
                  const result = await pools.get(connectionString).query({
                    text: count.text,
                    values: count.names.map((n) => params[n] ?? null),
                    rowMode: 'array',
                  });
                  const value = Number(result.rows[0]?.[0]);
                  return Number.isFinite(value) ? value : undefined;
                },
              }),
        };
        break;
      }
      case 'http-json': {
        const headers: Record<string, string> = {};
        for (const [header, value] of Object.entries(source.headers ?? {})) {
          headers[header] = value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, variable: string) => {
            const replacement = options.env[variable];
            if (replacement === undefined || replacement === '') {
              problems.push(
                `${field}.headers.${header} uses \${${variable}}, which is not set in the environment`,
              );
              return '';
            }
            return replacement;
          });
        }
        const method = source.method ?? 'GET';
        const format = source.format ?? 'json';
        if (source.path !== undefined && format !== 'json') {
          problems.push(`${field}.path only applies to format "json"; remove it or set format to "json"`);
        }
        const paramsIn = source.paramsIn ?? (method === 'GET' ? 'query' : 'body');
        if (paramsIn === 'body' && method === 'GET') {
          problems.push(`${field}.paramsIn "body" needs method "POST"`);
        }
        const http: HttpJsonSourceOptions = {
          dataset: name,
          url: source.url,
          method,
          headers,
          timeoutMs: source.timeoutMs ?? 30_000,
          format,
          path: source.path,
          paramsIn,
          batchSize,
        };
        definition = {
          ...common(dataset),
          source: (params: Params, context: SourceContext) => openHttpJsonSource(http, params, context),
        };
        break;
      }
      case 'file': {
        const extension = extname(source.path.replace(/\{[^}]*\}/g, 'x')).toLowerCase();
        const format =
          source.format ??
          (extension === '.json'
            ? 'json'
            : extension === '.ndjson' || extension === '.jsonl'
              ? 'ndjson'
              : undefined);
        if (format === undefined) {
          problems.push(
            `Missing ${field}.format; expected "json" or "ndjson" (the file name does not end in .json, .ndjson or .jsonl)`,
          );
        }
        for (const placeholder of pathPlaceholders(source.path)) {
          const spec = dataset.params?.[placeholder];
          if (!spec) {
            problems.push(
              `${field}.path uses {${placeholder}}, which datasets.${name}.params does not declare`,
            );
          } else if (!spec.required && spec.default === undefined) {
            problems.push(
              `${field}.path uses {${placeholder}}: make datasets.${name}.params.${placeholder} required or give it a default`,
            );
          }
        }
        if (pathPlaceholders(source.path).length === 0 && fileRoots.length > 0) {
          const absolute = resolve(baseDir, source.path);
          let real = absolute;
          try {
            real = realpathSync(absolute);
          } catch {
            // A file that appears later is fine; it is checked again on every export.
          }
          if (!fileRoots.some((root) => isInside(root, real))) {
            problems.push(
              `Expected ${field}.path to lie inside fileRoots (${fileRoots.join(', ')}), got ${describeValue(source.path)}`,
            );
          }
        }
        if (source.jsonPath !== undefined && format !== 'json') {
          problems.push(`${field}.jsonPath only applies to format "json"`);
        }
        const file: FileSourceOptions = {
          dataset: name,
          path: source.path,
          baseDir,
          roots: fileRoots,
          format: format ?? 'ndjson',
          jsonPath: source.jsonPath,
          batchSize,
        };
        definition = {
          ...common(dataset),
          source: (params: Params, context: SourceContext) => openFileSource(file, params, context),
        };
        break;
      }
    }

    if (definition && problems.length === problemCount) {
      try {
        defineDataset(name, definition);
        datasets[name] = definition;
      } catch (error) {
        problems.push(`datasets.${name}: ${(error as Error).message}`);
      }
    }
  }

  if (problems.length > 0) {
    void pools.close();
    throw new ConfigError(`Invalid configuration in ${where}`, problems);
  }
  return { datasets, fileRoots, close: () => pools.close() };
}

/**
 * A config file that failed the schema still gets its datasets checked: the problems of the
 * datasets that passed it (a query using an undeclared param, a path outside `fileRoots`) are
 * added to the schema's, so that one start lists every problem, not one batch per attempt.
 * Nothing is seeded for this.
 */
export async function withDatasetProblems(
  error: unknown,
  options: Omit<BuildDatasetsOptions, 'seedDemo' | 'onSeeded'>,
): Promise<unknown> {
  if (!(error instanceof ConfigError) || error.partial === undefined) return error;
  try {
    const built = buildDatasets(error.partial, { ...options, seedDemo: false });
    await built.close();
    return error;
  } catch (more) {
    if (!(more instanceof ConfigError)) return error;
    return new ConfigError(error.title, [...error.problems, ...more.problems]);
  }
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function common(dataset: DatasetConfig): Omit<DatasetDefinition, 'source'> {
  return {
    ...(dataset.description === undefined ? {} : { description: dataset.description }),
    ...(dataset.columns === undefined ? {} : { columns: dataset.columns }),
    ...(dataset.params === undefined ? {} : { params: dataset.params }),
    ...(dataset.formats === undefined ? {} : { formats: dataset.formats }),
  };
}
