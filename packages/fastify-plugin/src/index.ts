import type { Readable } from 'node:stream';
import { ExportManager, type ExportManagerOptions } from '@spark-export/core';
import {
  createExportHandler,
  EXPORT_ROUTES,
  type ExportHttpRequest,
  type ExportHttpResponse,
  type ExportRoutesOptions,
  fromNodeRequest,
} from '@spark-export/core/http';
import type {
  FastifyError,
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  HTTPMethods,
} from 'fastify';
import fp from 'fastify-plugin';

declare module 'fastify' {
  interface FastifyInstance {
    /** The {@link ExportManager} behind the `/export/*` routes of `@spark-export/fastify`. */
    exportManager: ExportManager;
  }
}

interface ExportPluginBaseOptions extends Omit<ExportRoutesOptions<FastifyRequest>, 'identify'> {
  /**
   * Who is asking: the owner of the jobs the request may see. Gets the neutral request (whose
   * `native` is the Fastify request) and the Fastify request again, so that `request.user`
   * (@fastify/jwt) can be read. Throw an `ExportError` with status 401/403 to turn the request
   * away.
   * @default every request is anonymous: all callers share the jobs
   * @example
   * ```ts
   * identify: (_request, request) => request.user?.sub
   * ```
   */
  identify?(
    request: ExportHttpRequest<FastifyRequest>,
    fastifyRequest: FastifyRequest,
  ): string | undefined | Promise<string | undefined>;
  /**
   * How long `app.close()` lets running exports finish before interrupting them; only for a
   * manager the plugin created.
   * @default 30000
   */
  drainTimeoutMs?: number;
}

/**
 * Options of {@link exportPlugin}: either a `manager` you own (and close), or `managerOptions`
 * for a manager the plugin creates and closes on `app.close()`. Plus the core's route options;
 * `prefix` (default `/export`) is where the API is mounted, under the prefix of the context
 * the plugin is registered in.
 */
export type ExportPluginOptions = ExportPluginBaseOptions &
  (
    | { manager: ExportManager; managerOptions?: undefined }
    | { managerOptions: ExportManagerOptions; manager?: undefined }
  );

const exportPluginAsync: FastifyPluginAsync<ExportPluginOptions> = async (fastify, options) => {
  const {
    manager: given,
    managerOptions,
    identify,
    drainTimeoutMs,
    prefix = '/export',
    ...routeOptions
  } = options;
  if ((given === undefined) === (managerOptions === undefined)) {
    throw new TypeError(
      `Expected exactly one of options.manager (an ExportManager) and options.managerOptions, got ${
        given === undefined ? 'neither' : 'both'
      }`,
    );
  }
  // Duck-typed rather than `instanceof`: a second copy of the core package is still a manager.
  if (given !== undefined && (typeof given.start !== 'function' || typeof given.close !== 'function')) {
    throw new TypeError(`Expected options.manager to be an ExportManager, got ${typeof given}`);
  }
  const manager = given ?? new ExportManager(managerOptions);
  if (!given) {
    fastify.addHook('onClose', async () => {
      await manager.close(drainTimeoutMs === undefined ? {} : { drainTimeoutMs });
    });
    try {
      await manager.ready;
    } catch (error) {
      await manager.close({ drainTimeoutMs: 0 });
      throw error;
    }
  }
  fastify.decorate('exportManager', manager);

  // The routes live in a child context so that its content-type parsers stay ours: the host's
  // JSON parser, body limit and 415 keep working for its own routes.
  await fastify.register(async (child: FastifyInstance) => {
    const base = normalize(prefix);
    const handler = createExportHandler<FastifyRequest>(manager, {
      ...routeOptions,
      // `child.prefix` is the prefix of the context the plugin was registered in.
      prefix: `${child.prefix}${base}`,
      ...(identify ? { identify: (request) => identify(request, request.native) } : {}),
    });
    const bodies = new WeakMap<FastifyRequest, Readable>();

    /** Sends the core's answer, or returns `undefined` for a path outside the prefix. */
    const serve = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
      const response = await handler(toNeutral(request, reply, bodies.get(request)));
      return response === undefined ? undefined : send(reply, response);
    };
    const answer = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const sent = await serve(request, reply);
      if (sent) return sent;
      // Only when the host rewrote the URL outside the prefix; let Fastify answer its 404.
      reply.callNotFound();
      return reply;
    };
    addBadUrlHandler(fastify.server, serve);

    // Fastify's own parsers would answer bad JSON, large bodies and unknown types with its own
    // errors; the core reads the raw body itself and answers them as problems instead.
    child.removeAllContentTypeParsers();
    child.addContentTypeParser('*', (request, payload, done) => {
      bodies.set(request, payload);
      done(null);
    });
    child.setErrorHandler((error: FastifyError, request, reply) => {
      // A Content-Type Fastify cannot even parse is refused before any parser runs.
      if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return answer(request, reply);
      // Anything else (a host hook, a failure around the handler) is the host's to answer.
      throw error;
    });

    // Each route of the core on its own, so that it shows in `printRoutes()` and carries its
    // own hooks; every other method and path under the prefix goes to the catch-alls, where
    // the core answers 404/405 problems like in the other adapters.
    for (const route of EXPORT_ROUTES) {
      if (route.name === 'metrics' && routeOptions.metrics !== true) continue;
      child.route({ method: route.methods as HTTPMethods[], url: `${base}${route.path}`, handler: answer });
    }
    child.all(base === '' ? '/' : base, answer);
    child.all(`${base}/*`, answer);
    // `all` only covers the methods Fastify routes (GET, POST, ...). Any other (PROPFIND,
    // MKCOL) goes to the not-found handler of the path's prefix: one scoped to the API's prefix
    // lets the core answer 405 with Allow (or its 404) there too, without touching the host's
    // 404 elsewhere. At an empty prefix that handler would be the host's own: left alone.
    if (base !== '') {
      await child.register(
        async (scoped: FastifyInstance) => {
          scoped.setNotFoundHandler(async (request, reply) => {
            // Never undefined under the prefix; answered as Fastify would, not by a loop back here.
            const sent = await serve(request, reply);
            return sent ?? reply.code(404).send({ error: 'Not Found', statusCode: 404 });
          });
        },
        { prefix: base },
      );
    }
  });
};

function toNeutral(
  request: FastifyRequest,
  reply: FastifyReply,
  bodyStream: Readable | undefined,
): ExportHttpRequest<FastifyRequest> {
  // Routed on `request.raw.url`, which a host's `rewriteUrl` has already rewritten.
  const neutral = fromNodeRequest(request.raw, reply.raw, { native: request });
  // A preParsing hook may have swapped the body stream (e.g. to decompress it): read that one.
  if (bodyStream) neutral.bodyStream = bodyStream;
  return neutral;
}

/**
 * `reply.send` rather than `reply.hijack()`: onSend hooks (compression, security headers) and
 * onResponse logging keep working, and Fastify destroys a streamed body (aborting the export)
 * when the client goes away.
 */
function send(reply: FastifyReply, response: ExportHttpResponse): FastifyReply {
  reply.code(response.status).headers(response.headers);
  // A string body is already serialized. Given to `send()` as it is, Fastify would add
  // `; charset=utf-8` to a JSON media type such as `application/problem+json`, unlike the other
  // adapters; a reply serializer that returns it unchanged keeps the core's Content-Type. That
  // costs less than a Buffer of it, which measured about 5 µs dearer per 429.
  if (typeof response.body === 'string') reply.serializer(keepSerialized);
  return reply.send(response.body);
}

/** The reply serializer of a body the core has already serialized. */
const keepSerialized = (body: unknown): string => body as string;

type BadUrlHandler = (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>;

/** The plugins registered on each HTTP server, for {@link exportFrameworkErrors}. */
const badUrlHandlers = new WeakMap<object, BadUrlHandler[]>();

function addBadUrlHandler(server: object, handler: BadUrlHandler): void {
  const handlers = badUrlHandlers.get(server) ?? [];
  handlers.push(handler);
  badUrlHandlers.set(server, handlers);
}

/** The `frameworkErrors` option of `Fastify()`, as {@link exportFrameworkErrors} returns it. */
export type FrameworkErrorsHandler = (
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
) => void;

/**
 * A `frameworkErrors` option for `Fastify()`. Fastify's router answers a URL it cannot decode
 * (malformed percent-encoding such as `/export/jobs/%E0%A4%A`) with its own 400 before any
 * plugin runs; with this option such URLs under an export prefix get the same 404 problem as
 * in the other adapters. Other framework errors go to `fallback`, or are sent as Fastify does.
 *
 * @example
 * ```ts
 * const app = Fastify({ frameworkErrors: exportFrameworkErrors() });
 * ```
 */
export function exportFrameworkErrors(fallback?: FrameworkErrorsHandler): FrameworkErrorsHandler {
  const otherwise: FrameworkErrorsHandler = (error, request, reply) => {
    if (fallback) fallback(error, request, reply);
    else reply.code(error.statusCode ?? 500).send(error);
  };
  return (error, request, reply) => {
    const handlers = error.code === 'FST_ERR_BAD_URL' ? badUrlHandlers.get(request.server.server) : undefined;
    if (!handlers) {
      otherwise(error, request, reply);
      return;
    }
    void (async () => {
      for (const handler of handlers) {
        if ((await handler(request, reply)) !== undefined) return;
      }
      otherwise(error, request, reply);
    })().catch((failure: unknown) => {
      reply.log.error({ err: failure }, 'spark-export could not answer a malformed URL');
      if (!reply.sent) otherwise(error, request, reply);
    });
  };
}

/**
 * Serves the spark-export HTTP API (`/status`, `/jobs`, downloads, streamed exports...) from a
 * Fastify 5 app and decorates it with `exportManager`.
 *
 * @example
 * ```ts
 * const app = Fastify();
 * await app.register(exportPlugin, { managerOptions: { directory: './exports', datasets }, prefix: '/export' });
 * ```
 */
export const exportPlugin = fp(exportPluginAsync, { fastify: '5.x', name: '@spark-export/fastify' });

function normalize(prefix: string): string {
  if (typeof prefix !== 'string') throw new TypeError(`Expected prefix to be a string, got ${typeof prefix}`);
  const trimmed = prefix.replace(/\/+$/, '');
  return trimmed === '' || trimmed.startsWith('/') ? trimmed : `/${trimmed}`;
}
