import { exportPlugin } from '@spark-export/fastify';
import Fastify from 'fastify';

export async function createApp(directory: string) {
  const app = Fastify();
  await app.register(exportPlugin, {
    prefix: '/export',
    // The plugin creates the manager, and closes it on app.close().
    managerOptions: { directory, maxConcurrent: 5 },
    // The owner of each job comes from your own auth; here a trusted header for brevity.
    identify: (_request, request) => request.headers['x-user-id']?.toString(),
  });
  app.exportManager.defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total' }],
    source: async function* () {
      for (let id = 1; id <= 3; id++) yield { id, total: id * 10 };
    },
  });
  return app; // then: await app.listen({ port: 3000 })
}
