import { ExportManager } from '@spark-export/core';
import { createExportRouter } from '@spark-export/express';
import express from 'express';

export function createApp(directory: string) {
  const manager = new ExportManager({ directory, maxConcurrent: 5 });
  manager.defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total' }],
    source: async function* () {
      for (let id = 1; id <= 3; id++) yield { id, total: id * 10 };
    },
  });

  const app = express();
  // The owner of each job comes from your own auth; here a trusted header for brevity.
  app.use('/export', createExportRouter(manager, { identify: (_request, req) => req.get('x-user-id') }));
  // Body parsers for your own routes go after the router, so that the API answers bad bodies
  // sent to it with its own problems (see "Body parsers" below).
  app.use(express.json());
  return { app, manager }; // then your routes, and app.listen(3000)
}
