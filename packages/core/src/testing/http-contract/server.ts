import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExportManager } from '../../export-manager.js';
import type { ExportRoutesOptions } from '../../http/handler.js';

/** A running server of one adapter, as {@link StartContractServer} returns it. */
export interface ContractServer {
  /** The origin, e.g. `http://127.0.0.1:53412`; the API is mounted at `${url}/export`. */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts a real server on 127.0.0.1, port 0, that mounts the HTTP API of `manager` with
 * `options` (prefix `/export`) and also answers the host route `GET /host/ping` with 200 `pong`
 * outside the prefix.
 */
export type StartContractServer = (
  manager: ExportManager,
  options: ExportRoutesOptions,
) => ContractServer | Promise<ContractServer>;

/**
 * Listens on 127.0.0.1, port 0, and returns the origin and a `close` that also ends kept-alive
 * sockets (so that a test never waits for an idle connection): what a
 * {@link StartContractServer} returns for anything built on `node:http`.
 *
 * @example
 * ```ts
 * describeHttpContract('express', (manager, options) => {
 *   const app = express();
 *   app.use('/export', createExportRouter(manager, options));
 *   return listen(createServer(app));
 * });
 * ```
 */
export async function listen(server: Server): Promise<ContractServer> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}
