import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, listen, postJson, tempDir } from '../../core/test/contract/helpers.js';
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

  it('serves exports', async () => {
    const { app, manager } = createApp(await tempDir());
    const server = await listen(createServer(app.callback()));
    closers.push(server.close, () => manager.close({ drainTimeoutMs: 0 }));

    const streamed = await fetch(`${server.url}/export/stream/orders?format=csv`);
    expect(streamed.status).toBe(200);
    expect((await streamed.text()).trim().split(/\r?\n/)).toEqual(['id,total', '1,10', '2,20', '3,30']);

    const created = await postJson(
      `${server.url}/export/jobs`,
      { dataset: 'orders', format: 'ndjson' },
      { 'x-user-id': 'u1' },
    );
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string };
    await manager.wait(job.id, { owner: 'u1' });
    const download = await fetch(`${server.url}/export/jobs/${job.id}/download`, {
      headers: { 'x-user-id': 'u1' },
    });
    expect(download.status).toBe(200);
    expect((await download.text()).trim().split('\n')).toHaveLength(3);
    expect(await (await fetch(`${server.url}/elsewhere`)).text()).toBe('the rest of your app');
    // Another user does not see it.
    expect(
      (await fetch(`${server.url}/export/jobs/${job.id}`, { headers: { 'x-user-id': 'u2' } })).status,
    ).toBe(404);
  });
});
