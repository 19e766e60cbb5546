// The peer range promises Express 4 as well as 5: the same contract against an Express 4 app
// (`express4` is an npm alias of express@4 in devDependencies). In an Express 4 app the adapter's
// own `import express from 'express'` resolves to Express 4, so its `Router` is Express 4's too:
// the mock gives the adapter that copy rather than the Express 5 of this workspace.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { describeHttpContract, listen } from '@spark-export/core/testing';
import { createExportRouter } from '@spark-export/express';
import express from 'express';
import express4 from 'express4';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, createManager } from '../../core/test/http.helpers.js';

// The repository's OpenAPI document: the suite also checks every JSON body against it.
const openapi = new URL('../../../docs/openapi.yaml', import.meta.url);

vi.mock('express', () => import('express4'));

describe('express 4 setup', () => {
  afterEach(cleanup);

  it("builds the adapter's router with Express 4's Router", async () => {
    const { version } = createRequire(import.meta.url)('express4/package.json') as { version: string };
    expect(version).toMatch(/^4\./);
    expect(express).toBe(express4);
    const router = createExportRouter(await createManager());
    expect(Object.getPrototypeOf(router)).toBe(Object.getPrototypeOf(express4.Router()));
  });
});

describeHttpContract(
  'express 4',
  async (manager, options) => {
    const app = express4();
    app.get('/host/ping', (_req, res) => {
      res.type('text').send('pong');
    });
    app.use('/export', createExportRouter(manager, options));
    return listen(createServer(app));
  },
  { openapi },
);
