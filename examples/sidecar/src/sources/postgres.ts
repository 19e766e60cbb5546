import type { Params, Row, RowSource, SourceContext } from '@spark-export/core';
import { fromBatches } from '@spark-export/core';
import pg from 'pg';
import Cursor from 'pg-cursor';
import { sourceFailure } from './errors.js';
import { type CompiledQuery, compileNamedParams } from './named-params.js';

export interface PostgresSourceOptions {
  dataset: string;
  /** The query with `:name` parameters. */
  query: string;
  /** Rows fetched per round trip (`FETCH n` on the server-side cursor). */
  batchSize: number;
}

/**
 * One connection pool per connection string, shared by the datasets that use it. Each export
 * borrows a client for its cursor and gives it back when it ends or is aborted.
 */
export class PostgresPools {
  readonly #pools = new Map<string, pg.Pool>();
  readonly #max: number;

  constructor(options: { max: number }) {
    this.#max = options.max;
  }

  get(connectionString: string): pg.Pool {
    let pool = this.#pools.get(connectionString);
    if (!pool) {
      pool = new pg.Pool({
        connectionString,
        max: this.#max,
        idleTimeoutMillis: 30_000,
        // Sessions run in UTC, so that a calendar-day param (`2025-01-01`) cast to timestamptz
        // means midnight UTC, as it does in SQLite; instants arrive with their `Z` anyway. An
        // `options` parameter in the connection string takes precedence (pg lets it override).
        options: '-c TimeZone=UTC',
      });
      // An idle client that loses its connection must not crash the process.
      pool.on('error', () => {});
      this.#pools.set(connectionString, pool);
    }
    return pool;
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.allSettled(pools.map((pool) => pool.end()));
  }
}

/** Compiles `:name` placeholders and checks that each one is declared. */
export function compilePostgresQuery(query: string, params: readonly string[]): CompiledQuery {
  const compiled = compileNamedParams(query);
  for (const name of compiled.names) {
    if (!params.includes(name)) {
      throw new Error(`uses the parameter :${name}, which the dataset's params do not declare`);
    }
  }
  if (compiled.positional) throw new Error('must use named parameters (:name), not $1-style positional ones');
  return compiled;
}

/**
 * Streams a query's rows through a server-side cursor (`pg-cursor`), `batchSize` rows per
 * round trip, with every value bound as a parameter. Aborting closes the cursor and returns
 * the client to the pool; a failed client is discarded instead.
 */
export async function openPostgresSource(
  pool: pg.Pool,
  options: PostgresSourceOptions & { compiled: CompiledQuery },
  params: Params,
  context: SourceContext,
): Promise<RowSource> {
  const { dataset, compiled } = options;
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw sourceFailure(`The PostgreSQL database of dataset "${dataset}" could not be reached`, error);
  }
  if (context.signal.aborted) {
    client.release();
    throw context.signal.reason;
  }
  const values = compiled.names.map((name) => params[name] ?? null);
  const cursor = client.query(new Cursor<Row>(compiled.text, values));
  let failed: Error | undefined;
  return fromBatches({
    highWaterMark: options.batchSize,
    signal: context.signal,
    async readBatch() {
      try {
        const rows = await cursor.read(options.batchSize);
        return rows.length > 0 ? rows : null;
      } catch (error) {
        failed = error as Error;
        throw error;
      }
    },
    async close() {
      if (!failed) {
        await cursor.close().catch((error: Error) => {
          failed = error;
        });
      }
      // A client whose query failed may be in any state: destroy it rather than reuse it.
      client.release(failed);
    },
    mapError: (error) =>
      sourceFailure(`The PostgreSQL query of dataset "${dataset}" failed${sqlStateOf(error)}`, error),
  });
}

/** The SQLSTATE (e.g. `57014` for a cancelled statement) is safe to show; the text may not be. */
function sqlStateOf(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? ` (SQLSTATE ${code})` : '';
}
