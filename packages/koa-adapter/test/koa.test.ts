import { createServer } from 'node:http';
import { bodyParser } from '@koa/bodyparser';
import { exportMiddleware } from '@spark-export/koa';
import Koa from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import {
  cleanup,
  createManager,
  defineEndlessDataset,
  listen,
  postJson,
} from '../../core/test/http.helpers.js';

const servers: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.allSettled(servers.splice(0).map((server) => server.close()));
  await cleanup();
});

async function start(app: Koa): Promise<string> {
  const server = await listen(createServer(app.callback()));
  servers.push(server);
  return server.url;
}

const jobRequest = { dataset: 'numbers', format: 'csv' };

describe.each([
  ['without a body parser', false],
  ['after @koa/bodyparser', true],
])('exportMiddleware %s', (_name, withBodyParser) => {
  async function app(): Promise<{ url: string; downstream: string[] }> {
    const downstream: string[] = [];
    const app = new Koa();
    if (withBodyParser) app.use(bodyParser());
    app.use(exportMiddleware(await createManager()));
    app.use((ctx) => {
      downstream.push(ctx.path);
      ctx.body = 'pong';
    });
    return { url: await start(app), downstream };
  }

  it('creates a job from a JSON body', async () => {
    const { url } = await app();
    const response = await postJson(`${url}/export/jobs`, jobRequest);
    expect(response.status).toBe(202);
    const job = (await response.json()) as { id: string; links: { self: string } };
    expect(response.headers.get('location')).toBe(`/export/jobs/${job.id}`);
    expect(job.links.self).toBe(`/export/jobs/${job.id}`);
  });

  it.each([
    ['text/plain', 'dataset=numbers'],
    ['application/x-www-form-urlencoded', 'dataset=numbers&format=csv'],
  ])('answers a %s body with a 415 problem', async (type, body) => {
    const { url } = await app();
    const response = await fetch(`${url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': type },
      body,
    });
    expect(response.status).toBe(415);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
  });

  it('calls next() outside its prefix, and only there', async () => {
    const { url, downstream } = await app();
    const ping = await fetch(`${url}/host/ping`);
    expect(await ping.text()).toBe('pong');
    // A path that merely starts with the prefix is not under it.
    expect(await (await fetch(`${url}/exports`)).text()).toBe('pong');
    expect((await fetch(`${url}/export/status`)).status).toBe(200);
    expect((await fetch(`${url}/export/nope`)).status).toBe(404);
    expect(downstream).toEqual(['/host/ping', '/exports']);
  });
});

describe('exportMiddleware', () => {
  it('answers malformed JSON with a 400 problem when it reads the body itself', async () => {
    const app = new Koa();
    app.use(exportMiddleware(await createManager()));
    const url = await start(app);
    const response = await postJson(`${url}/export/jobs`, '{"dataset":');
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ status: 400, code: 'BAD_REQUEST' });
  });

  it('answers HEAD and 204 with the core headers and no body', async () => {
    const app = new Koa();
    app.use(exportMiddleware(await createManager()));
    const url = await start(app);
    const head = await fetch(`${url}/export/status`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toMatch(/^application\/json/);
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);

    const created = (await (await postJson(`${url}/export/jobs`, jobRequest)).json()) as { id: string };
    const deleted = await fetch(`${url}/export/jobs/${created.id}`, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe('');
  });

  it('uses a custom prefix for routes and links', async () => {
    const app = new Koa();
    app.use(exportMiddleware(await createManager(), { prefix: '/api/export' }));
    const url = await start(app);
    const created = await postJson(`${url}/api/export/jobs`, jobRequest);
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string; links: { self: string } };
    expect(job.links.self).toBe(`/api/export/jobs/${job.id}`);
  });

  it('lets host middleware around it see the status and headers', async () => {
    const seen: number[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      await next();
      seen.push(ctx.status);
      ctx.set('x-host', 'yes');
    });
    app.use(exportMiddleware(await createManager()));
    const url = await start(app);
    const response = await fetch(`${url}/export/jobs/exp_missing`);
    expect(response.status).toBe(404);
    expect(response.headers.get('x-host')).toBe('yes');
    expect(seen).toEqual([404]);
  });

  it('carries the Koa context as request.native, to identify and onError', async () => {
    const contexts: Koa.Context[] = [];
    const seen: unknown[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      contexts.push(ctx);
      ctx.state.user = ctx.get('x-user');
      await next();
    });
    app.use(
      exportMiddleware(await createManager(), {
        identify: (request, ctx) => {
          seen.push(request.native, ctx);
          if (ctx.state.user === 'crash') throw new Error('session store down');
          return ctx.state.user as string;
        },
        onError: (_error, request) => seen.push(request.native),
      }),
    );
    const url = await start(app);
    expect((await fetch(`${url}/export/jobs`, { headers: { 'x-user': 'alice' } })).status).toBe(200);
    expect((await fetch(`${url}/export/datasets`, { headers: { 'x-user': 'crash' } })).status).toBe(500);
    expect(contexts).toHaveLength(2);
    const [first, second] = contexts as [Koa.Context, Koa.Context];
    expect(seen).toHaveLength(5);
    for (const [index, native] of seen.entries()) expect(native).toBe(index < 2 ? first : second);
  });

  it('streams an export, and a client that leaves aborts it and frees its slot', async () => {
    const manager = await createManager();
    const { closed } = defineEndlessDataset(manager);
    const app = new Koa();
    // Koa reports a streamed body cut short by the client (premature close) as an app error.
    const errors: unknown[] = [];
    app.on('error', (error) => errors.push(error));
    app.use(exportMiddleware(manager));
    const url = await start(app);

    const controller = new AbortController();
    const response = await fetch(`${url}/export/stream/endless?format=ndjson`, { signal: controller.signal });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    await reader.read();
    expect(manager.inFlight).toBe(1);
    controller.abort();
    await closed;
    await expect.poll(() => manager.inFlight).toBe(0);
  });
});
