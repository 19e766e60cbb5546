// Shared by the HTTP tests of the core and the adapter packages (the contract suite itself is
// published from @spark-export/core/testing): managers, temp dirs, servers on 127.0.0.1:0,
// cleaned up by `cleanup()` in `afterEach`, and the README example checks.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExportManager, type ExportManagerOptions } from '@spark-export/core';
import { deferred } from '@spark-export/core/testing';
import { expect } from 'vitest';

export { listen } from '@spark-export/core/testing';

/** Managers and temp directories made by a test, cleaned up by `cleanup()` in `afterEach`. */
const managers: ExportManager[] = [];
const directories: string[] = [];

export async function tempDir(): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'spark-export-adapter-'));
  directories.push(directory);
  return directory;
}

/** A manager with a `numbers` dataset of `params.rows` rows (default 3). */
export async function createManager(options: ExportManagerOptions = {}): Promise<ExportManager> {
  const manager = new ExportManager({
    directory: await tempDir(),
    metrics: false,
    datasets: {
      numbers: {
        columns: [{ name: 'n' }],
        params: { rows: { type: 'integer', default: 3, min: 0 } },
        source: function* (params) {
          for (let n = 1; n <= (params.rows as number); n++) yield { n };
        },
      },
    },
    ...options,
  });
  managers.push(manager);
  await manager.ready;
  return manager;
}

export async function cleanup(): Promise<void> {
  await Promise.allSettled(managers.splice(0).map((manager) => manager.close({ drainTimeoutMs: 0 })));
  await Promise.allSettled(
    directories.splice(0).map((directory) => rm(directory, { recursive: true, force: true })),
  );
}

export function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** The code block of `README.md` marked `<!-- example: examples/basic.ts -->`, and that file. */
export async function readmeExample(packageDir: URL): Promise<{ quoted: string | undefined; file: string }> {
  const readme = await readFile(new URL('README.md', packageDir), 'utf8');
  const file = await readFile(new URL('examples/basic.ts', packageDir), 'utf8');
  const quoted = /<!-- example: examples\/basic\.ts[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  return { quoted, file };
}

/**
 * What every adapter README example promises: `orders` streams as CSV, a job of user `u1`
 * downloads, and user `u2` does not see it.
 */
export async function checkExampleApp(origin: string, manager: ExportManager): Promise<void> {
  const streamed = await fetch(`${origin}/export/stream/orders?format=csv`);
  expect(streamed.status).toBe(200);
  expect((await streamed.text()).trim().split(/\r?\n/)).toEqual(['id,total', '1,10', '2,20', '3,30']);

  const created = await postJson(
    `${origin}/export/jobs`,
    { dataset: 'orders', format: 'ndjson' },
    { 'x-user-id': 'u1' },
  );
  expect(created.status).toBe(202);
  const job = (await created.json()) as { id: string };
  await manager.wait(job.id, { owner: 'u1' });
  const download = await fetch(`${origin}/export/jobs/${job.id}/download`, {
    headers: { 'x-user-id': 'u1' },
  });
  expect(download.status).toBe(200);
  expect((await download.text()).trim().split('\n')).toHaveLength(3);
  const intruder = await fetch(`${origin}/export/jobs/${job.id}`, { headers: { 'x-user-id': 'u2' } });
  expect(intruder.status).toBe(404);
}

/**
 * Adds a dataset `endless` that yields rows until it is closed; `closed` resolves once its
 * generator's `finally` ran, i.e. once an abort really reached the source.
 */
export function defineEndlessDataset(manager: ExportManager): { closed: Promise<void> } {
  const closed = deferred();
  manager.defineDataset('endless', {
    source: async function* () {
      try {
        for (let n = 1; ; n++) {
          yield { n, pad: 'x'.repeat(200) };
          // Let the event loop run so that the abort can reach the source.
          await new Promise((resolve) => setImmediate(resolve));
        }
      } finally {
        closed.resolve();
      }
    },
  });
  return { closed: closed.promise };
}
