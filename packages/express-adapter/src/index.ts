import {
  createExportHandler,
  type ExportHttpRequest,
  type ExportRoutesHandler,
  type ExportRoutesOptions,
  type ExportService,
  fromNodeRequest,
  sendNodeResponse,
  splitUrl,
} from '@spark-export/core/http';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';

/** Options of {@link createExportRouter}: the core's route options, with an Express-aware `identify`. */
export interface ExportRouterOptions extends Omit<ExportRoutesOptions<Request>, 'prefix' | 'identify'> {
  /**
   * The public path the API answers under, links included (`/api/export`). Requests outside it
   * go to `next()`.
   * @default the path the router is mounted at (`req.baseUrl`), or `'/export'` when mounted at the root
   */
  prefix?: string;
  /**
   * Who is asking: the owner of the jobs the request may see. Gets the neutral request (whose
   * `native` is the Express request) and the Express request again, so that `req.user`
   * (passport) or `req.auth` (express-jwt) can be read. Throw an `ExportError` with status
   * 401/403 to turn the request away.
   * @default every request is anonymous: all callers share the jobs
   * @example
   * ```ts
   * identify: (_request, req) => req.user?.id
   * ```
   */
  identify?(
    request: ExportHttpRequest<Request>,
    req: Request,
  ): string | undefined | Promise<string | undefined>;
}

// Mounted without an explicit prefix, the router learns its prefix per request from
// `req.baseUrl`. Mount paths with parameters (or case-insensitive matches) give several;
// the cache keeps the first few so a client cannot make it grow without bound.
const MAX_CACHED_PREFIXES = 32;

/**
 * An Express `Router` that serves the spark-export HTTP API (`/status`, `/jobs`, downloads,
 * streamed exports...) where it is mounted. Works with Express 4 and 5.
 *
 * A body already parsed by `express.json()` is used as is; otherwise the router reads the raw
 * body itself (with the `maxBodyBytes` limit and RFC 9457 problems for 400/413/415).
 *
 * @example
 * ```ts
 * const app = express();
 * app.use('/export', createExportRouter(manager, { identify: (_request, req) => req.user?.id }));
 * ```
 */
export function createExportRouter(manager: ExportService, options: ExportRouterOptions = {}): Router {
  const { identify, prefix, ...routeOptions } = options;
  const coreOptions: ExportRoutesOptions<Request> = identify
    ? { ...routeOptions, identify: (request) => identify(request, request.native) }
    : routeOptions;

  const handlers = new Map<string, ExportRoutesHandler<Request>>();
  const handlerFor = (at: string): ExportRoutesHandler<Request> => {
    let handler = handlers.get(at);
    if (!handler) {
      handler = createExportHandler(manager, { ...coreOptions, prefix: at });
      if (handlers.size < MAX_CACHED_PREFIXES) handlers.set(at, handler);
    }
    return handler;
  };
  // Built now, so that bad options throw here rather than at the first request.
  handlerFor(prefix ?? '/export');

  const router = express.Router();
  router.use((req: Request, res: Response, next: NextFunction) => {
    // Express 4 ignores a rejected promise: pass failures on by hand (Express 5 would too).
    handle(req, res, next).catch(next);
  });

  async function handle(req: Request, res: Response, next: NextFunction): Promise<void> {
    // `req.url` is relative to the mount path; the handler routes on the full path.
    const { path } = splitUrl(req.originalUrl);
    const request = fromNodeRequest(req, res, { path, ...(bodyConsumed(req) ? { body: req.body } : {}) });
    // The handler answers every error of its own (library errors with their status, anything
    // else with a 500 problem and `onError`); a rejection here is a failure around it.
    const response = await handlerFor(prefix ?? (req.baseUrl || '/export'))(request);
    if (response === undefined) {
      next();
      return;
    }
    await sendNodeResponse(res, response);
  }

  return router;
}

/**
 * True when a body parser (`express.json()`, `express.text()`, ...) already read the body, so
 * `req.body` holds it. `req.body` alone cannot tell: body-parser 1 (Express 4) sets it to `{}`
 * even for content types it skips, leaving the stream unread.
 */
function bodyConsumed(req: Request): boolean {
  return (req as { _body?: unknown })._body === true || req.readableEnded || req.readableDidRead;
}
