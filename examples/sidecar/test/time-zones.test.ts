import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SidecarConfig } from '../src/config.js';
import { removeDir, startTestSidecar, type TestSidecar, tempDir } from './helpers.js';

/*
 * A SQLite table holds its times as text (`created_at TEXT`, as SQLite's CURRENT_TIMESTAMP
 * writes them: UTC without an offset). Declared as `type: "date"` in the config file, they are
 * written in the export's time zone; the default zone comes from EXPORT_TIME_ZONE.
 */
describe('typed SQLite columns in a time zone (config file, EXPORT_TIME_ZONE, over HTTP)', () => {
  let dir: string;
  let sidecar: TestSidecar;

  beforeAll(async () => {
    dir = tempDir();
    mkdirSync(join(dir, 'data'));
    const db = new Database(join(dir, 'data/app.sqlite'));
    db.exec('CREATE TABLE payments (id INTEGER PRIMARY KEY, amount REAL NOT NULL, paid_at TEXT NOT NULL)');
    const insert = db.prepare('INSERT INTO payments (id, amount, paid_at) VALUES (?, ?, ?)');
    // Either side of the 2025 summer-time start in Berlin (01:00 UTC) and in New York (07:00 UTC).
    insert.run(1, 19.5, '2025-03-30 00:30:00');
    insert.run(2, 1250.25, '2025-03-30 01:30:00');
    insert.run(3, 7, '2025-03-09T07:30:00Z');
    db.close();
    const config: SidecarConfig = {
      datasets: {
        payments: {
          columns: [
            { name: 'id', type: 'integer' },
            { name: 'amount', label: 'Amount', type: 'number' },
            { name: 'paid_at', label: 'Paid at', type: 'date' },
          ],
          source: {
            type: 'sqlite',
            database: './data/app.sqlite',
            query: 'SELECT id, amount, paid_at FROM payments ORDER BY id',
          },
        },
      },
    };
    sidecar = await startTestSidecar(config, { baseDir: dir, env: { EXPORT_TIME_ZONE: 'Europe/Berlin' } });
  });
  afterAll(async () => {
    await sidecar?.close();
    if (dir) removeDir(dir);
  });

  it('writes the dates in EXPORT_TIME_ZONE unless the request asks for another zone', async () => {
    const berlin = await fetch(sidecar.url('/export/stream/payments?format=csv'));
    expect(berlin.status).toBe(200);
    expect(await berlin.text()).toBe(
      'id,Amount,Paid at\n' +
        '1,19.5,2025-03-30T01:30:00.000+01:00\n' +
        '2,1250.25,2025-03-30T03:30:00.000+02:00\n' +
        '3,7,2025-03-09T08:30:00.000+01:00\n',
    );
    const newYork = await fetch(
      sidecar.url('/export/stream/payments?format=ndjson&timeZone=America/New_York&dateFormat=iso-local'),
    );
    expect(
      (await newYork.text())
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line).paid_at),
    ).toEqual(['2025-03-29 20:30:00', '2025-03-29 21:30:00', '2025-03-09 03:30:00']);
  });

  it('writes CSV for Excel in a European locale when asked', async () => {
    const response = await fetch(
      sidecar.url('/export/stream/payments?csvPreset=excel&dateFormat=iso-local'),
      { headers: { 'accept-encoding': 'identity' } },
    );
    expect(response.headers.get('content-encoding')).toBeNull();
    expect(Buffer.from(await response.arrayBuffer()).toString('utf8')).toBe(
      '\uFEFFid;Amount;Paid at\r\n' +
        '1;19,5;2025-03-30 01:30:00\r\n' +
        '2;1250,25;2025-03-30 03:30:00\r\n' +
        '3;7;2025-03-09 08:30:00\r\n',
    );
  });
});
