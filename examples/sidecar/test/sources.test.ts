import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { ExportManager, isExportError } from '@spark-export/core';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { type BuiltDatasets, buildDatasets } from '../src/datasets.js';
import { compileNamedParams } from '../src/sources/named-params.js';
import { removeDir, tempDir } from './helpers.js';

/** Runs one export into memory and returns the text. */
async function exportText(
  manager: ExportManager,
  dataset: string,
  params: Record<string, unknown> = {},
  format = 'ndjson',
) {
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (chunk: Buffer) => chunks.push(chunk));
  await manager.stream({ dataset, format: format as 'ndjson', params }, sink);
  return Buffer.concat(chunks).toString('utf8');
}

const lines = (text: string) =>
  text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);

function setup(config: SidecarConfig, dir: string): { built: BuiltDatasets; manager: ExportManager } {
  const built = buildDatasets(
    { config, file: join(dir, 'spark-export.config.json'), baseDir: dir },
    { env: {}, poolSize: 2 },
  );
  return { built, manager: new ExportManager({ datasets: built.datasets, metrics: false, batchSize: 500 }) };
}

describe('sqlite source (real SQLite file)', () => {
  const ROWS = 200_000;
  let dir: string;
  let built: BuiltDatasets;
  let manager: ExportManager;

  beforeAll(() => {
    dir = tempDir();
    const db = new Database(join(dir, 'shop.sqlite'));
    db.exec(`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, active INTEGER, price REAL)`);
    db.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${ROWS})
       INSERT INTO items SELECT i, 'item ' || i, i % 2, i / 10.0 FROM n`,
    ).run();
    db.close();
    ({ built, manager } = setup(
      {
        datasets: {
          items: {
            params: {
              name: { type: 'string' },
              active: { type: 'boolean' },
              max_id: { type: 'integer', min: 1 },
            },
            source: {
              type: 'sqlite',
              database: './shop.sqlite',
              query: `SELECT id, name, active, price FROM items
                      WHERE (:name IS NULL OR name = :name) AND (:active IS NULL OR active = :active)
                        AND (:max_id IS NULL OR id <= :max_id) ORDER BY id`,
              countQuery: 'SELECT count(*) FROM items WHERE (:max_id IS NULL OR id <= :max_id)',
            },
          },
        },
      },
      dir,
    ));
  });
  afterAll(async () => {
    await manager?.close({ drainTimeoutMs: 0 });
    await built?.close();
    removeDir(dir);
  });

  it('streams every row, with the columns of the query', async () => {
    const rows = lines(await exportText(manager, 'items'));
    expect(rows).toHaveLength(ROWS);
    expect(rows[0]).toEqual({ id: 1, name: 'item 1', active: 1, price: 0.1 });
    expect(built.datasets.items!.columns?.map((column) => column.name)).toEqual([
      'id',
      'name',
      'active',
      'price',
    ]);
  });

  it('binds params by name (booleans as 1/0) and never as SQL', async () => {
    expect(
      lines(await exportText(manager, 'items', { active: 'false', max_id: '10' })).map((row) => row.id),
    ).toEqual([2, 4, 6, 8, 10]);
    expect(lines(await exportText(manager, 'items', { name: 'item 7' }))).toEqual([
      { id: 7, name: 'item 7', active: 1, price: 0.7 },
    ]);
    expect(lines(await exportText(manager, 'items', { name: "x' OR '1'='1" }))).toEqual([]);
    expect(await built.datasets.items!.count!({ max_id: 42 }, { signal: new AbortController().signal })).toBe(
      42,
    );
  });

  it('yields to the event loop between batches', async () => {
    let turns = 0;
    let running = true;
    const tick = () => {
      turns++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    await exportText(manager, 'items');
    running = false;
    // 200,000 rows in batches of 500 give the loop at least one turn per batch.
    expect(turns).toBeGreaterThanOrEqual(ROWS / 500);
  });

  it('closes its connection when the export is aborted', async () => {
    const controller = new AbortController();
    const sink = new PassThrough();
    let received = 0;
    sink.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > 100_000) controller.abort();
    });
    await expect(
      manager.stream({ dataset: 'items', format: 'csv' }, sink, { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'CANCELLED' });
    // A writer can take the database's exclusive lock: the reader was closed (on the source's
    // own turn, right after the export settled), not left open.
    const writer = new Database(join(dir, 'shop.sqlite'), { timeout: 0 });
    try {
      await vi.waitFor(() => writer.exec('BEGIN EXCLUSIVE; COMMIT'), { timeout: 5000, interval: 10 });
    } finally {
      writer.close();
    }
  });
});

describe('file source (NDJSON and JSON files on disk)', () => {
  let dir: string;
  let built: BuiltDatasets;
  let manager: ExportManager;

  beforeAll(() => {
    dir = tempDir();
    const data = join(dir, 'data');
    mkdirSync(join(data, 'reports'), { recursive: true });
    writeFileSync(
      join(data, 'events.ndjson'),
      Array.from({ length: 5000 }, (_, i) => JSON.stringify({ i })).join('\n'),
    );
    writeFileSync(join(data, 'report.json'), JSON.stringify({ report: { rows: [{ a: 1 }, { a: 2 }] } }));
    writeFileSync(join(data, 'reports', '2025-01.ndjson'), '{"month":"2025-01"}\n');
    writeFileSync(join(data, 'broken.ndjson'), '{"ok":true}\n{"ok":\n');
    writeFileSync(join(dir, 'secret.ndjson'), '{"secret":true}\n');
    symlinkSync(join(dir, 'secret.ndjson'), join(data, 'reports', 'link.ndjson'));
    ({ built, manager } = setup(
      {
        fileRoots: ['./data'],
        datasets: {
          events: { source: { type: 'file', path: './data/events.ndjson' } },
          report: { source: { type: 'file', path: './data/report.json', jsonPath: 'report.rows' } },
          monthly: {
            params: { month: { type: 'string', required: true } },
            source: { type: 'file', path: './data/reports/{month}.ndjson' },
          },
          broken: { source: { type: 'file', path: './data/broken.ndjson' } },
        },
      },
      dir,
    ));
  });
  afterAll(async () => {
    await manager?.close({ drainTimeoutMs: 0 });
    await built?.close();
    removeDir(dir);
  });

  it('reads NDJSON and JSON arrays (at a path) as streams', async () => {
    expect(lines(await exportText(manager, 'events'))).toHaveLength(5000);
    expect(lines(await exportText(manager, 'report'))).toEqual([{ a: 1 }, { a: 2 }]);
    expect(lines(await exportText(manager, 'monthly', { month: '2025-01' }))).toEqual([{ month: '2025-01' }]);
  });

  it.each([
    ['../../secret', 'FORBIDDEN', 'The file of dataset "monthly" is outside the allowed directories'],
    [
      '../../../../../../etc/passwd',
      'FORBIDDEN',
      'The file of dataset "monthly" is outside the allowed directories',
    ],
    ['link', 'FORBIDDEN', 'The file of dataset "monthly" is outside the allowed directories'],
    ['2099-01', 'NOT_FOUND', 'The file of dataset "monthly" does not exist'],
  ])('refuses the path built from month=%s', async (month, code, message) => {
    const error = await exportText(manager, 'monthly', { month }).catch((caught: unknown) => caught);
    expect(isExportError(error)).toBe(true);
    expect(error).toMatchObject({ code, message });
  });

  it('fails on a malformed file with a clear error', async () => {
    await expect(exportText(manager, 'broken')).rejects.toMatchObject({
      code: 'SOURCE_FAILED',
      message: 'The file of dataset "broken" is not valid NDJSON',
    });
  });
});

describe('compileNamedParams', () => {
  it.each([
    [
      'SELECT * FROM t WHERE a = :a AND b = :b OR a > :a',
      'SELECT * FROM t WHERE a = $1 AND b = $2 OR a > $1',
      ['a', 'b'],
    ],
    [
      "SELECT ':x', \"col:y\", ':a'' :b' FROM t WHERE c = :c",
      "SELECT ':x', \"col:y\", ':a'' :b' FROM t WHERE c = $1",
      ['c'],
    ],
    ['SELECT :d::date, x::text FROM t', 'SELECT $1::date, x::text FROM t', ['d']],
    [
      'SELECT 1 -- :nope\n, /* :no /* :nested */ */ :yes',
      'SELECT 1 -- :nope\n, /* :no /* :nested */ */ $1',
      ['yes'],
    ],
    ['SELECT $$ :not $$, $tag$ :neither $tag$, :p', 'SELECT $$ :not $$, $tag$ :neither $tag$, $1', ['p']],
    ["SELECT E'\\' :e', :f", "SELECT E'\\' :e', $1", ['f']],
  ])('%s', (sql, text, names) => {
    expect(compileNamedParams(sql)).toEqual({ text, names, positional: false });
  });

  it('notices $1-style placeholders', () => {
    expect(compileNamedParams('SELECT * FROM t WHERE a = $1').positional).toBe(true);
  });
});
