import { createServer } from 'node:http';
import { describeHttpContract, listen } from '@spark-export/core/testing';
import { exportMiddleware } from '@spark-export/koa';
import Koa from 'koa';

// The repository's OpenAPI document: the suite also checks every JSON body against it.
const openapi = new URL('../../../docs/openapi.yaml', import.meta.url);

describeHttpContract(
  'koa',
  async (manager, options) => {
    const app = new Koa();
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
