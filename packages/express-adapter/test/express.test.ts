import { createServer } from 'node:http';
import { createExportRouter } from '@spark-export/express';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, createManager, listen, postJson } from '../../core/test/http.helpers.js';

const servers: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.allSettled(servers.splice(0).map((server) => server.close()));
  await cleanup();
});

async function start(app: express.Express): Promise<string> {
  const server = await listen(createServer(app));
  servers.push(server);
  return server.url;
}

const jobRequest = { dataset: 'numbers', format: 'csv' };

describe.each([
  ['without a body parser', false],
  ['after express.json()', true],
])('createExportRouter %s', (_name, withJsonParser) => {
  async function app(): Promise<string> {
    const manager = await createManager();
    const app = express();
    if (withJsonParser) app.use(express.json());
    app.use('/export', createExportRouter(manager));
    app.get('/host/ping', (_req, res) => {
      res.type('text').send('pong');
    });
    return start(app);
  }

  it('creates a job from a JSON body', async () => {
    const url = await app();
    const response = await postJson(`${url}/export/jobs`, jobRequest);
    expect(response.status).toBe(202);
    const job = (await response.json()) as { id: string; links: { self: string } };
    expect(response.headers.get('location')).toBe(`/export/jobs/${job.id}`);
    expect(job.links.self).toBe(`/export/jobs/${job.id}`);
  });

  it('answers a body that is not JSON with a 415 problem', async () => {
    const url = await app();
    const response = await fetch(`${url}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'dataset=numbers',
    });
    expect(response.status).toBe(415);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
  });

  it('leaves paths outside the prefix to the host', async () => {
    const url = await app();
    const ping = await fetch(`${url}/host/ping`);
    expect(ping.status).toBe(200);
    expect(await ping.text()).toBe('pong');
  });
});

describe('createExportRouter', () => {
  it('answers malformed JSON with a 400 problem when it reads the body itself', async () => {
    const app = express();
    app.use('/export', createExportRouter(await createManager()));
    const url = await start(app);
    const response = await postJson(`${url}/export/jobs`, '{"dataset":');
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ status: 400, code: 'BAD_REQUEST' });
  });

  it('takes its prefix from where it is mounted, links included', async () => {
    const app = express();
    const api = express.Router();
    api.use('/export', createExportRouter(await createManager()));
    app.use('/api', api);
    const url = await start(app);

    const status = await fetch(`${url}/api/export/status`);
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ status: 'ok' });

    const created = await postJson(`${url}/api/export/jobs`, jobRequest);
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string; links: { self: string } };
    expect(job.links.self).toBe(`/api/export/jobs/${job.id}`);
    expect(created.headers.get('location')).toBe(`/api/export/jobs/${job.id}`);

    const fetched = await fetch(`${url}${job.links.self}`);
    expect(fetched.status).toBe(200);

    const unknown = await fetch(`${url}/api/export/nope`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('works mounted directly at a deeper path', async () => {
    const app = express();
    app.use('/api/export', createExportRouter(await createManager()));
    const url = await start(app);
    const created = await postJson(`${url}/api/export/jobs`, jobRequest);
    expect(created.status).toBe(202);
    const job = (await created.json()) as { id: string; links: { self: string } };
    expect(job.links.self).toBe(`/api/export/jobs/${job.id}`);
    expect((await fetch(`${url}/export/status`)).status).toBe(404);
  });

  it('leaves malformed JSON to express.json() when it runs first', async () => {
    const app = express();
    app.use(express.json());
    app.use('/export', createExportRouter(await createManager()));
    const url = await start(app);
    const response = await postJson(`${url}/export/jobs`, '{"dataset":');
    // body-parser's error reaches the host's error handling (here Express's default), not the API.
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).not.toBe('application/problem+json');
  });

  it('defaults to /export when mounted at the root and passes other paths on', async () => {
    const app = express();
    app.use(createExportRouter(await createManager()));
    app.get('/host/ping', (_req, res) => {
      res.send('pong');
    });
    const url = await start(app);
    expect((await fetch(`${url}/export/status`)).status).toBe(200);
    expect(await (await fetch(`${url}/host/ping`)).text()).toBe('pong');
  });

  it('passes requests outside an explicit prefix to next()', async () => {
    const app = express();
    app.use(createExportRouter(await createManager(), { prefix: '/downloads' }));
    app.get('/export/status', (_req, res) => {
      res.send('host');
    });
    const url = await start(app);
    expect((await fetch(`${url}/downloads/status`)).status).toBe(200);
    expect(await (await fetch(`${url}/export/status`)).text()).toBe('host');
  });

  it('streams an export', async () => {
    const app = express();
    app.use('/export', createExportRouter(await createManager()));
    const url = await start(app);
    const response = await fetch(`${url}/export/stream/numbers?format=csv&rows=2`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/csv/);
    expect((await response.text()).split(/\r?\n/).filter(Boolean)).toEqual(['n', '1', '2']);
  });

  it('gives identify the Express request, so owners come from the host auth', async () => {
    const app = express();
    app.use((req, _res, next) => {
      (req as { user?: { id: string } }).user = { id: String(req.get('x-user')) };
      next();
    });
    app.use(
      '/export',
      createExportRouter(await createManager(), {
        identify: (_request, req) => (req as { user?: { id: string } }).user?.id,
      }),
    );
    const url = await start(app);
    const created = await postJson(`${url}/export/jobs`, jobRequest, { 'x-user': 'alice' });
    const job = (await created.json()) as { id: string };
    expect((await fetch(`${url}/export/jobs/${job.id}`, { headers: { 'x-user': 'alice' } })).status).toBe(
      200,
    );
    expect((await fetch(`${url}/export/jobs/${job.id}`, { headers: { 'x-user': 'bob' } })).status).toBe(404);
  });

  it('carries the Express request as request.native, to identify and onError', async () => {
    const hostRequests: express.Request[] = [];
    const seen: unknown[] = [];
    const app = express();
    app.use((req, _res, next) => {
      hostRequests.push(req);
      next();
    });
    app.use(
      '/export',
      createExportRouter(await createManager(), {
        identify: (request, req) => {
          seen.push(request.native, req);
          if (req.get('x-user') === 'crash') throw new Error('session store down');
          return req.get('x-user');
        },
        onError: (_error, request) => seen.push(request.native),
      }),
    );
    const url = await start(app);
    expect((await fetch(`${url}/export/jobs`, { headers: { 'x-user': 'alice' } })).status).toBe(200);
    expect((await fetch(`${url}/export/datasets`, { headers: { 'x-user': 'crash' } })).status).toBe(500);
    expect(hostRequests).toHaveLength(2);
    const [first, second] = hostRequests as [express.Request, express.Request];
    expect(seen).toHaveLength(5);
    for (const [index, native] of seen.entries()) expect(native).toBe(index < 2 ? first : second);
  });

  it('refuses bad options when it is created, not at the first request', async () => {
    const manager = await createManager();
    expect(() => createExportRouter(manager, { maxBodyBytes: 0 })).toThrow(/maxBodyBytes/);
    expect(() => createExportRouter(manager, { prefix: '/api', maxBodyBytes: 0 })).toThrow(/maxBodyBytes/);
  });
});
