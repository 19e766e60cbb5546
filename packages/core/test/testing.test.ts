import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as testing from '../src/testing/index.js';
import { type Deferred, deferred } from '../src/testing/index.js';

describe('@spark-export/core/testing', () => {
  it('exports the five contract suites, the recording runtime, deferred() and listen(), nothing else', () => {
    expect(Object.keys(testing).sort()).toEqual([
      'RecordingRuntime',
      'deferred',
      'describeExportStorageContract',
      'describeHttpContract',
      'describeJobQueueContract',
      'describeJobStoreContract',
      'describeLimiterContract',
      'listen',
    ]);
  });

  it('imports no optional package up front: ajv, ajv-formats, yaml and prom-client load on demand', async () => {
    const root = fileURLToPath(new URL('../src/testing/', import.meta.url));
    const files = (await readdir(root, { recursive: true })).filter((file) => file.endsWith('.ts'));
    expect(files).toContain(join('http-contract', 'openapi.ts'));
    for (const file of files) {
      const source = await readFile(join(root, file), 'utf8');
      const imports = [...source.matchAll(/^import (?!type )[^;]*? from '([^']+)';/gm)].map((m) => m[1]);
      for (const specifier of imports) {
        expect(specifier, file).not.toMatch(/^(ajv|ajv-formats|yaml|prom-client)(\/|$)/);
      }
    }
  });

  it('deferred() settles when the test says so', async () => {
    const order: string[] = [];
    const gate: Deferred = deferred();
    const waiting = gate.promise.then(() => order.push('opened'));
    await Promise.resolve();
    order.push('before');
    gate.resolve();
    await waiting;
    expect(order).toEqual(['before', 'opened']);

    const value = deferred<number>();
    value.resolve(42);
    await expect(value.promise).resolves.toBe(42);

    const failure = deferred<string>();
    const error = new Error('refused');
    failure.reject(error);
    await expect(failure.promise).rejects.toBe(error);
  });
});
