import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import type { LoadedConfig, SidecarConfig } from '../src/config.js';
import { parseEnv } from '../src/env.js';
import { createLogger } from '../src/logging.js';
import { type Sidecar, startSidecar } from '../src/sidecar.js';

export const SIDECAR_DIR = fileURLToPath(new URL('..', import.meta.url));
export const DIST = join(SIDECAR_DIR, 'dist');

/** A temp directory removed by `cleanup()`. */
export function tempDir(prefix = 'spark-sidecar-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Parsed JSON log lines of an in-process sidecar. */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    callback();
  }
  events(event: string): Record<string, unknown>[] {
    return this.lines.filter((line) => line.event === event);
  }
}

export interface TestSidecar extends Sidecar {
  logs: LogCapture;
  url: (path: string) => string;
  dir: string;
}

/** An in-process sidecar on 127.0.0.1:0 with its exports in a temp dir. */
export async function startTestSidecar(
  config: SidecarConfig,
  options: { env?: Record<string, string>; baseDir: string; backendHealthIntervalMs?: number },
): Promise<TestSidecar> {
  const dir = options.baseDir;
  const settings = parseEnv(
    { PORT: '0', HOST: '127.0.0.1', EXPORT_DIR: join(dir, 'exports'), LOG_LEVEL: 'info', ...options.env },
    dir,
  );
  const logs = new LogCapture();
  const loaded: LoadedConfig = { config, file: join(dir, 'spark-export.config.json'), baseDir: dir };
  const sidecar = await startSidecar({
    settings,
    config: loaded,
    logger: createLogger(settings.logLevel, logs),
    env: options.env ?? {},
    ...(options.backendHealthIntervalMs === undefined
      ? {}
      : { backendHealthIntervalMs: options.backendHealthIntervalMs }),
  });
  return Object.assign(sidecar, { logs, dir, url: (path: string) => `${sidecar.origin}${path}` });
}

/** Polls a job until it leaves queued/running. */
export async function waitForJob(
  url: string,
  headers: Record<string, string> = {},
): Promise<
  { status: string; error: { code: string; message: string } | null; progress: { rows: number } } & Record<
    string,
    unknown
  >
> {
  for (;;) {
    const response = await fetch(url, { headers });
    const job = (await response.json()) as { status: string } & Record<string, unknown>;
    if (job.status !== 'queued' && job.status !== 'running') return job as never;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Runs a child process to its end and collects its output. */
export function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** Waits until `predicate` holds for the output a child printed so far. */
export function waitForOutput(
  child: ChildProcess,
  stream: 'stdout' | 'stderr',
  predicate: (text: string) => boolean,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const source = child[stream]!;
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (predicate(text)) {
        source.off('data', onData);
        resolve(text);
      }
    };
    source.on('data', onData);
    child.once('exit', (code) =>
      reject(new Error(`process exited (${code}) before the expected output; got:\n${text}`)),
    );
  });
}

/** The built sidecar must exist for child-process tests (`npm test` builds first). */
export function requireBuild(): void {
  try {
    execFileSync(process.execPath, [
      '-e',
      `require('fs').accessSync(${JSON.stringify(join(DIST, 'cli.js'))})`,
    ]);
  } catch {
    throw new Error('examples/sidecar/dist is missing: run `npm run build` at the repository root first');
  }
}

/** An environment for child processes without the caller's EXPORT_* and DATABASE_URL settings. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(EXPORT_|DATABASE_URL|PORT$|HOST$|LOG_LEVEL$|SPARK_EXPORT_)/.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

/**
 * The config behind the example of docs/sidecar.md ("Validation at start"), written to
 * `<dir>/spark-export.config.json`: two schema problems and one a dataset check finds. Returns
 * the example's text as the docs show it, for `/srv` read `dir`.
 */
export function writeInvalidConfigExample(dir: string): string {
  const db = new Database(join(dir, 'shop.sqlite'));
  db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, day TEXT)');
  db.close();
  writeFileSync(
    join(dir, 'spark-export.config.json'),
    JSON.stringify({
      datasets: {
        orders: { source: { type: 'mysql', query: 'SELECT 1' } },
        invoices: { sourc: { type: 'sqlite' } },
        items: {
          source: {
            type: 'sqlite',
            database: './shop.sqlite',
            query: 'SELECT id FROM items WHERE day >= :from',
          },
        },
      },
    }),
  );
  const docs = readFileSync(join(SIDECAR_DIR, '..', '..', 'docs', 'sidecar.md'), 'utf8');
  const example = /```\n(spark-export: Invalid configuration in \/srv\/[^`]*)```/.exec(docs)![1]!;
  return example.replaceAll('/srv/', join(dir, '/'));
}
