import { createGunzip, gzipSync } from 'node:zlib';
import { type ExportManager, isExportError } from '@spark-export/core';
import { exportFrameworkErrors, exportPlugin } from '@spark-export/fastify';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import {
  cleanup,
  createManager,
  defineEndlessDataset,
  postJson,
  tempDir,
} from '../../core/test/http.helpers.js';

const apps: FastifyInstance[] = [];

afterEach(async () => {
  // fetch (undici) may leave a fresh idle connection behind an aborted one; close() would wait for it.
  await Promise.allSettled(
    apps.splice(0).map((app) => {
      const closing = app.close();
      app.server.closeAllConnections();
      return closing;
    }),
  );
  await cleanup();
});

async function start(app: FastifyInstance): Promise<string> {
  apps.push(app);
  return app.listen({ port: 0, host: '127.0.0.1' });
}

async function createApp(manager?: ExportManager): Promise<FastifyInstance> {
  const app = Fastify();
  await app.register(exportPlugin, { manager: manager ?? (await createManager()) });
  return app;
}

const jobRequest = { dataset: 'numbers', format: 'csv' };

describe('exportPlugin', () => {
  it('registers one Fastify route per API path', async () => {
    const app = Fastify();
    await app.register(exportPlugin, { manager: await createManager(), metrics: true });
    await app.ready();
    const routes = app.printRoutes({ commonPrefix: false });
    for (const route of [
      '/export (',
      '/status (GET, HEAD)',
      '/datasets (GET, HEAD)',
      '/metrics (GET, HEAD)',
      '/jobs (GET, HEAD, POST)',
      '/:id (GET, HEAD, DELETE)',
      '/download (GET, HEAD)',
      '/stream/:dataset (GET, HEAD)',
      '* (',
    ]) {
      expect(routes).toContain(route);
    }
    expect(app.hasRoute({ method: 'POST', url: '/export/jobs' })).toBe(true);
    expect(app.hasRoute({ method: 'DELETE', url: '/export/jobs/:id' })).toBe(true);
    expect(app.hasRoute({ method: 'POST', url: '/export/jobs/:id/cancel' })).toBe(true);
    await app.close();
    // Metrics are off by default: no route for them.
    const quiet = await createApp();
    await quiet.ready();
    expect(quiet.hasRoute({ method: 'GET', url: '/export/metrics' })).toBe(false);
    await quiet.close();
  });

  it('answers methods Fastify does not route with the core 405 under its prefix only, leaving the host 404 alone', async () => {
    const app = Fastify();
    app.setNotFoundHandler((_request, reply) => reply.code(404).type('text/plain').send('host 404'));
    await app.register(
      async (api) => {
        await api.register(exportPlugin, { manager: await createManager() });
      },
      { prefix: '/api' },
    );
    const url = await start(app);
    const status = await fetch(`${url}/api/export/status`, { method: 'PROPFIND' });
    expect(status.status).toBe(405);
    expect(status.headers.get('allow')).toBe('GET, HEAD');
    expect(status.headers.get('content-type')).toBe('application/problem+json');
    await status.arrayBuffer();
    const unknown = await fetch(`${url}/api/export/nope`, { method: 'MKCOL' });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { code: string }).code).toBe('NOT_FOUND');
    for (const path of ['/api/other', '/elsewhere', '/api/exportx']) {
      const host = await fetch(`${url}${path}`, { method: 'PROPFIND' });
      expect(host.status, path).toBe(404);
      expect(await host.text(), path).toBe('host 404');
    }
  });

  it('runs the host hooks for export routes', async () => {
    const app = Fastify();
    const seen: string[] = [];
    app.addHook('onRequest', async (request) => {
      seen.push(`${request.method} ${request.routeOptions.url}`);
    });
    await app.register(exportPlugin, { manager: await createManager() });
    const url = await start(app);
    expect((await fetch(`${url}/export/status`)).status).toBe(200);
    expect((await postJson(`${url}/export/jobs`, jobRequest)).status).toBe(202);
    expect(seen).toEqual(['GET /export/status', 'POST /export/jobs']);
  });

  it('lets a host onRequest hook turn a request away before the core sees it', async () => {
    const app = Fastify();
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers.authorization !== 'Bearer ok') return reply.code(401).send({ error: 'no' });
    });
    await app.register(exportPlugin, { manager: await createManager() });
    const url = await start(app);
    expect((await fetch(`${url}/export/datasets`)).status).toBe(401);
    expect((await fetch(`${url}/export/datasets`, { headers: { authorization: 'Bearer ok' } })).status).toBe(
      200,
    );
  });

  it('decorates the app with the manager it was given, and leaves it open on close', async () => {
    const manager = await createManager();
    const app = await createApp(manager);
    expect(app.exportManager).toBe(manager);
    await app.close();
    expect(manager.closing).toBe(false);
  });

  it('creates a manager from managerOptions and closes it on app.close()', async () => {
    const app = Fastify();
    await app.register(exportPlugin, { managerOptions: { directory: await tempDir(), metrics: false } });
    const manager = app.exportManager;
    app.exportManager.defineDataset('numbers', { source: () => [{ n: 1 }] });
    const url = await start(app);
    expect((await postJson(`${url}/export/jobs`, jobRequest)).status).toBe(202);
    expect(manager.closing).toBe(false);
    await app.close();
    expect(manager.closing).toBe(true);
  });

  it('refuses options with neither or both of manager and managerOptions', async () => {
    const neither = Fastify();
    // @ts-expect-error -- one of manager and managerOptions is required
    await expect(neither.register(exportPlugin, {}).ready()).rejects.toThrow(/got neither/);
    const both = Fastify();
    const manager = await createManager();
    // @ts-expect-error -- only one of them
    await expect(both.register(exportPlugin, { manager, managerOptions: {} }).ready()).rejects.toThrow(
      /got both/,
    );
  });

  it('keeps the host JSON parser, body limit and 415 for the host routes', async () => {
    const app = Fastify({ bodyLimit: 100 });
    app.post('/host/echo', async (request) => request.body);
    await app.register(exportPlugin, { manager: await createManager() });
    const url = await start(app);

    const echo = await postJson(`${url}/host/echo`, { x: 1 });
    expect(echo.status).toBe(200);
    expect(await echo.json()).toEqual({ x: 1 });
    const text = await fetch(`${url}/host/echo`, {
      method: 'POST',
      headers: { 'content-type': 'text/csv' },
      body: 'a',
    });
    expect(text.status).toBe(415);
    expect(await text.json()).toMatchObject({ code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' });
    const large = await postJson(`${url}/host/echo`, { x: 'y'.repeat(200) });
    expect(large.status).toBe(413);
    expect(await large.json()).toMatchObject({ code: 'FST_ERR_CTP_BODY_TOO_LARGE' });

    // ...while the export API reads its own bodies, over Fastify's bodyLimit of 100 bytes.
    const job = await postJson(`${url}/export/jobs`, { ...jobRequest, filename: 'f'.repeat(120) });
    expect(job.status).toBe(202);
  });

  it.each([
    ['a text/plain body', 'text/plain', 'dataset=numbers', 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['an invalid Content-Type', 'not a media type', 'dataset=numbers', 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['malformed JSON', 'application/json', '{"dataset":', 400, 'BAD_REQUEST'],
    ['an empty JSON body', 'application/json', '', 400, 'BAD_REQUEST'],
    [
      'a body over maxBodyBytes',
      'application/json',
      JSON.stringify({ ...jobRequest, filename: 'x'.repeat(70_000) }),
      413,
      'PAYLOAD_TOO_LARGE',
    ],
  ])('answers %s with a problem like the other adapters', async (_name, type, body, status, code) => {
    const app = await createApp();
    const url = await start(app);
    const response = await fetch(`${url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': type },
      body,
    });
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ status, code });
  });

  it('reads the body stream a preParsing hook swapped in', async () => {
    const app = Fastify();
    app.addHook('preParsing', async (request, _reply, payload) =>
      request.headers['content-encoding'] === 'gzip' ? payload.pipe(createGunzip()) : payload,
    );
    await app.register(exportPlugin, { manager: await createManager() });
    const url = await start(app);
    const response = await fetch(`${url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify(jobRequest)),
    });
    expect(response.status).toBe(202);
  });

  it('answers unknown paths and methods under the prefix as problems', async () => {
    const url = await start(await createApp());
    const unknown = await fetch(`${url}/export/nope`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: 'NOT_FOUND' });
    const method = await fetch(`${url}/export/status`, { method: 'PUT' });
    expect(method.status).toBe(405);
    expect(method.headers.get('allow')).toBe('GET, HEAD');
  });

  it('answers malformed percent-encoding under its prefix as a problem with exportFrameworkErrors()', async () => {
    const plain = await createApp();
    const plainUrl = await start(plain);
    // Without the option, Fastify's router answers before any plugin runs.
    expect((await fetch(`${plainUrl}/export/jobs/%E0%A4%A`)).status).toBe(400);

    const app = Fastify({ frameworkErrors: exportFrameworkErrors() });
    await app.register(exportPlugin, { manager: await createManager() });
    app.get('/host/:name', async () => 'host');
    const url = await start(app);
    const problem = await fetch(`${url}/export/jobs/%E0%A4%A`);
    expect(problem.status).toBe(404);
    expect(problem.headers.get('content-type')).toBe('application/problem+json');
    expect(await problem.json()).toMatchObject({ code: 'NOT_FOUND' });
    // Outside the prefix Fastify's answer stays.
    const host = await fetch(`${url}/host/%E0%A4%A`);
    expect(host.status).toBe(400);
    expect(await host.json()).toMatchObject({ code: 'FST_ERR_BAD_URL' });
  });

  it('mounts under its prefix inside a prefixed context, links included', async () => {
    const app = Fastify();
    const manager = await createManager();
    await app.register(
      async (api) => {
        await api.register(exportPlugin, { manager, prefix: '/exports' });
      },
      { prefix: '/api' },
    );
    const url = await start(app);
    const created = await postJson(`${url}/api/exports/jobs`, jobRequest);
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string; links: { self: string } };
    expect(job.links.self).toBe(`/api/exports/jobs/${job.id}`);
    expect((await fetch(`${url}${job.links.self}`)).status).toBe(200);
  });

  it('passes failures that are not answered by the core to the host error handler', async () => {
    const app = Fastify();
    const errors: unknown[] = [];
    app.setErrorHandler((error, _request, reply) => {
      errors.push(error);
      return reply.code(418).send({ host: true });
    });
    app.addHook('preHandler', async (request) => {
      if (request.headers['x-fail']) throw new Error('host hook failed');
    });
    await app.register(exportPlugin, { manager: await createManager() });
    const url = await start(app);
    const response = await fetch(`${url}/export/status`, { headers: { 'x-fail': '1' } });
    expect(response.status).toBe(418);
    expect(errors).toHaveLength(1);
    expect(isExportError(errors[0])).toBe(false);
  });

  it('carries the Fastify request as request.native, to identify and onError', async () => {
    const requests: FastifyRequest[] = [];
    const seen: unknown[] = [];
    const app = Fastify();
    app.addHook('onRequest', async (request) => {
      requests.push(request);
    });
    await app.register(exportPlugin, {
      manager: await createManager(),
      identify: (request, fastifyRequest) => {
        seen.push(request.native, fastifyRequest);
        const user = fastifyRequest.headers['x-user'];
        if (user === 'crash') throw new Error('session store down');
        return typeof user === 'string' ? user : undefined;
      },
      onError: (_error, request) => seen.push(request.native),
    });
    const url = await start(app);
    expect((await fetch(`${url}/export/jobs`, { headers: { 'x-user': 'alice' } })).status).toBe(200);
    expect((await fetch(`${url}/export/datasets`, { headers: { 'x-user': 'crash' } })).status).toBe(500);
    expect(requests).toHaveLength(2);
    const [first, second] = requests as [FastifyRequest, FastifyRequest];
    expect(seen).toHaveLength(5);
    for (const [index, native] of seen.entries()) expect(native).toBe(index < 2 ? first : second);
  });

  it('streams an export, and a client that leaves aborts it and frees its slot', async () => {
    const manager = await createManager();
    const { closed } = defineEndlessDataset(manager);
    const reported: unknown[] = [];
    manager.on('http:error', (error) => reported.push(error));
    const url = await start(await createApp(manager));
    const controller = new AbortController();
    const response = await fetch(`${url}/export/stream/endless?format=ndjson`, { signal: controller.signal });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/ndjson/);
    await response.body!.getReader().read();
    expect(manager.inFlight).toBe(1);
    controller.abort();
    await closed;
    await expect.poll(() => manager.inFlight).toBe(0);
    // Fastify destroys the body with an AbortError then: a client that left, not a failure.
    expect(reported).toEqual([]);
  });
});
