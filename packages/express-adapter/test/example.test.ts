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
    const server = await listen(createServer(app));
    closers.push(server.close, () => manager.close({ drainTimeoutMs: 0 }));

    await checkExampleApp(server.url, manager);
  });

  it("answers malformed JSON and a body over maxBodyBytes with the API's problems, and parses JSON for its own routes", async () => {
    const { app, manager } = createApp(await tempDir());
    // The host's own route, after the example's setup: express.json() parsed its body.
    app.post('/notes', (req, res) => {
      res.status(201).json({ received: req.body });
    });
    const server = await listen(createServer(app));
    closers.push(server.close, () => manager.close({ drainTimeoutMs: 0 }));

    const malformed = await fetch(`${server.url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"dataset":',
    });
    expect(malformed.status).toBe(400);
    expect(malformed.headers.get('content-type')).toBe('application/problem+json');
    expect(await malformed.json()).toMatchObject({ status: 400, code: 'BAD_REQUEST' });

    // 100 kB is body-parser's own limit; the API's is maxBodyBytes (64 KiB).
    const large = await fetch(`${server.url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'orders', format: 'csv', pad: 'x'.repeat(70_000) }),
    });
    expect(large.status).toBe(413);
    expect(large.headers.get('content-type')).toBe('application/problem+json');

    const note = await fetch(`${server.url}/notes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"text":"hi"}',
    });
    expect(note.status).toBe(201);
    expect(await note.json()).toEqual({ received: { text: 'hi' } });
  });
});
