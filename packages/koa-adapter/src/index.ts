import { Readable } from 'node:stream';
import {
  createExportHandler,
  type ExportHttpRequest,
  type ExportHttpResponse,
  type ExportRoutesOptions,
  type ExportService,
  fromNodeRequest,
  splitUrl,
} from '@spark-export/core/http';
import type { Context, Middleware, Next } from 'koa';

/** Options of {@link exportMiddleware}: the core's route options, with a Koa-aware `identify`. */
export interface ExportMiddlewareOptions extends Omit<ExportRoutesOptions<Context>, 'identify'> {
  /**
   * Who is asking: the owner of the jobs the request may see. Gets the neutral request (whose
   * `native` is the Koa context) and the context again, so that `ctx.state.user` can be read.
   * Throw an `ExportError` with status 401/403 to turn the request away.
   * @default every request is anonymous: all callers share the jobs
   * @example
   * ```ts
   * identify: (_request, ctx) => ctx.state.user?.id
   * ```
   */
  identify?(
    request: ExportHttpRequest<Context>,
    ctx: Context,
  ): string | undefined | Promise<string | undefined>;
}

/**
 * Koa middleware that serves the spark-export HTTP API under `prefix` (`/export` by default,
 * matched against the full request path, `ctx.originalUrl`) and calls `next()` for every other
 * path. A body already parsed by a body parser (`ctx.request.body`) is used as is; otherwise
 * the middleware reads the raw body itself.
 *
 * @example
 * ```ts
 * const app = new Koa();
 * app.use(exportMiddleware(manager, { identify: (_request, ctx) => ctx.state.user?.id }));
 * ```
 */
export function exportMiddleware(manager: ExportService, options: ExportMiddlewareOptions = {}): Middleware {
  const { identify, ...routeOptions } = options;
  const handler = createExportHandler<Context>(
    manager,
    identify ? { ...routeOptions, identify: (request) => identify(request, request.native) } : routeOptions,
  );

  return async function sparkExport(ctx: Context, next: Next): Promise<void> {
    // `ctx.url` may have been rewritten (koa-mount); the prefix is matched on the full path.
    const request = fromNodeRequest(ctx.req, ctx.res, {
      path: splitUrl(ctx.originalUrl).path,
      native: ctx,
      ...(bodyConsumed(ctx) ? { body: (ctx.request as { body?: unknown }).body } : {}),
    });
    const response = await handler(request);
    if (response === undefined) {
      await next();
      return;
    }
    respond(ctx, response);
  };
}

/**
 * True when a body parser already read the body. `ctx.request.body` alone cannot tell:
 * @koa/bodyparser sets it to `{}` for content types it skips, leaving the stream unread.
 */
function bodyConsumed(ctx: Context): boolean {
  const request = ctx.request as { body?: unknown; rawBody?: unknown };
  if (request.body === undefined) return false;
  return request.rawBody !== undefined || ctx.req.readableEnded || ctx.req.readableDidRead;
}

/**
 * Hands the response to Koa rather than writing `ctx.res`, so that the host's middleware
 * (logging, compression, CORS headers) still sees and shapes it. Koa pipes a `Readable` body
 * with `stream.pipeline` and destroys it when the response closes, so a client that leaves
 * aborts the export and frees its slot.
 */
function respond(ctx: Context, response: ExportHttpResponse): void {
  ctx.status = response.status;
  const body = response.body;
  if (body instanceof Readable) {
    // Koa only logs errors of the body stream; a failed export must also cut the response short.
    body.once('error', () => ctx.res.destroy());
  }
  // Koa's body setter guesses a Content-Type and Content-Length (and turns a missing body into
  // 204), so the core's headers are set after it and win. A body-less answer (HEAD, 204, 304)
  // keeps the core's headers and status: Koa ends such responses without a body itself.
  if (body !== undefined) ctx.body = body;
  else if (ctx.method !== 'HEAD' && ![204, 205, 304].includes(response.status)) ctx.body = '';
  ctx.set(response.headers);
}
