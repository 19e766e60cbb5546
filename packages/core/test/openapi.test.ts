import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Validator } from '@seriousme/openapi-schema-validator';
import { describe, expect, it } from 'vitest';
import { EXPORT_ROUTES } from '../src/http/index.js';
import { loadSchemaCheck } from '../src/testing/http-contract/openapi.js';
import { assertMatchesSchema, loadOpenApiDocument, OPENAPI_URL, schemaNames } from './openapi.helpers.js';

describe('docs/openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(loadOpenApiDocument());
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it('declares every route of the HTTP API and nothing else', () => {
    const paths = loadOpenApiDocument().paths as Record<string, Record<string, unknown>>;
    const operations = Object.entries(paths).flatMap(([path, item]) =>
      Object.keys(item)
        .filter((key) => ['get', 'head', 'post', 'put', 'patch', 'delete', 'options'].includes(key))
        .map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(operations.sort()).toEqual(
      [
        'GET /status',
        'HEAD /status',
        'GET /metrics',
        'HEAD /metrics',
        'GET /datasets',
        'HEAD /datasets',
        'POST /jobs',
        'GET /jobs',
        'HEAD /jobs',
        'GET /jobs/{id}',
        'HEAD /jobs/{id}',
        'DELETE /jobs/{id}',
        'POST /jobs/{id}/cancel',
        'GET /jobs/{id}/download',
        'HEAD /jobs/{id}/download',
        'GET /jobs/{id}/events',
        'HEAD /jobs/{id}/events',
        'GET /stream/{dataset}',
        'HEAD /stream/{dataset}',
      ].sort(),
    );
  });

  it('declares the methods of EXPORT_ROUTES, path by path', () => {
    const paths = loadOpenApiDocument().paths as Record<string, Record<string, unknown>>;
    for (const route of EXPORT_ROUTES) {
      const item = paths[route.path.replace(/:([a-z]+)/g, '{$1}')];
      expect(item, route.path).toBeDefined();
      const declared = Object.keys(item!)
        .filter((key) => ['get', 'head', 'post', 'put', 'patch', 'delete', 'options'].includes(key))
        .map((method) => method.toUpperCase());
      expect(declared.sort(), route.path).toEqual([...route.methods].sort());
    }
  });

  it('compiles every component schema with Ajv (draft 2020-12)', () => {
    expect(schemaNames()).toEqual(
      expect.arrayContaining(['Job', 'JobList', 'Problem', 'Status', 'DatasetList', 'CreateJobRequest']),
    );
  });

  it('rejects bodies that do not match, naming the path', () => {
    expect(() => assertMatchesSchema('Status', { status: 'ok' })).toThrow(/version/);
    expect(() =>
      assertMatchesSchema('Problem', {
        type: 'https://spark-export.dev/problems/not-found',
        title: 'Not Found',
        status: 404,
        detail: 'No such export job',
        code: 'NOT_FOUND',
        stack: 'Error: at /srv/app.js:1',
      }),
    ).toThrow(/additional/);
    expect(() => assertMatchesSchema('Nope', {})).toThrow(/no component schema/);
  });

  it('accepts a create-job request of the documented shape', () => {
    assertMatchesSchema('CreateJobRequest', {
      dataset: 'orders',
      format: 'csv',
      params: { from: '2025-01-01' },
      columns: ['id', 'total'],
      compression: 'gzip',
    });
    expect(() =>
      assertMatchesSchema('CreateJobRequest', { dataset: 'orders', format: 'csv', extra: 1 }),
    ).toThrow();
  });
});

describe('the openapi option of describeHttpContract', () => {
  const status = { status: 'ok', version: '1.0.0', uptimeSeconds: 1, inFlight: 0, queued: 0, limit: 2 };

  it('loads the document from a YAML path, a JSON path or a parsed document', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'spark-export-openapi-'));
    try {
      const jsonPath = join(directory, 'openapi.json');
      await writeFile(jsonPath, JSON.stringify(loadOpenApiDocument()));
      for (const source of [OPENAPI_URL, fileURLToPath(OPENAPI_URL), jsonPath, loadOpenApiDocument()]) {
        const check = await loadSchemaCheck(source);
        expect(() => check('Status', { status: 'ok' }), String(source)).toThrow(/version/);
        expect(() => check('Nope', {})).toThrow(/no component schema/);
      }
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('accepts what the schema accepts', async () => {
    const check = await loadSchemaCheck(loadOpenApiDocument());
    expect(() => assertMatchesSchema('Status', status)).not.toThrow();
    expect(() => check('Status', status)).not.toThrow();
  });
});
