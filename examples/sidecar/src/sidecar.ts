import type { AddressInfo } from 'node:net';
import { ExportManager } from '@spark-export/core';
import { exportFrameworkErrors, exportPlugin } from '@spark-export/fastify';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { createIdentify } from './auth.js';
import { type Backends, createBackends } from './backends.js';
import { type LoadedConfig, loadConfig } from './config.js';
import { type BuiltDatasets, buildDatasets, withDatasetProblems } from './datasets.js';
import { parseEnv, type SidecarSettings } from './env.js';
import { indexDocument } from './index-document.js';
import { createLogger, type Logger, logHttpFailure, logManagerEvents } from './logging.js';
import { registerUi } from './ui.js';

export { ConfigError, type LoadedConfig, loadConfig, type SidecarConfig, validateConfig } from './config.js';
export { parseEnv, type SidecarSettings } from './env.js';

/** Where the API is mounted; nginx sends `/export/*` here. */
export const PREFIX = '/export';

export interface StartSidecarOptions {
  settings: SidecarSettings;
  config: LoadedConfig;
  logger: Logger;
  /** For `${NAME}` in http-json headers, and the AWS credentials. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** How often a configured S3 bucket is probed while the sidecar runs. @default 5000 */
  backendHealthIntervalMs?: number;
}

export interface Sidecar {
  app: FastifyInstance;
  manager: ExportManager;
  /** The registry behind `/export/metrics`: export metrics plus (by default) process metrics. */
  registry: Registry;
  /** The origin clients use, e.g. `http://127.0.0.1:4001`. */
  origin: string;
  settings: SidecarSettings;
  config: LoadedConfig;
  datasets: BuiltDatasets;
  /** Where the limit, the job records and the files live (directory mode, or Redis and S3). */
  backends: Backends;
  /**
   * Graceful stop: `/export/status` turns 503 `draining` and new exports get 503 at once;
   * running exports get `drainTimeoutMs` to finish; then the server closes. Safe to call twice.
   */
  close(): Promise<void>;
}

/** Reads the environment and the configuration the way `npm start` does. */
export async function loadSidecarSetup(
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): Promise<{ settings: SidecarSettings; config: LoadedConfig }> {
  const settings = parseEnv(env, cwd);
  try {
    const config = await loadConfig({ path: settings.configPath, cwd });
    return { settings, config };
  } catch (error) {
    throw await withDatasetProblems(error, {
      databaseUrl: settings.databaseUrl,
      env,
      poolSize: 1,
    });
  }
}

/**
 * Starts the sidecar: datasets from the config (seeding the demo database when asked), an
 * ExportManager over `EXPORT_DIR`, the Fastify plugin of `@spark-export/fastify` on `/export`,
 * listening on `HOST:PORT`.
 *
 * @throws {ConfigError} when a dataset cannot work (bad query, file outside the roots...)
 */
export async function startSidecar(options: StartSidecarOptions): Promise<Sidecar> {
  const { settings, config, logger } = options;
  const datasets = buildDatasets(config, {
    databaseUrl: settings.databaseUrl,
    env: options.env ?? process.env,
    poolSize: settings.maxConcurrent,
    onSeeded: (file, durationMs) =>
      logger.info(
        {
          event: 'demo:seeded',
          file,
          orders: config.config.demo?.orders,
          durationMs: Math.round(durationMs),
        },
        'seeded the demo database',
      ),
  });

  const registry = new Registry();
  if (settings.processMetrics) {
    collectDefaultMetrics({ register: registry });
    // Gauges named like counters: `promtool check metrics` flags them, and each is only the
    // sum of its labelled twin (nodejs_active_handles by type, etc.), so nothing is lost.
    for (const name of [
      'nodejs_active_handles_total',
      'nodejs_active_requests_total',
      'nodejs_active_resources_total',
    ])
      registry.removeSingleMetric(name);
  }
  let backends: Backends;
  try {
    backends = await createBackends(settings, config.config, {
      logger,
      registry,
      env: options.env ?? process.env,
      ...(options.backendHealthIntervalMs === undefined
        ? {}
        : { healthIntervalMs: options.backendHealthIntervalMs }),
    });
  } catch (error) {
    await datasets.close();
    throw error;
  }
  const retentionMs =
    settings.retentionHours > 0 ? Math.round(settings.retentionHours * 3_600_000) : undefined;
  const manager = new ExportManager({
    datasets: datasets.datasets,
    ...backends.managerOptions,
    maxQueued: settings.maxQueued,
    timeZone: settings.timeZone,
    ...(settings.queueTimeoutMs === undefined ? {} : { queueTimeoutMs: settings.queueTimeoutMs }),
    metrics: { registry },
    ...(retentionMs === undefined && settings.maxTotalBytes === undefined
      ? {}
      : {
          retention: {
            ...(retentionMs === undefined ? {} : { maxAgeMs: retentionMs }),
            ...(settings.maxTotalBytes === undefined ? {} : { maxTotalBytes: settings.maxTotalBytes }),
          },
        }),
    ...(settings.webhookUrl === undefined || settings.webhookSecrets === undefined
      ? {}
      : {
          webhooks: {
            endpoints: [{ name: 'default', url: settings.webhookUrl, secrets: settings.webhookSecrets }],
            timeoutMs: settings.webhookTimeoutMs,
            initialBackoffMs: settings.webhookBackoffMs,
            // Paths under the API's prefix: the receiver knows the public origin (nginx's).
            links: {
              prefix: PREFIX,
              ...(settings.signingSecret === undefined
                ? {}
                : { signing: { secret: settings.signingSecret } }),
            },
          },
        }),
  });
  logManagerEvents(manager, logger);
  try {
    await manager.ready;
  } catch (error) {
    await manager.close({ drainTimeoutMs: 0 }).catch(() => {});
    await backends.close();
    await datasets.close();
    throw error;
  }

  const httpLog = logger.child({ component: 'http' });
  const app = Fastify({
    loggerInstance: httpLog,
    // Fastify's per-request lines would be two per /status probe; rejections are logged below.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: 'idle',
    // A URL Fastify's router cannot decode (`/export/jobs/%E0%A4%A`) gets the library's
    // problem+json 404 like every other bad path, not Fastify's own FST_ERR_BAD_URL body.
    frameworkErrors: exportFrameworkErrors(),
  });
  // One line per turned-away request (4xx). 429s are logged with their reason by the
  // manager's `rejected` event; 5xx where they happen (`onError` below, or Fastify's own error
  // logging for a host failure), once and at the level they deserve.
  app.addHook('onResponse', async (request, reply) => {
    const status = reply.statusCode;
    if (status < 400 || status === 429 || status >= 500) return;
    httpLog.info(
      { event: 'http:rejected', method: request.method, path: request.url.split('?')[0], status },
      'request rejected',
    );
  });
  // The banner's URL: answered before the plugin's catch-all, which would call it a 404.
  // Open like /status: it holds links, no data.
  const index = JSON.stringify(indexDocument(PREFIX, { ui: settings.ui }));
  app.addHook('onRequest', async (request, reply) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') return;
    const path = request.url.split('?')[0];
    if (path !== PREFIX && path !== `${PREFIX}/`) return;
    return reply.code(200).type('application/json').header('cache-control', 'no-store').send(index);
  });
  // A shared backend that is down: new work is answered 503 here, before it takes a slot, and
  // /export/status says which backend and turns 503, so that load balancers and probes see it.
  app.addHook('onRequest', async (request, reply) => {
    const blocked = backendBlocking(backends, request.method, request.url.split('?')[0]!);
    if (blocked === undefined) return;
    return reply
      .code(503)
      .type('application/problem+json')
      .header('retry-after', String(BACKEND_RETRY_AFTER_SECONDS))
      .header('cache-control', 'no-store')
      .send(
        // A Buffer, as the plugin sends its problems: Fastify adds a charset to a string.
        Buffer.from(
          JSON.stringify({
            type: 'https://spark-export.dev/problems/backend-unavailable',
            title: 'Service Unavailable',
            status: 503,
            detail: `${blocked} cannot be reached; retry later`,
            code: 'BACKEND_UNAVAILABLE',
            retryAfterSeconds: BACKEND_RETRY_AFTER_SECONDS,
          }),
        ),
      );
  });
  if (backends.states().length > 0) {
    app.addHook('onSend', async (request, reply, payload) => {
      if (request.url.split('?')[0] !== `${PREFIX}/status`) return payload;
      const blocked = reply.statusCode === 200 && backends.jobsBlocked();
      if (request.method === 'HEAD') {
        if (blocked) reply.code(503);
        return payload;
      }
      // The plugin sends the handler's JSON as a Buffer, with its Content-Length.
      if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) return payload;
      const status = JSON.parse(payload.toString()) as Record<string, unknown>;
      const states = backends.states();
      status.backends = Object.fromEntries(
        states.map((state) => [
          state.name,
          {
            status: state.up ? 'up' : 'down',
            target: state.target,
            since: new Date(state.since).toISOString(),
            ...(state.error === undefined ? {} : { error: state.error }),
          },
        ]),
      );
      if (blocked) {
        reply.code(503);
        status.status = 'unavailable';
      }
      const body = Buffer.from(JSON.stringify(status));
      reply.header('content-length', String(body.length));
      return body;
    });
  }
  if (settings.apiToken !== undefined) {
    app.addHook('onSend', async (_request, reply, payload) => {
      if (reply.statusCode === 401) reply.header('www-authenticate', 'Bearer realm="spark-export"');
      return payload;
    });
  }
  // The exports page: static files under the prefix, answered before the plugin's catch-all.
  if (settings.ui) {
    await registerUi(app as unknown as FastifyInstance, {
      prefix: PREFIX,
      bearer: settings.apiToken !== undefined,
      ownerHeader: settings.ownerHeader,
    });
  }
  await app.register(exportPlugin, {
    manager,
    prefix: PREFIX,
    metrics: true,
    eventStreams: { maxPerOwner: settings.eventStreamsPerOwner },
    identify: createIdentify({ apiToken: settings.apiToken, ownerHeader: settings.ownerHeader }),
    ...(settings.signingSecret === undefined ? {} : { signing: { secret: settings.signingSecret } }),
    ...(settings.accelRedirectPrefix === undefined
      ? {}
      : { accelRedirect: { prefix: settings.accelRedirectPrefix } }),
    onError: (error, request) => logHttpFailure(httpLog, error, request),
  });

  try {
    await app.listen({ port: settings.port, host: settings.host });
  } catch (error) {
    await manager.close({ drainTimeoutMs: 0 });
    await app.close();
    await backends.close();
    await datasets.close();
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const origin = `http://${displayHost(settings.host)}:${address.port}`;
  logger.info(
    {
      event: 'listening',
      url: `${origin}${PREFIX}`,
      config: config.file ?? 'built-in demo',
      datasets: Object.keys(datasets.datasets),
      exportDir: settings.exportDir,
      backends: backends.mode,
      maxConcurrent: settings.maxConcurrent,
      maxQueued: settings.maxQueued,
      auth: settings.apiToken === undefined ? 'none' : 'bearer',
      ownerHeader: settings.ownerHeader ?? null,
      accelRedirectPrefix: settings.accelRedirectPrefix ?? null,
      // The origin only: a URL's path or query may carry a token.
      webhooks: settings.webhookUrl === undefined ? null : new URL(settings.webhookUrl).origin,
      ui: settings.ui ? `${origin}${PREFIX}/ui` : null,
    },
    'spark-export sidecar listening',
  );

  let closing: Promise<void> | undefined;
  return {
    // Typed with the default logger so that callers need no pino types.
    app: app as unknown as FastifyInstance,
    manager,
    registry,
    origin,
    settings,
    config,
    datasets,
    backends,
    close() {
      closing ??= (async () => {
        logger.info(
          {
            event: 'draining',
            inFlight: manager.inFlight,
            queued: manager.queued,
            drainTimeoutMs: settings.drainTimeoutMs,
          },
          'draining: refusing new exports, letting running ones finish',
        );
        await manager.close({ drainTimeoutMs: settings.drainTimeoutMs });
        await app.close();
        await backends.close();
        await datasets.close();
        logger.info({ event: 'stopped' }, 'stopped');
      })();
      return closing;
    },
  };
}

/** What a client should wait before it tries again while a backend is down. */
const BACKEND_RETRY_AFTER_SECONDS = 5;

/**
 * The backend (by name, for the problem's detail) that keeps this request from working, or
 * `undefined`: a new job needs Redis and S3, a stream the Redis of the limiter. Reads
 * (status, job lists, downloads) go on and fail on their own if they must.
 */
function backendBlocking(backends: Backends, method: string, path: string): string | undefined {
  const down = (names: readonly string[]) =>
    backends
      .states()
      .filter((state) => !state.up && names.includes(state.name))
      .map((state) => (state.name === 'redis' ? 'Redis' : 'S3'))
      .join(' and ') || undefined;
  if (method === 'POST' && (path === `${PREFIX}/jobs` || path === `${PREFIX}/jobs/`)) {
    return backends.jobsBlocked() ? down(['redis', 's3']) : undefined;
  }
  if ((method === 'GET' || method === 'HEAD') && path.startsWith(`${PREFIX}/stream/`)) {
    return backends.streamsBlocked() ? down(['redis']) : undefined;
  }
  return undefined;
}

/** A wildcard address is not something to paste into a browser. */
function displayHost(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

export { createLogger };
