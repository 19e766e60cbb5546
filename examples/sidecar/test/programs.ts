// Shared by the tests that drive real programs (promtool, Prometheus, nginx): finding them, free
// loopback ports, a small SQLite dataset, a failing one, and an upstream that holds its answer
// until the test lets it go.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { deferred } from '@spark-export/core/testing';
import Database from 'better-sqlite3';
import type { SidecarConfig } from '../src/config.js';

/** The path of an executable on PATH or in one of `extra` (e.g. /usr/sbin for nginx). */
export async function findProgram(name: string, extra: string[] = []): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...extra];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/**
 * A program the tests need. In CI (`CI` set) a missing program is an error, so the tests fail
 * instead of skipping; locally they may skip (`skip` is true).
 */
export async function requireProgram(
  name: string,
  debianPackage: string,
  extra: string[] = [],
): Promise<{ path: string | undefined; skip: boolean }> {
  const path = await findProgram(name, extra);
  if (path === undefined && process.env.CI) {
    throw new Error(`${name} is not installed: apt-get install -y ${debianPackage} (.ci/run does)`);
  }
  return { path, skip: path === undefined };
}

/** A port that was free on 127.0.0.1 a moment ago, for programs that cannot listen on port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a value other than `undefined`, at most `attempts` times. */
export async function pollUntil<T>(
  what: string,
  check: () => Promise<T | undefined>,
  { attempts = 300, intervalMs = 100 } = {},
): Promise<T> {
  let last: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`Gave up waiting for ${what} after ${attempts} polls${last ? `: ${String(last)}` : ''}`);
}

/** A SQLite file with `rows` rows in `items(id, name, amount)`. */
export function createItemsDatabase(file: string, rows: number): void {
  const db = new Database(file);
  db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL NOT NULL)');
  const insert = db.prepare('INSERT INTO items (id, name, amount) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 1; i <= rows; i++) insert.run(i, `item ${i} "quoted", with commas`, i * 1.25);
  })();
  db.close();
}

/**
 * An upstream JSON API for `http-json` datasets that sends the first `before` rows at once and
 * the last `after` rows only when the test calls `release()`: a slot held for exactly as long
 * as the test wants, and a stream whose first bytes come long before its end.
 */
export interface HeldUpstream {
  url: string;
  /** Requests that arrived so far. */
  readonly requests: number;
  /** Resolves once `count` requests arrived (and got their first rows). */
  waitForRequests(count: number): Promise<void>;
  /** Lets every request that arrived so far finish; later ones are held again. */
  release(): void;
  close(): Promise<void>;
}

export async function startHeldUpstream({ before = 3, after = 3, padding = 0 } = {}): Promise<HeldUpstream> {
  const row = (n: number) => JSON.stringify({ n, text: 'x'.repeat(padding) });
  const head = `[${Array.from({ length: before }, (_, i) => row(i + 1)).join(',')}`;
  const tail = `${Array.from({ length: after }, (_, i) => `,${row(before + i + 1)}`).join('')}]`;
  let gate = deferred();
  let requests = 0;
  const waiters: { count: number; resolve: () => void }[] = [];
  const open = new Set<ServerResponse>();
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    open.add(response);
    response.on('close', () => open.delete(response));
    response.write(head, () => {
      requests++;
      for (const waiter of waiters.filter((w) => requests >= w.count)) waiter.resolve();
    });
    void gate.promise.then(() => response.end(tail));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/rows`,
    get requests() {
      return requests;
    },
    waitForRequests(count) {
      if (requests >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    release() {
      const released = gate;
      gate = deferred();
      released.resolve();
    },
    async close() {
      gate.resolve();
      for (const response of open) response.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Datasets for the ops tests: `items` (SQLite, `rows` rows), `broken` (SQLite whose query
 * prepares fine but fails while it runs: abs() of the smallest integer overflows), and `held`
 * (the held upstream) when its URL is given.
 */
export function opsConfig(database: string, heldUrl?: string): SidecarConfig {
  return {
    datasets: {
      items: {
        description: 'Items',
        source: { type: 'sqlite', database, query: 'SELECT id, name, amount FROM items ORDER BY id' },
      },
      broken: {
        description: 'Fails at run time',
        source: {
          type: 'sqlite',
          database,
          query: 'SELECT id, abs(-9223372036854775807 - id) AS boom FROM items ORDER BY id',
        },
      },
      ...(heldUrl === undefined
        ? {}
        : {
            held: { description: 'Held by the test', source: { type: 'http-json' as const, url: heldUrl } },
          }),
    },
  };
}

/** POSTs a job; returns the response status, its Location and Retry-After. */
export async function postJob(
  origin: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; location: string | null; retryAfter: string | null; body: unknown }> {
  const response = await fetch(`${origin}/export/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return {
    status: response.status,
    location: response.headers.get('location'),
    retryAfter: response.headers.get('retry-after'),
    body: await response.json(),
  };
}

/**
 * Waits until `/export/status` shows no export in flight. A failed job reads `failed` a moment
 * before its slot is released (core sets the status before writing the manifest), so a test
 * that counts slots waits for this rather than for the job's status alone.
 */
export async function waitForIdle(origin: string, headers: Record<string, string> = {}): Promise<void> {
  await pollUntil(
    'no export in flight',
    async () => {
      const status = (await (await fetch(`${origin}/export/status`, { headers })).json()) as {
        inFlight: number;
        queued: number;
      };
      return status.inFlight === 0 && status.queued === 0 ? true : undefined;
    },
    { attempts: 500, intervalMs: 10 },
  );
}
