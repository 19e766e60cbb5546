import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { removeDir, startTestSidecar, type TestSidecar, tempDir, waitForJob } from './helpers.js';
import { findPostgresBin, type PostgresCluster, startPostgres } from './postgres-cluster.js';

const bin = findPostgresBin();
if (!bin && process.env.CI) {
  throw new Error(
    'PostgreSQL is not installed (initdb not on PATH nor in /usr/lib/postgresql/*/bin): apt-get install -y postgresql',
  );
}

const ROWS = 25_000;

const config = (): SidecarConfig => ({
  datasets: {
    events: {
      columns: [{ name: 'id' }, { name: 'kind' }, { name: 'amount' }, { name: 'at' }],
      params: {
        from: { type: 'date' },
        kind: { type: 'string' },
        min_amount: { type: 'number' },
      },
      source: {
        type: 'postgres',
        query: `SELECT id, kind, amount, at FROM events
                WHERE (:from::timestamptz IS NULL OR at >= :from::timestamptz)
                  AND (:kind::text IS NULL OR kind = :kind)  -- a ':comment' is not a param
                  AND (:min_amount::numeric IS NULL OR amount >= :min_amount)
                ORDER BY id`,
        countQuery: 'SELECT count(*) FROM events WHERE (:kind::text IS NULL OR kind = :kind)',
        batchSize: 1000,
      },
    },
    slow: {
      source: {
        type: 'postgres',
        query: 'SELECT g AS n, pg_sleep(0.01) AS s FROM generate_series(1, 100000) g',
        batchSize: 1,
      },
    },
    broken: {
      source: { type: 'postgres', query: 'SELECT 1 / (g - 500) AS x FROM generate_series(1, 1000) g' },
    },
  },
});

describe.skipIf(!bin)('postgres source (real PostgreSQL server)', () => {
  let cluster: PostgresCluster;
  let dir: string;
  let sidecar: TestSidecar;
  let admin: pg.Client;

  beforeAll(async () => {
    cluster = await startPostgres(bin!);
    admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    await admin.query(
      `CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL, amount numeric(10,2) NOT NULL, at timestamptz NOT NULL)`,
    );
    await admin.query(
      `INSERT INTO events SELECT g, CASE g % 3 WHEN 0 THEN 'click' WHEN 1 THEN 'view' ELSE 'buy' END,
              (g % 1000) / 10.0, timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute'
       FROM generate_series(1, ${ROWS}) g`,
    );
    dir = tempDir();
    sidecar = await startTestSidecar(config(), { baseDir: dir, env: { DATABASE_URL: cluster.url } });
  });
  afterAll(async () => {
    await sidecar?.close();
    await admin?.end();
    cluster?.stop();
    if (dir) removeDir(dir);
  });

  const startJob = async (dataset: string, params: Record<string, unknown> = {}, format = 'ndjson') => {
    const response = await fetch(sidecar.url('/export/jobs'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset, format, params }),
    });
    expect(response.status).toBe(202);
    return response.headers.get('location')!;
  };

  it('streams every row through a cursor', async () => {
    const location = await startJob('events');
    const job = await waitForJob(sidecar.url(location));
    expect(job).toMatchObject({ status: 'succeeded', progress: { rows: ROWS, totalRows: ROWS } });
    const lines = (await (await fetch(sidecar.url(`${location}/download`))).text()).trim().split('\n');
    expect(lines).toHaveLength(ROWS);
    expect(JSON.parse(lines[0]!)).toEqual({
      id: 1,
      kind: 'view',
      amount: '0.10',
      at: '2025-01-01T00:01:00.000Z',
    });
    expect(JSON.parse(lines.at(-1)!).id).toBe(ROWS);
  });

  it('binds params as values, never as SQL', async () => {
    const location = await startJob('events', { from: '2025-01-10', kind: 'click', min_amount: '50' });
    const job = await waitForJob(sidecar.url(location));
    const rows = (await (await fetch(sidecar.url(`${location}/download`))).text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { kind: string; amount: string; at: string });
    const expected = await admin.query(
      `SELECT count(*)::int AS n FROM events WHERE at >= '2025-01-10' AND kind = 'click' AND amount >= 50`,
    );
    expect(job.progress.rows).toBe(expected.rows[0].n);
    expect(
      rows.every((row) => row.kind === 'click' && Number(row.amount) >= 50 && row.at >= '2025-01-10'),
    ).toBe(true);

    const injection = await startJob('events', { kind: "click' OR '1'='1" });
    expect(await waitForJob(sidecar.url(injection))).toMatchObject({
      status: 'succeeded',
      progress: { rows: 0 },
    });
    expect((await admin.query('SELECT count(*)::int AS n FROM events')).rows[0].n).toBe(ROWS);
  });

  it('closes the cursor and gives the connection back when a job is cancelled', async () => {
    const busy = `SELECT count(*)::int AS n FROM pg_stat_activity
                  WHERE query LIKE '%pg_sleep(0.01)%' AND state <> 'idle' AND pid <> pg_backend_pid()`;
    const location = await startJob('slow');
    // Wait until the cursor is open on the server (its FETCHes take 10 ms a row).
    while ((await admin.query(busy)).rows[0].n === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await fetch(sidecar.url(location), { method: 'DELETE' })).status).toBe(204);
    // The cursor is closed right after the cancel (the job settles first; the source closes
    // on its own turn): no backend keeps running the query or sits in its transaction.
    await vi.waitFor(async () => expect((await admin.query(busy)).rows[0].n).toBe(0), {
      timeout: 10_000,
      interval: 20,
    });
    // And the pool still works.
    const again = await startJob('events', { kind: 'buy' });
    expect((await waitForJob(sidecar.url(again))).status).toBe('succeeded');
  });

  it('fails the job with the SQLSTATE when the query fails, and writes no file', async () => {
    const location = await startJob('broken');
    const job = await waitForJob(sidecar.url(location));
    expect(job.status).toBe('failed');
    expect(job.error).toEqual({
      code: 'SOURCE_FAILED',
      message: 'The PostgreSQL query of dataset "broken" failed (SQLSTATE 22012)',
    });
    expect((await fetch(sidecar.url(`${location}/download`))).status).toBe(409);
    // The job turns `failed` before its log line is written.
    await vi.waitFor(() => expect(sidecar.logs.events('job:failed')).toHaveLength(1));
    expect(sidecar.logs.events('job:failed')[0]).toMatchObject({
      dataset: 'broken',
      error: { code: 'SOURCE_FAILED' },
      cause: { message: 'division by zero', code: '22012' },
    });
  });
});
