import { describeHttpContract } from '@spark-export/core/testing';
import { exportFrameworkErrors, exportPlugin } from '@spark-export/fastify';
import Fastify from 'fastify';

// The repository's OpenAPI document: the suite also checks every JSON body against it.
const openapi = new URL('../../../docs/openapi.yaml', import.meta.url);

describeHttpContract(
  'fastify',
  async (manager, options) => {
    // Fastify's router refuses malformed percent-encoding before any plugin runs: the option lets
    // the plugin answer those URLs under its prefix like the other adapters (a 404 problem).
    const app = Fastify({ frameworkErrors: exportFrameworkErrors() });
    app.get('/host/ping', async (_request, reply) => reply.type('text/plain').send('pong'));
    await app.register(exportPlugin, { ...options, manager });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url,
      close: async () => {
        const closing = app.close();
        app.server.closeAllConnections();
        await closing;
      },
    };
  },
  { openapi },
);
