// The peer range promises Koa 2 as well as 3: the same contract against a Koa 2 app (`koa2` is
// an npm alias of koa@2 in devDependencies). The adapter imports only Koa's types, so nothing of
// Koa 3 runs here.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { describeHttpContract, listen } from '@spark-export/core/testing';
import { exportMiddleware } from '@spark-export/koa';
import Koa2 from 'koa2';
import { describe, expect, it } from 'vitest';

// The repository's OpenAPI document: the suite also checks every JSON body against it.
const openapi = new URL('../../../docs/openapi.yaml', import.meta.url);

describe('koa 2 setup', () => {
  it('runs Koa 2', () => {
    const { version } = createRequire(import.meta.url)('koa2/package.json') as { version: string };
    expect(version).toMatch(/^2\./);
  });
});

describeHttpContract(
  'koa 2',
  async (manager, options) => {
    const app = new Koa2();
    // A client that leaves mid-stream is reported by Koa as an app error; the suite checks the
    // export side of it.
    app.silent = true;
    app.use(exportMiddleware(manager, options));
    app.use((ctx) => {
      if (ctx.method === 'GET' && ctx.path === '/host/ping') ctx.body = 'pong';
    });
    return listen(createServer(app.callback()));
  },
  { openapi },
);
