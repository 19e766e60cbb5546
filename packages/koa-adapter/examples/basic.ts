import { ExportManager } from '@spark-export/core';
import { exportMiddleware } from '@spark-export/koa';
import Koa from 'koa';

export function createApp(directory: string) {
  const manager = new ExportManager({ directory, maxConcurrent: 5 });
  manager.defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total' }],
    source: async function* () {
      for (let id = 1; id <= 3; id++) yield { id, total: id * 10 };
    },
  });

  const app = new Koa();
  // The owner of each job comes from your own auth; here a trusted header for brevity.
  app.use(exportMiddleware(manager, { identify: (_request, ctx) => ctx.get('x-user-id') || undefined }));
  app.use((ctx) => {
    ctx.body = 'the rest of your app'; // every path outside /export
  });
  return { app, manager }; // then: app.listen(3000)
}
