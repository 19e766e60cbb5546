import { createServer } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { checkExampleApp, cleanup, listen, readmeExample, tempDir } from '../../core/test/http.helpers.js';
import { createApp } from '../examples/basic.js';

const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await cleanup();
});

describe('README example', () => {
  it('quotes examples/basic.ts verbatim', async () => {
    const { quoted, file } = await readmeExample(new URL('../', import.meta.url));
    expect(quoted).toBe(file);
  });

  it('serves exports', async () => {
    const { app, manager } = createApp(await tempDir());
    const server = await listen(createServer(app.callback()));
    closers.push(server.close, () => manager.close({ drainTimeoutMs: 0 }));

    await checkExampleApp(server.url, manager);
    // The host app's own middleware still answers outside the prefix.
    expect(await (await fetch(`${server.url}/elsewhere`)).text()).toBe('the rest of your app');
  });
});
