import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { deferred } from '@spark-export/core/testing';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanEnv,
  removeDir,
  requireBuild,
  run,
  SIDECAR_DIR,
  tempDir,
  writeInvalidConfigExample,
} from './helpers.js';

/** The package's bin, as npm links it (`npx spark-export`, `npm run cli --` at the root). */
const CLI = join(SIDECAR_DIR, 'bin', 'spark-export.js');
const REPO_ROOT = join(SIDECAR_DIR, '..', '..');

describe('spark-export CLI (child processes of the built bin)', () => {
  let dir: string;
  let upstream: Server;
  let requested = deferred();
  const held = new Set<ServerResponse>();

  beforeAll(async () => {
    requireBuild();
    dir = tempDir();
    const db = new Database(join(dir, 'shop.sqlite'));
    db.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, day TEXT, total REAL)');
    db.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
       INSERT INTO orders SELECT i, date('2025-01-01', '+' || (i % 365) || ' days'), i / 4.0 FROM n`,
    ).run();
    db.close();
    // An upstream that sends some rows, then never finishes: for Ctrl-C mid-export.
    upstream = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/x-ndjson' });
      response.write(`${Array.from({ length: 5000 }, (_, i) => JSON.stringify({ i })).join('\n')}\n`);
      held.add(response);
      requested.resolve();
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    writeFileSync(
      join(dir, 'spark-export.config.json'),
      JSON.stringify({
        datasets: {
          orders: {
            description: 'Orders',
            params: { from: { type: 'date', required: true } },
            source: {
              type: 'sqlite',
              database: './shop.sqlite',
              query: 'SELECT id, day, total FROM orders WHERE day >= :from ORDER BY id',
            },
          },
          endless: {
            source: {
              type: 'http-json',
              format: 'ndjson',
              url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/`,
            },
          },
          stamps: {
            columns: [
              { name: 'id', type: 'integer' },
              { name: 'at', type: 'date' },
              { name: 'total', type: 'number' },
            ],
            source: {
              type: 'sqlite',
              database: './shop.sqlite',
              query: "SELECT id, day || ' 00:30:00' AS at, total FROM orders WHERE id <= 3 ORDER BY id",
            },
          },
        },
      }),
    );
  });
  afterAll(async () => {
    for (const response of held) response.destroy();
    upstream?.closeAllConnections();
    await new Promise((resolve) => upstream?.close(resolve));
    if (dir) removeDir(dir);
  });

  const cli = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [CLI, ...args], { cwd: dir, env: cleanEnv(env) });

  it('exports to a file with params and prints one summary line', async () => {
    const result = await cli([
      'export',
      'orders',
      '--format',
      'csv',
      '--out',
      'orders.csv',
      '--param',
      'from=2025-12-01',
    ]);
    expect(result.code).toBe(0);
    const rows = readFileSync(join(dir, 'orders.csv'), 'utf8').trim().split('\n');
    expect(rows[0]).toBe('id,day,total');
    expect(rows.slice(1).every((row) => row.split(',')[1]! >= '2025-12-01')).toBe(true);
    expect(existsSync(join(dir, 'orders.csv.part'))).toBe(false);
    expect(result.stderr).toBe(
      `spark-export: exported ${(rows.length - 1).toLocaleString('en-US')} rows (${result.stderr.match(/\(([^)]+)\)/)![1]}) of orders as csv to ${join(dir, 'orders.csv')} in ${result.stderr.match(/in (\S+)\n$/)![1]}\n`,
    );
    expect(result.stderr.split('\n')).toHaveLength(2);
  });

  it('gzips with --gzip and writes to stdout without --out', async () => {
    const gz = await cli([
      'export',
      'orders',
      '--format',
      'ndjson',
      '--out',
      'orders.ndjson.gz',
      '--gzip',
      '--param',
      'from=2025-12-30',
    ]);
    expect(gz.code).toBe(0);
    const lines = gunzipSync(readFileSync(join(dir, 'orders.ndjson.gz')))
      .toString('utf8')
      .trim()
      .split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ day: '2025-12-30' });

    const stdout = await cli([
      'export',
      'orders',
      '--format',
      'json',
      '--quiet',
      '--param',
      'from=2025-12-31',
    ]);
    expect(stdout.code).toBe(0);
    expect(stdout.stderr).toBe('');
    expect((JSON.parse(stdout.stdout) as unknown[]).length).toBeGreaterThan(0);
  });

  it('draws a progress bar on a terminal (SPARK_EXPORT_FORCE_TTY)', async () => {
    const result = await cli(['export', 'orders', '--out', 'bar.csv', '--param', 'from=2025-01-01'], {
      SPARK_EXPORT_FORCE_TTY: '1',
    });
    expect(result.code).toBe(0);
    const frames = result.stderr.split('\r\x1b[2K').filter(Boolean);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    expect(frames.at(-1)).toMatch(/^30,000 rows {2}[\d,]+ rows\/s {2}[\d.]+ [kM]?B {2}\d+:\d\d\.\d\n/);
    expect(result.stderr).toContain('spark-export: exported 30,000 rows');
  });

  it('shows the percentage for the built-in demo, whose datasets have a countQuery', async () => {
    const empty = tempDir();
    try {
      const result = await run(
        process.execPath,
        [CLI, 'export', 'customers', '-p', 'country=JP', '-o', 'customers.csv'],
        { cwd: empty, env: cleanEnv({ SPARK_EXPORT_FORCE_TTY: '1' }) },
      );
      expect(result.code).toBe(0);
      const frames = result.stderr.split('\r\x1b[2K').filter(Boolean);
      const rows = readFileSync(join(empty, 'customers.csv'), 'utf8').trim().split('\n').length - 1;
      expect(frames.at(-1)).toMatch(
        new RegExp(`^\\[#{24}\\] 100% {2}${rows.toLocaleString('en-US')} rows {2}`),
      );
      // The export seeds the demo database where npm start keeps it, not here.
      expect(readdirSync(empty)).toEqual(['customers.csv']);
    } finally {
      removeDir(empty);
    }
  });

  it.each<[string, string[], string]>([
    [
      'a bad param',
      ['export', 'orders', '--out', 'bad.csv', '--param', 'from=soon'],
      'spark-export: Expected param "from" to be an ISO 8601 date such as 2025-01-31 or 2025-01-31T12:00:00Z, got "soon" (string)\n',
    ],
    [
      'a missing param',
      ['export', 'orders', '--out', 'bad.csv'],
      'spark-export: Missing required param "from" (date)\n',
    ],
    ['an unknown dataset', ['export', 'nope', '--out', 'bad.csv'], 'spark-export: Unknown dataset "nope"\n'],
    [
      'an unknown option',
      ['export', 'orders', '--colour'],
      "spark-export: Unknown option '--colour' (see spark-export --help)\n",
    ],
  ])('fails on %s with one line and a non-zero exit', async (_, args, message) => {
    const result = await cli(args);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toBe(message);
    expect(existsSync(join(dir, 'bad.csv'))).toBe(false);
    expect(existsSync(join(dir, 'bad.csv.part'))).toBe(false);
  });

  it('fails on an invalid config naming the field', async () => {
    writeFileSync(
      join(dir, 'broken.json'),
      JSON.stringify({ datasets: { a: { source: { type: 'sqlite', database: 'x.db' } } } }),
    );
    const result = await cli(['datasets', '--config', 'broken.json']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `spark-export: Invalid configuration in ${join(dir, 'broken.json')}: Missing datasets.a.source.query; expected a non-empty SQL query\n`,
    );
  });

  it('ends quietly with exit 0 when the reader of stdout goes away (| head -2)', async () => {
    // 30,000 rows are far more than a pipe holds, so the CLI is still writing when head exits.
    const result = await run(
      'bash',
      [
        '-c',
        `set -o pipefail; "${process.execPath}" "${CLI}" export orders --format ndjson --param from=2025-01-01 | head -2`,
      ],
      { cwd: dir, env: cleanEnv() },
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split('\n')).toHaveLength(2);
  });

  it('writes dates in --time-zone and --date-format, and CSV for Excel with --excel', async () => {
    const result = await cli([
      'export',
      'stamps',
      '--time-zone',
      'Europe/Berlin',
      '--date-format',
      'iso-local',
      '--excel',
      '--quiet',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    // The query's text is UTC (`2025-01-02 00:30:00`); Berlin is an hour ahead in winter.
    expect(result.stdout).toBe(
      '\uFEFFid;at;total\r\n1;2025-01-02 01:30:00;0,25\r\n2;2025-01-03 01:30:00;0,5\r\n3;2025-01-04 01:30:00;0,75\r\n',
    );
    const bad = await cli(['export', 'stamps', '--time-zone', 'Mars/Olympus']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('Expected timeZone to be an IANA time zone name');
  });

  it('lists every flag in --help, and the short ones work', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const flag of [
      '    --format csv|json|ndjson|xlsx|parquet',
      '-o, --out <file>',
      '-p, --param name=value',
      '    --columns a,b,c',
      '    --gzip',
      '    --time-zone <IANA name>',
      '    --date-format iso|iso-local|date',
      '    --excel',
      '-q, --quiet',
      '    --json',
      '-c, --config <file>',
      '-h, --help',
      '-v, --version',
    ])
      expect(help.stdout).toContain(`  ${flag} `);

    writeFileSync(join(dir, 'short.json'), readFileSync(join(dir, 'spark-export.config.json')));
    const short = await cli([
      'export',
      'orders',
      '-c',
      'short.json',
      '-q',
      '-o',
      'short.csv',
      '-p',
      'from=2025-12-31',
    ]);
    expect(short).toMatchObject({ code: 0, stderr: '' });
    expect(readFileSync(join(dir, 'short.csv'), 'utf8').split('\n')[0]).toBe('id,day,total');
  });

  it('refuses a repeated --param, as the HTTP API refuses a repeated query parameter', async () => {
    const result = await cli([
      'export',
      'orders',
      '--out',
      'twice.csv',
      '--param',
      'from=2025-01-01',
      '--param',
      'from=2025-06-01',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      'spark-export: Expected at most one --param from=... (see spark-export --help)\n',
    );
    expect(existsSync(join(dir, 'twice.csv'))).toBe(false);
  });

  it('has a bin that exists before a build, so that npm ci links it and npx never asks the registry', () => {
    const manifest = JSON.parse(readFileSync(join(SIDECAR_DIR, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    const bin = manifest.bin['spark-export']!;
    // npm links a bin at install time only when its file exists; dist/ is made later.
    expect(bin).not.toMatch(/^(\.\/)?dist\//);
    expect(existsSync(join(SIDECAR_DIR, bin))).toBe(true);
    expect(join(SIDECAR_DIR, bin)).toBe(CLI);
    // npm ci links the bins the lockfile records, not those of package.json.
    const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { bin?: Record<string, string> }>;
    };
    expect(join(SIDECAR_DIR, lock.packages['examples/sidecar']!.bin!['spark-export']!)).toBe(CLI);
  });

  it('runs from the root of a clone with npm run cli', async () => {
    const result = await run('npm', ['run', '--silent', 'cli', '--', 'datasets'], {
      cwd: REPO_ROOT,
      env: cleanEnv(),
    });
    expect(result).toMatchObject({ code: 0, stderr: '' });
    // The demo's columns are typed, so Parquet is offered too.
    expect(result.stdout).toMatch(/^orders {2}\[csv, json, ndjson, xlsx, parquet\]/);
    expect(existsSync(join(REPO_ROOT, 'data'))).toBe(false);
  });

  it('lists the built-in demo without seeding a database into the working directory', async () => {
    const empty = tempDir();
    try {
      const result = await run(process.execPath, [CLI, 'datasets'], { cwd: empty, env: cleanEnv() });
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toContain(
        'orders  [csv, json, ndjson, xlsx, parquet]  params: from?:date to?:date',
      );
      expect(result.stdout).toContain('customers  [csv, json, ndjson, xlsx, parquet]');
      expect(readdirSync(empty)).toEqual([]);
    } finally {
      removeDir(empty);
    }
  });

  it('prints the same bulleted list of config problems as the server', async () => {
    const elsewhere = tempDir();
    try {
      const expected = writeInvalidConfigExample(elsewhere);
      const result = await cli(['datasets', '--config', join(elsewhere, 'spark-export.config.json')]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(expected);
    } finally {
      removeDir(elsewhere);
    }
  });

  it('lists the datasets', async () => {
    const result = await cli(['datasets']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      'orders  [csv, json, ndjson, xlsx]  params: from:date\n  Orders\nendless  [csv, json, ndjson, xlsx]\nstamps  [csv, json, ndjson, xlsx, parquet]\n',
    );
  });

  it.each<[NodeJS.Signals, number]>([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ])('cancels on %s (exit %i) and leaves no partial file', async (signal, exitCode) => {
    requested = deferred();
    const child = spawn(
      process.execPath,
      [CLI, 'export', 'endless', '--format', 'ndjson', '--out', 'endless.ndjson'],
      {
        cwd: dir,
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => {
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
      });
      child.on('close', (code) => resolve({ code, stderr }));
    });
    await requested.promise;
    // The export is under way once its partial file exists.
    while (!existsSync(join(dir, 'endless.ndjson.part')))
      await new Promise((resolve) => setTimeout(resolve, 10));
    child.kill(signal);
    const result = await exited;
    expect(result.code).toBe(exitCode);
    expect(result.stderr).toBe('spark-export: cancelled; endless.ndjson was not written\n');
    expect(existsSync(join(dir, 'endless.ndjson'))).toBe(false);
    expect(existsSync(join(dir, 'endless.ndjson.part'))).toBe(false);
  });
});
