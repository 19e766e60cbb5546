import type { Params, Row, RowSource, SourceContext } from '@spark-export/core';
import { fromBatches } from '@spark-export/core';
import Database from 'better-sqlite3';
import { sourceFailure } from './errors.js';

export interface SqliteSourceOptions {
  dataset: string;
  /** Absolute path of the database file. */
  database: string;
  /** A read-only query with `:name` parameters. */
  query: string;
  /** Declared param names: every one is bound (absent ones as NULL). */
  params: readonly string[];
  /** Rows read per event-loop turn. */
  batchSize: number;
}

type SqliteValue = string | number | bigint | null;

/** SQLite has no booleans: they bind as 1 and 0; absent optional params bind as NULL. */
export function sqliteBindings(names: readonly string[], params: Params): Record<string, SqliteValue> {
  const bound: Record<string, SqliteValue> = {};
  for (const name of names) {
    const value = params[name];
    bound[name] = value === undefined ? null : typeof value === 'boolean' ? (value ? 1 : 0) : value;
  }
  return bound;
}

class QueryProblem extends Error {
  constructor(
    readonly field: 'database' | 'query',
    message: string,
  ) {
    super(message);
  }
}

/** Which config field an {@link inspectSqliteQuery} error is about. */
export function problemField(error: unknown): 'database' | 'query' {
  return error instanceof QueryProblem ? error.field : 'query';
}

/**
 * Checks a dataset's query against the database at start-up and returns its column names.
 * Throws an Error whose message says what is wrong (the caller prefixes the config field).
 */
export function inspectSqliteQuery(database: string, query: string, params: readonly string[]): string[] {
  let db: Database.Database;
  try {
    db = new Database(database, { readonly: true, fileMustExist: true });
  } catch (error) {
    throw new QueryProblem(
      'database',
      `cannot be opened as a SQLite database (${database}): ${(error as Error).message}`,
    );
  }
  try {
    let statement: Database.Statement;
    try {
      statement = db.prepare(query);
    } catch (error) {
      throw new QueryProblem('query', `is not valid SQL for this database: ${(error as Error).message}`);
    }
    if (!statement.reader) throw new QueryProblem('query', 'must return rows (a SELECT or WITH ... SELECT)');
    if (!statement.readonly) throw new QueryProblem('query', 'must be read-only');
    try {
      // Binding every declared param (as NULL) fails on a placeholder that is not declared.
      statement.bind(sqliteBindings(params, {}));
    } catch (error) {
      const missing = /named parameter "(.+?)"/.exec((error as Error).message)?.[1];
      throw new QueryProblem(
        'query',
        missing
          ? `uses the parameter :${missing}, which the dataset's params do not declare`
          : `must use only named parameters (:name) that the dataset's params declare (${(error as Error).message})`,
      );
    }
    return statement.columns().map((column) => column.name);
  } finally {
    db.close();
  }
}

/**
 * Streams a query's rows through a read-only connection of its own, one batch per event-loop
 * turn (better-sqlite3 is synchronous: without the pauses five big exports would starve every
 * other request). Aborting or finishing closes the iterator and the connection.
 */
export function openSqliteSource(
  options: SqliteSourceOptions,
  params: Params,
  context: SourceContext,
): RowSource {
  const { dataset } = options;
  let db: Database.Database;
  try {
    db = new Database(options.database, { readonly: true, fileMustExist: true });
  } catch (error) {
    throw sourceFailure(`The SQLite database of dataset "${dataset}" could not be opened`, error);
  }
  let rows: IterableIterator<unknown>;
  try {
    rows = db.prepare(options.query).iterate(sqliteBindings(options.params, params));
  } catch (error) {
    db.close();
    throw sourceFailure(`The SQLite query of dataset "${dataset}" failed${codeOf(error)}`, error);
  }
  return fromBatches({
    highWaterMark: options.batchSize,
    signal: context.signal,
    readBatch() {
      const batch: Row[] = [];
      while (batch.length < options.batchSize) {
        const next = rows.next();
        if (next.done) return batch.length > 0 ? batch : null;
        batch.push(next.value as Row);
      }
      return batch;
    },
    close() {
      rows.return?.();
      db.close();
    },
    mapError: (error) =>
      sourceFailure(`The SQLite query of dataset "${dataset}" failed${codeOf(error)}`, error),
  });
}

/** `SQLITE_BUSY` and friends are safe and useful to show; SQLite's free text may name internals. */
function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^SQLITE_[A-Z_]+$/.test(code) ? ` (${code})` : '';
}
