import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { demoConfig } from '../src/demo.js';
import { removeDir, startTestSidecar, type TestSidecar, tempDir } from './helpers.js';
import { findPostgresBin, type PostgresCluster, startPostgres } from './postgres-cluster.js';

/** The ids a stream of `dataset` returns for a query string (NDJSON, ids and timestamps only). */
async function streamedIds(sidecar: TestSidecar, dataset: string, query: string): Promise<number[]> {
  const response = await fetch(sidecar.url(`/export/stream/${dataset}?format=ndjson&${query}`));
  expect(response.status, await response.clone().text()).toBe(200);
  const text = (await response.text()).trim();
  return text === '' ? [] : text.split('\n').map((line) => (JSON.parse(line) as { id: number }).id);
}

/** The ids whose timestamp lies in [from, to), decided in JavaScript, not by any SQL comparison. */
function idsBetween(rows: { id: number; at: string | Date }[], from: string, to: string): number[] {
  const [start, end] = [Date.parse(from), Date.parse(to)];
  return rows
    .filter((row) => {
      const at = new Date(row.at).getTime();
      return at >= start && at < end;
    })
    .map((row) => row.id);
}

describe('date params reach the sources as instants (SQLite demo, over HTTP)', () => {
  let dir: string;
  let sidecar: TestSidecar;
  let rows: { id: number; at: string }[];

  beforeAll(async () => {
    dir = tempDir();
    const config = demoConfig();
    // 20,000 orders over two years: one every 3,153 s, so a 12-hour window holds about 14.
    config.demo = { database: './data/demo.sqlite', orders: 20_000, customers: 100 };
    sidecar = await startTestSidecar(config, { baseDir: dir });
    const db = new Database(join(dir, 'data/demo.sqlite'), { readonly: true });
    rows = db.prepare('SELECT id, created_at AS at FROM orders ORDER BY id').all() as typeof rows;
    db.close();
  });
  afterAll(async () => {
    await sidecar?.close();
    if (dir) removeDir(dir);
  });

  it('reads an offset-less time as UTC: from=2025-01-01 12:00 starts at 12:00Z, not at midnight', async () => {
    const ids = await streamedIds(
      sidecar,
      'orders',
      'columns=id,created_at&from=2025-01-01%2012:00&to=2025-01-02',
    );
    const expected = idsBetween(rows, '2025-01-01T12:00:00Z', '2025-01-02T00:00:00Z');
    expect(expected.length).toBeGreaterThan(5);
    expect(ids).toEqual(expected);
  });

  it('honours an offset: from=2025-01-01T00:00:00+02:00 starts at 2024-12-31T22:00Z', async () => {
    const ids = await streamedIds(
      sidecar,
      'orders',
      `columns=id,created_at&from=${encodeURIComponent('2025-01-01T00:00:00+02:00')}&to=${encodeURIComponent('2025-01-01T12:00:00+02:00')}`,
    );
    const expected = idsBetween(rows, '2024-12-31T22:00:00Z', '2025-01-01T10:00:00Z');
    expect(ids).toEqual(expected);
    // The two hours before midnight UTC are in it.
    expect(rows.find((row) => row.id === ids[0])!.at < '2025-01-01').toBe(true);
  });

  it('gets sub-second bounds right and keeps a calendar day a day', async () => {
    const exact = rows.find((row) => row.at.startsWith('2025-03-01'))!;
    // A bound half a second after a row's timestamp excludes that row; one at it includes it.
    const after = new Date(Date.parse(exact.at) + 500).toISOString();
    expect(
      await streamedIds(sidecar, 'orders', `columns=id&from=${after}&to=${exact.at.slice(0, 10)}T23:59:59Z`),
    ).not.toContain(exact.id);
    expect(await streamedIds(sidecar, 'orders', `columns=id&from=${exact.at}&to=${after}`)).toEqual([
      exact.id,
    ]);
    expect(await streamedIds(sidecar, 'orders', 'columns=id&from=2025-03-01&to=2025-03-02')).toEqual(
      idsBetween(rows, '2025-03-01T00:00:00Z', '2025-03-02T00:00:00Z'),
    );
  });

  it('answers a malformed date with a 422 that names the param', async () => {
    const response = await fetch(sidecar.url('/export/stream/orders?format=csv&from=2025-01-01T25:00'));
    expect(response.status).toBe(422);
    expect(await response.json()).toMatchObject({ code: 'INVALID_PARAMS', field: 'params.from' });
  });
});

const bin = findPostgresBin();

describe.skipIf(!bin)('date params reach the sources as instants (PostgreSQL, over HTTP)', () => {
  let cluster: PostgresCluster;
  let dir: string;
  let sidecar: TestSidecar;
  let admin: pg.Client;
  let rows: { id: number; at: Date }[];

  beforeAll(async () => {
    cluster = await startPostgres(bin!);
    admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    // The server's own zone is not UTC, so that a day that is not read as UTC shows.
    await admin.query(
      `ALTER DATABASE ${(await admin.query('SELECT current_database() AS d')).rows[0].d} SET TimeZone = 'Asia/Tokyo'`,
    );
    await admin.query('CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL)');
    await admin.query(
      `INSERT INTO events SELECT g, timestamptz '2024-12-31 20:00:00+00' + g * interval '17 minutes'
       FROM generate_series(1, 200) g`,
    );
    rows = (await admin.query('SELECT id, at FROM events ORDER BY id')).rows;
    dir = tempDir();
    const config: SidecarConfig = {
      datasets: {
        events: {
          params: { from: { type: 'date' }, to: { type: 'date' } },
          source: {
            type: 'postgres',
            query: `SELECT id, at FROM events
                    WHERE (:from::timestamptz IS NULL OR at >= :from::timestamptz)
                      AND (:to::timestamptz IS NULL OR at < :to::timestamptz)
                    ORDER BY id`,
          },
        },
      },
    };
    sidecar = await startTestSidecar(config, { baseDir: dir, env: { DATABASE_URL: cluster.url } });
  });
  afterAll(async () => {
    await sidecar?.close();
    await admin?.end();
    cluster?.stop();
    if (dir) removeDir(dir);
  });

  it('compares offset-less times, offsets and calendar days as UTC instants', async () => {
    expect(await streamedIds(sidecar, 'events', 'from=2025-01-01%2012:00&to=2025-01-02')).toEqual(
      idsBetween(rows, '2025-01-01T12:00:00Z', '2025-01-02T00:00:00Z'),
    );
    expect(
      await streamedIds(
        sidecar,
        'events',
        `from=${encodeURIComponent('2025-01-01T00:00:00+02:00')}&to=2025-01-01`,
      ),
    ).toEqual(idsBetween(rows, '2024-12-31T22:00:00Z', '2025-01-01T00:00:00Z'));
    expect(await streamedIds(sidecar, 'events', 'from=2025-01-02')).toEqual(
      idsBetween(rows, '2025-01-02T00:00:00Z', '2100-01-01T00:00:00Z'),
    );
  });
});
