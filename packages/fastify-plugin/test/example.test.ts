import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, postJson, tempDir } from '../../core/test/contract/helpers.js';
import { createApp } from '../examples/basic.js';

const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await cleanup();
});

describe('README example', () => {
  it('quotes examples/basic.ts verbatim', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const example = await readFile(new URL('../examples/basic.ts', import.meta.url), 'utf8');
    const block = /<!-- example: examples\/basic\.ts[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(example);
  });

  it('serves exports, and closes the manager it created with the app', async () => {
    const app = await createApp(await tempDir());
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(async () => {
      const closing = app.close();
      app.server.closeAllConnections();
      await closing;
    });
    const manager = app.exportManager;

    const streamed = await fetch(`${url}/export/stream/orders?format=csv`);
    expect(streamed.status).toBe(200);
    expect((await streamed.text()).trim().split(/\r?\n/)).toEqual(['id,total', '1,10', '2,20', '3,30']);

    const created = await postJson(
      `${url}/export/jobs`,
      { dataset: 'orders', format: 'ndjson' },
      { 'x-user-id': 'u1' },
    );
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string };
    await manager.wait(job.id, { owner: 'u1' });
    const download = await fetch(`${url}/export/jobs/${job.id}/download`, { headers: { 'x-user-id': 'u1' } });
    expect(download.status).toBe(200);
    expect((await download.text()).trim().split('\n')).toHaveLength(3);
    // Another user does not see it.
    expect((await fetch(`${url}/export/jobs/${job.id}`, { headers: { 'x-user-id': 'u2' } })).status).toBe(
      404,
    );

    await closers.pop()!();
    expect(manager.closing).toBe(true);
  });
});
