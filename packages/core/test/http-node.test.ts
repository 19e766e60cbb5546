import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { ExportError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import {
  attachmentDisposition,
  createDownloadSigner,
  createExportHandler,
  type ExportHttpRequest,
  fromNodeRequest,
  splitUrl,
  toNodeHandler,
} from '../src/http/index.js';
import { signDownloadPath, verifyDownloadSignature } from '../src/http/signing.js';
import { describeHttpContract, listen } from '../src/testing/index.js';
import { assertMatchesSchema, OPENAPI_URL } from './openapi.helpers.js';

describeHttpContract(
  'node:http',
  (manager, options) => {
    const handler = toNodeHandler(createExportHandler(manager, options), {
      onNotFound: (req, res) => {
        if (req.method === 'GET' && req.url === '/host/ping') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('pong');
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        }
      },
    });
    return listen(createServer(handler));
  },
  { openapi: OPENAPI_URL },
);

function request(path: string, init: Partial<ExportHttpRequest> = {}): ExportHttpRequest {
  return {
    method: 'GET',
    path,
    query: new URLSearchParams(),
    headers: {},
    signal: new AbortController().signal,
    native: undefined,
    ...init,
  };
}

describe('createExportHandler', () => {
  it('answers an error that is not the library’s with a generic 500 and reports it', async () => {
    const onError = vi.fn();
    const failure = new Error('connection to db.internal:5432 refused at /srv/app/auth.js:12');
    const manager = new ExportManager({ datasets: { a: { source: () => [] } } });
    const handler = createExportHandler(manager, {
      identify: () => {
        throw failure;
      },
      onError,
    });
    const incoming = request('/export/datasets');
    const response = await handler(incoming);
    expect(response?.status).toBe(500);
    expect(response?.headers['content-type']).toBe('application/problem+json');
    const body = JSON.parse(String(response?.body)) as Record<string, unknown>;
    assertMatchesSchema('Problem', body);
    expect(body).toEqual({
      type: 'https://spark-export.dev/problems/internal',
      title: 'Internal Server Error',
      status: 500,
      detail: 'An internal error occurred',
      code: 'INTERNAL',
    });
    expect(String(response?.body)).not.toMatch(/db\.internal|\/srv|auth\.js/);
    expect(onError).toHaveBeenCalledWith(failure, incoming);
  });

  it('answers an ExportError thrown by identify as such, without reporting it', async () => {
    const onError = vi.fn();
    const manager = new ExportManager({ metrics: false });
    const handler = createExportHandler(manager, {
      identify: () => {
        throw new ExportError('FORBIDDEN', 403, 'Exports are for admins');
      },
      onError,
    });
    const response = await handler(request('/export/jobs'));
    expect(response?.status).toBe(403);
    expect(JSON.parse(String(response?.body))).toMatchObject({
      code: 'FORBIDDEN',
      detail: 'Exports are for admins',
    });
    expect(onError).not.toHaveBeenCalled();
  });

  it('answers job routes of a manager without a directory with 501, not reported as a failure', async () => {
    const onError = vi.fn();
    const manager = new ExportManager({ metrics: false, datasets: { a: { source: () => [] } } });
    expect(manager.jobsEnabled).toBe(false);
    const handler = createExportHandler(manager, { onError });
    const response = await handler(
      request('/export/jobs', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: { dataset: 'a', format: 'csv' },
      }),
    );
    expect(response?.status).toBe(501);
    expect(JSON.parse(String(response?.body))).toMatchObject({ code: 'JOBS_NOT_CONFIGURED' });
    expect(onError).not.toHaveBeenCalled();
  });

  it('returns undefined outside its prefix and honours a custom prefix', async () => {
    const manager = new ExportManager({ metrics: false });
    const handler = createExportHandler(manager, { prefix: '/api/exports/' });
    expect(handler.prefix).toBe('/api/exports');
    expect(await handler(request('/export/status'))).toBeUndefined();
    expect(await handler(request('/api/exportsx'))).toBeUndefined();
    expect((await handler(request('/api/exports/status')))?.status).toBe(200);
  });

  it('answers downloads with X-Accel-Redirect and no body when asked', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const directory = await mkdtemp(join(tmpdir(), 'spark-export-accel-'));
    const manager = new ExportManager({ directory, datasets: { a: { source: () => [{ x: 1 }] } } });
    try {
      const handler = createExportHandler(manager, { accelRedirect: { prefix: '/_files/' } });
      const job = await manager.start({ dataset: 'a', format: 'csv' });
      await manager.wait(job.id);
      const response = await handler(request(`/export/jobs/${job.id}/download`));
      expect(response?.status).toBe(200);
      expect(response?.headers['x-accel-redirect']).toBe(`/_files/${job.id}.csv`);
      expect(response?.headers['content-disposition']).toMatch(/^attachment; filename="a-/);
      expect(response?.body).toBeUndefined();
      // nginx adds its own Accept-Ranges when it sends the file; a second one would be doubled.
      expect(response?.headers['accept-ranges']).toBeUndefined();
    } finally {
      await manager.close();
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('signs links only with a signing secret', () => {
    const manager = new ExportManager({ metrics: false });
    expect(() => createExportHandler(manager).signDownloadUrl('exp_AAAAAAAAAAAAAAAAAAAAAA')).toThrow(
      /signing/,
    );
    expect(() => createExportHandler(manager, { signing: { secret: 'short' } })).toThrow(/at least 16 bytes/);
    const handler = createExportHandler(manager, {
      signing: { secret: 'x'.repeat(32) },
      now: () => 1_000_000,
    });
    expect(handler.signDownloadUrl('exp_AAAAAAAAAAAAAAAAAAAAAA', { owner: 'a b' })).toMatch(
      /^\/export\/jobs\/exp_A{22}\/download\?expires=4600&owner=a\+b&sig=[A-Za-z0-9_-]{43}$/,
    );
  });
});

describe('toNodeHandler', () => {
  it('answers a failing onNotFound with a 500 problem and reports it, to console.error by default', async () => {
    const manager = new ExportManager({ metrics: false });
    const failure = new Error('host route table missing');
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {});
    const reported = vi.fn();
    const servers = [
      createServer(
        toNodeHandler(createExportHandler(manager), {
          onNotFound: () => {
            throw failure;
          },
        }),
      ),
      createServer(
        toNodeHandler(createExportHandler(manager), {
          onNotFound: () => {
            throw failure;
          },
          onError: reported,
        }),
      ),
    ];
    try {
      for (const server of servers) {
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/elsewhere`);
        expect(response.status).toBe(500);
        expect(response.headers.get('content-type')).toBe('application/problem+json');
        await response.arrayBuffer();
      }
      expect(spy).toHaveBeenCalledTimes(1);
      expect(String(spy.mock.calls[0]![0])).toMatch(/GET \/elsewhere/);
      expect(spy.mock.calls[0]![1]).toBe(failure);
      expect(reported).toHaveBeenCalledWith(failure, expect.objectContaining({ url: '/elsewhere' }));
    } finally {
      spy.mockRestore();
      for (const server of servers) {
        server.closeAllConnections();
        server.close();
      }
    }
  });
});

describe('splitUrl', () => {
  it('splits at the first ?, keeping the path percent-encoded', () => {
    const jobs = splitUrl('/export/jobs?status=failed&limit=2');
    expect(jobs.path).toBe('/export/jobs');
    expect([...jobs.query]).toEqual([
      ['status', 'failed'],
      ['limit', '2'],
    ]);
    const encoded = splitUrl('/export/stream/a%2Fb');
    expect(encoded.path).toBe('/export/stream/a%2Fb');
    expect([...encoded.query]).toEqual([]);
    expect(splitUrl('/x?').path).toBe('/x');
    expect(splitUrl('/x?a=1?b').query.get('a')).toBe('1?b');
  });
});

describe('fromNodeRequest', () => {
  it('carries node’s request as native, or options.native, to identify and onError', async () => {
    const seen: { req: IncomingMessage; natives: unknown[] }[] = [];
    const handler = createExportHandler<IncomingMessage>(new ExportManager({ metrics: false }), {
      identify: (request) => {
        seen.at(-1)!.natives.push(request.native);
        throw new Error('auth backend down');
      },
      onError: (_error, request) => seen.at(-1)!.natives.push(request.native),
    });
    const listener = toNodeHandler(handler);
    const marker = { framework: 'own' };
    const server = await listen(
      createServer((req, res) => {
        seen.push({ req, natives: [fromNodeRequest(req, res, { native: marker }).native] });
        listener(req, res);
      }),
    );
    try {
      const response = await fetch(`${server.url}/export/datasets`);
      expect(response.status).toBe(500);
      await response.arrayBuffer();
    } finally {
      await server.close();
    }
    expect(seen).toHaveLength(1);
    const [{ req, natives }] = seen as [(typeof seen)[number]];
    expect(natives).toEqual([marker, req, req]);
    expect(natives[1]).toBe(req);
    expect(natives[2]).toBe(req);
  });
});

describe('attachmentDisposition', () => {
  it('strips CR/LF, quotes, slashes and backslashes and keeps the UTF-8 name apart', () => {
    const header = attachmentDisposition('a"b\r\n/c\\d ü.csv');
    expect(header).toBe(`attachment; filename="abcd u.csv"; filename*=UTF-8''abcd%20%C3%BC.csv`);
    expect(header).not.toMatch(/[\r\n]/);
  });

  it('keeps plain names plain and never gives an empty or hidden name', () => {
    expect(attachmentDisposition('orders 2025.csv')).toBe('attachment; filename="orders 2025.csv"');
    expect(attachmentDisposition('../../.env')).toBe('attachment; filename="env"');
    expect(attachmentDisposition('\r\n')).toBe('attachment; filename="download"');
    // With the export's extension: a name with nothing before it falls back to download.<ext>.
    expect(attachmentDisposition('....csv', '.csv')).toBe('attachment; filename="download.csv"');
    expect(attachmentDisposition(' .csv.gz', '.csv.gz')).toBe('attachment; filename="download.csv.gz"');
    expect(attachmentDisposition('"\r\n".json', '.json')).toBe('attachment; filename="download.json"');
    expect(attachmentDisposition('..a.CSV', '.csv')).toBe('attachment; filename="a.CSV"');
    expect(attachmentDisposition('report.csv', '.csv')).toBe('attachment; filename="report.csv"');
    expect(attachmentDisposition('日本.csv')).toBe(
      `attachment; filename="__.csv"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.csv`,
    );
  });
});

describe('download signatures', () => {
  const secret = 'a-secret-of-enough-length';
  const jobId = 'exp_AAAAAAAAAAAAAAAAAAAAAA';

  it('verifies its own links and tells expired from altered', () => {
    const path = signDownloadPath(secret, { jobId, owner: 'alice', expires: 2000 });
    const query = new URL(path, 'http://x').searchParams;
    const input = {
      jobId,
      owner: query.get('owner'),
      expires: query.get('expires'),
      signature: query.get('sig'),
    };
    expect(verifyDownloadSignature(secret, input, 1_999_999)).toBe('valid');
    expect(verifyDownloadSignature(secret, input, 2_000_000)).toBe('expired');
    expect(verifyDownloadSignature(secret, { ...input, owner: 'bob' }, 0)).toBe('invalid');
    expect(verifyDownloadSignature(secret, { ...input, owner: null }, 0)).toBe('invalid');
    expect(verifyDownloadSignature('another-secret-of-length', input, 0)).toBe('invalid');
    expect(verifyDownloadSignature(secret, { ...input, expires: '2000.5' }, 0)).toBe('invalid');
    // Only the canonical spelling of the same values verifies.
    expect(verifyDownloadSignature(secret, { ...input, expires: '02000' }, 0)).toBe('invalid');
    expect(verifyDownloadSignature(secret, { ...input, signature: `${input.signature}=` }, 0)).toBe(
      'invalid',
    );
    const sig = input.signature!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const swapped = `${sig.slice(0, -1)}${alphabet[alphabet.indexOf(sig.at(-1)!) ^ 1]}`;
    expect(Buffer.from(swapped, 'base64url').equals(Buffer.from(sig, 'base64url'))).toBe(true);
    expect(verifyDownloadSignature(secret, { ...input, signature: swapped }, 0)).toBe('invalid');
    expect(verifyDownloadSignature(secret, { ...input, expires: 2000 }, 1_999_999)).toBe('valid');
    const zero = signDownloadPath(secret, { jobId, expires: 0 });
    const zeroQuery = new URL(zero, 'http://x').searchParams;
    expect(zeroQuery.get('expires')).toBe('0');
    expect(
      verifyDownloadSignature(secret, { jobId, expires: '0', signature: zeroQuery.get('sig') }, -1),
    ).toBe('valid');
  });

  it('signs with a default lifetime from a signer', () => {
    let now = 10_000;
    const signer = createDownloadSigner({ secret, prefix: '/x/', ttlSeconds: 60, now: () => now });
    const path = signer.sign(jobId);
    expect(path.startsWith(`/x/jobs/${jobId}/download?expires=70&sig=`)).toBe(true);
    const query = new URL(path, 'http://x').searchParams;
    const input = { jobId, expires: query.get('expires'), signature: query.get('sig') };
    expect(signer.verify(input)).toBe('valid');
    now = 70_000;
    expect(signer.verify(input)).toBe('expired');
  });
});
