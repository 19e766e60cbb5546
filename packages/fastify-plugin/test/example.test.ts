import { afterEach, describe, expect, it } from 'vitest';
import { checkExampleApp, cleanup, readmeExample, tempDir } from '../../core/test/http.helpers.js';
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

  it('serves exports, and closes the manager it created with the app', async () => {
    const app = await createApp(await tempDir());
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(async () => {
      const closing = app.close();
      app.server.closeAllConnections();
      await closing;
    });
    const manager = app.exportManager;

    await checkExampleApp(url, manager);

    await closers.pop()!();
    expect(manager.closing).toBe(true);
  });
});
