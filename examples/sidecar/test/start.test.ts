import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanEnv,
  DIST,
  removeDir,
  requireBuild,
  run,
  SIDECAR_DIR,
  tempDir,
  waitForOutput,
  writeInvalidConfigExample,
} from './helpers.js';

const SERVER = join(DIST, 'server.js');
const hasCurl = spawnSync('sh', ['-c', 'command -v curl']).status === 0;
if (!hasCurl && process.env.CI)
  throw new Error('curl is needed to run the printed quick-start commands: apt-get install -y curl');

function startServer(cwd: string, env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [SERVER], {
    cwd,
    env: cleanEnv({ PORT: '0', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

const exitOf = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });

/** The banner names the origin; with PORT=0 that is where the real port shows. */
async function originOf(child: ChildProcess): Promise<{ origin: string; banner: string }> {
  const banner = await waitForOutput(child, 'stderr', (text) => /Health: curl/.test(text));
  return { origin: /spark-export sidecar: (http:\/\/[^\s/]+)\/export/.exec(banner)![1]!, banner };
}

describe('npm start (the built server as a child process)', () => {
  const children = new Set<ChildProcess>();
  const dirs: string[] = [];
  const spawnIn = (env: Record<string, string> = {}) => {
    const dir = tempDir();
    dirs.push(dir);
    const child = startServer(dir, env);
    children.add(child);
    return { dir, child };
  };

  beforeAll(() => requireBuild());
  afterEach(() => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    children.clear();
  });
  afterAll(() => {
    for (const dir of dirs) removeDir(dir);
  });

  it.skipIf(!hasCurl)(
    'seeds the demo, prints three curl commands that work as printed, and stops on SIGTERM',
    async () => {
      const { dir, child } = spawnIn();
      const { banner } = await originOf(child);
      // The URL of its first line answers.
      const url = /spark-export sidecar: (\S+)/.exec(banner)![1]!;
      expect((await fetch(url)).status).toBe(200);
      const commands = banner
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line.startsWith('JOB=$(curl') || line.startsWith('curl -sS'))
        .filter((line) => !line.includes('/export/status'));
      expect(commands).toHaveLength(3);
      const [create, poll, download] = commands as [string, string, string];
      // What a newcomer does: paste the first, paste the second until it says succeeded, paste the third.
      const script = [
        'set -eu',
        create,
        'for attempt in $(seq 1 3000); do',
        `  status=$(${poll})`,
        '  case "$status" in *\'"status":"succeeded"\'*) break ;; *\'"status":"failed"\'*) echo "$status" >&2; exit 1 ;; esac',
        '  sleep 0.1',
        'done',
        download,
        'echo "$JOB"',
      ].join('\n');
      const result = await run('bash', ['-c', script], { cwd: dir });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout.trim()).toMatch(/^\/export\/jobs\/exp_[A-Za-z0-9_-]{22}$/);

      const csv = readFileSync(join(dir, 'orders.csv'), 'utf8').trim().split('\n');
      // The demo database lives in the sidecar's data directory, never in the working directory.
      expect(existsSync(join(dir, 'data'))).toBe(false);
      const db = new Database(join(SIDECAR_DIR, 'data', 'demo.sqlite'), { readonly: true });
      const expected = db
        .prepare(`SELECT count(*) AS n FROM orders WHERE created_at >= '2025-07-01'`)
        .get() as { n: number };
      const total = db.prepare('SELECT count(*) AS n FROM orders').get() as { n: number };
      db.close();
      expect(total.n).toBe(1_000_000);
      expect(csv[0]).toBe('Order ID,Customer ID,Status,Total,Currency,Created at');
      expect(csv.length - 1).toBe(expected.n);
      expect(readdirSync(join(dir, 'exports')).some((name) => name.endsWith('.csv'))).toBe(true);

      child.kill('SIGTERM');
      expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    },
  );

  it('exits 1 on a bad environment, naming the variable', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const result = await run(process.execPath, [SERVER], {
      cwd: dir,
      env: cleanEnv({ PORT: 'abc', EXPORT_MAX_CONCURRENT: '-1' }),
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'spark-export: Invalid environment:\n' +
        '  - Expected PORT to be an integer from 0 to 65535, got "abc" (string)\n' +
        '  - Expected EXPORT_MAX_CONCURRENT to be an integer >= 1, got "-1" (string)\n',
    );
    expect(JSON.parse(result.stdout.trim())).toMatchObject({ level: 'fatal', event: 'config:invalid' });
  });

  it('exits 1 on an invalid config file instead of starting half-configured', async () => {
    const dir = tempDir();
    dirs.push(dir);
    writeFileSync(
      join(dir, 'conf.json'),
      JSON.stringify({
        datasets: {
          ok: { source: { type: 'file', path: 'a.ndjson' } },
          bad: { source: { type: 'postgres', query: 'SELECT 1' } },
        },
      }),
    );
    const result = await run(process.execPath, [SERVER], {
      cwd: dir,
      env: cleanEnv({ PORT: '0', EXPORT_CONFIG: 'conf.json' }),
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `spark-export: Invalid configuration in ${join(dir, 'conf.json')}: Missing datasets.bad.source.connectionString; expected a postgres:// connection string, or DATABASE_URL to be set\n`,
    );
  });

  it('lists every problem of the config at once, schema and datasets alike, as docs/sidecar.md shows', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const expected = writeInvalidConfigExample(dir);
    const result = await run(process.execPath, [SERVER], { cwd: dir, env: cleanEnv({ PORT: '0' }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(expected);
  });

  describe('SIGTERM with an export running', () => {
    let upstream: Server;
    let requested = deferred();
    let release = deferred();
    const held = new Set<ServerResponse>();

    beforeAll(async () => {
      upstream = createServer((_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.write('[{"n":1},');
        held.add(response);
        requested.resolve();
        void release.promise.then(() => response.end('{"n":2}]'));
      });
      await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    });
    afterAll(async () => {
      release.resolve();
      for (const response of held) response.destroy();
      upstream.closeAllConnections();
      await new Promise((resolve) => upstream.close(resolve));
    });

    const startHeldJob = async () => {
      requested = deferred();
      release = deferred();
      const dir = tempDir();
      dirs.push(dir);
      const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/items`;
      writeFileSync(
        join(dir, 'spark-export.config.json'),
        JSON.stringify({ datasets: { held: { source: { type: 'http-json', url } } } }),
      );
      const child = startServer(dir, { EXPORT_DRAIN_TIMEOUT_MS: '120000' });
      children.add(child);
      const { origin } = await originOf(child);
      const created = await fetch(`${origin}/export/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ dataset: 'held', format: 'ndjson' }),
      });
      expect(created.status).toBe(202);
      await requested.promise;
      const id = created.headers.get('location')!.split('/').pop()!;
      return { dir, child, origin, id };
    };
    const waitForDraining = async (origin: string) => {
      for (;;) {
        const response = await fetch(`${origin}/export/status`);
        if (response.status === 503) return (await response.json()) as { status: string };
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };

    it('drains: status 503 draining, new jobs 503, the running export finishes, exit 0', async () => {
      const { dir, child, origin, id } = await startHeldJob();
      child.kill('SIGTERM');
      expect(await waitForDraining(origin)).toMatchObject({ status: 'draining', inFlight: 1 });
      const refused = await fetch(`${origin}/export/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ dataset: 'held', format: 'ndjson' }),
      });
      expect(refused.status).toBe(503);
      release.resolve();
      expect(await exitOf(child)).toEqual({ code: 0, signal: null });
      const manifest = JSON.parse(readFileSync(join(dir, 'exports', `${id}.json`), 'utf8')) as {
        status: string;
        rows: number;
      };
      expect(manifest).toMatchObject({ status: 'succeeded', rows: 2 });
    });

    it('exits at once on a second signal', async () => {
      const { child, origin } = await startHeldJob();
      child.kill('SIGTERM');
      await waitForDraining(origin);
      child.kill('SIGTERM');
      expect(await exitOf(child)).toEqual({ code: 143, signal: null });
    });
  });
});
