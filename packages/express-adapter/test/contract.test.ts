import { createServer } from 'node:http';
import { createExportRouter } from '@spark-export/express';
import express from 'express';
import { listen } from '../../core/test/contract/helpers.js';
import { runContractSuite } from '../../core/test/contract/suite.js';

runContractSuite('express', async (manager, options) => {
  const app = express();
  app.get('/host/ping', (_req, res) => {
    res.type('text').send('pong');
  });
  app.use('/export', createExportRouter(manager, options));
  return listen(createServer(app));
});
