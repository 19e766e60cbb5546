import { createServer } from 'node:http';
import { exportMiddleware } from '@spark-export/koa';
import Koa from 'koa';
import { listen } from '../../core/test/contract/helpers.js';
import { runContractSuite } from '../../core/test/contract/suite.js';

runContractSuite('koa', async (manager, options) => {
  const app = new Koa();
  // A client that leaves mid-stream is reported by Koa as an app error; the suite checks the
  // export side of it.
  app.silent = true;
  app.use(exportMiddleware(manager, options));
  app.use((ctx) => {
    if (ctx.method === 'GET' && ctx.path === '/host/ping') ctx.body = 'pong';
  });
  return listen(createServer(app.callback()));
});
