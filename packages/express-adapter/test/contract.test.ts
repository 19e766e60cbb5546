import { createServer } from 'node:http';
import { describeHttpContract, listen } from '@spark-export/core/testing';
import { createExportRouter } from '@spark-export/express';
import express from 'express';

// The repository's OpenAPI document: the suite also checks every JSON body against it.
const openapi = new URL('../../../docs/openapi.yaml', import.meta.url);

describeHttpContract(
  'express',
  async (manager, options) => {
    const app = express();
    app.get('/host/ping', (_req, res) => {
      res.type('text').send('pong');
    });
    app.use('/export', createExportRouter(manager, options));
    return listen(createServer(app));
  },
  { openapi },
);
