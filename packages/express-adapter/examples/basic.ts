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
  app.use(express.json()); // optional: without it the router reads the body itself
  // The owner of each job comes from your own auth; here a trusted header for brevity.
  app.use('/export', createExportRouter(manager, { identify: (_request, req) => req.get('x-user-id') }));
  return { app, manager }; // then: app.listen(3000)
}
