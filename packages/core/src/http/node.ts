import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CancelledError } from '../errors.js';
import { problemResponse } from './problem.js';
import type { ExportHttpHandler, ExportHttpRequest, ExportHttpResponse } from './types.js';

export interface FromNodeRequestOptions<TNative = never> {
  /** A body the host already parsed; without it the handler reads `req` itself. */
  body?: unknown;
  /** The path to route on (with the prefix), when the host rewrote `req.url`. @default the path of `req.url` */
  path?: string;
  /**
   * The framework's own request, carried as the neutral request's `native` for `identify` and
   * `onError` (a Koa `Context`, a `FastifyRequest`).
   * @default `req`
   */
  native?: TNative;
}

/**
 * Splits a request target (`req.url`, Express's `req.originalUrl`) at its first `?`: the path
 * stays percent-encoded, as the handler routes on it; the query is parsed.
 *
 * @example
 * ```ts
 * splitUrl('/export/stream/orders?format=csv'); // { path: '/export/stream/orders', query: URLSearchParams { format: 'csv' } }
 * ```
 */
export function splitUrl(url: string): { path: string; query: URLSearchParams } {
  const queryAt = url.indexOf('?');
  if (queryAt === -1) return { path: url, query: new URLSearchParams() };
  return { path: url.slice(0, queryAt), query: new URLSearchParams(url.slice(queryAt + 1)) };
}

/**
 * Builds the neutral request from node's request and response. Its `signal` aborts when the
 * response closes before it finished (the client went away), which aborts a streamed export
 * and frees its slot. A request's own `close` cannot tell that: it fires once the body was read.
 * Its `native` is `req` (an Express `Request` stays typed as one), or `options.native`.
 */
export function fromNodeRequest<TReq extends IncomingMessage, TNative = TReq>(
  req: TReq,
  res: ServerResponse,
  options: FromNodeRequestOptions<TNative> = {},
): ExportHttpRequest<TNative> {
  // Without `options.native`, TNative is TReq (its default): `req` is of that type.
  const native = options.native === undefined ? (req as unknown as TNative) : options.native;
  return new NodeHttpRequest(req, res, options.path, options.body, native);
}

/**
 * The neutral request over node's. A class rather than an object literal with a getter: the
 * literal measured as the dearest single step of a 429 under load (15% of the handler's time),
 * as V8 cannot give it a fast shape.
 */
class NodeHttpRequest<TNative> implements ExportHttpRequest<TNative> {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body?: unknown;
  bodyStream?: Readable;
  native: TNative;
  readonly #res: ServerResponse;
  #signal: AbortSignal | undefined;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    path: string | undefined,
    body: unknown,
    native: TNative,
  ) {
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    this.method = (req.method ?? 'GET').toUpperCase();
    this.path = path ?? (queryAt === -1 ? url : url.slice(0, queryAt));
    this.query = new URLSearchParams(queryAt === -1 ? '' : url.slice(queryAt + 1));
    this.headers = req.headers;
    if (body === undefined) this.bodyStream = req;
    else this.body = body;
    this.native = native;
    this.#res = res;
  }

  /** Made on first use: most requests (a status, a 429) never look at it, and an AbortController with its listener costs more than the rest of such a request. */
  get signal(): AbortSignal {
    this.#signal ??= responseSignal(this.#res);
    return this.#signal;
  }
}

/** Aborts when `res` closes before it finished (or already has). */
function responseSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  if (res.destroyed && !res.writableFinished) {
    controller.abort(new CancelledError('The client went away'));
  } else if (!res.writableFinished) {
    res.once('close', () => {
      if (!res.writableFinished) controller.abort(new CancelledError('The client went away'));
    });
  }
  return controller.signal;
}

export async function sendNodeResponse(res: ServerResponse, response: ExportHttpResponse): Promise<void> {
  if (!res.headersSent) {
    res.statusCode = response.status;
    for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  }
  const body = response.body;
  if (body instanceof Readable) {
    // The status goes out now, even while a slow source has not produced its first bytes.
    if (!res.headersSent && !res.destroyed) res.flushHeaders();
    await pipeline(body, res).catch(() => {});
    return;
  }
  await new Promise<void>((resolve) => {
    if (res.destroyed) {
      resolve();
      return;
    }
    res.once('close', () => resolve());
    res.end(body);
  });
}

export interface ToNodeHandlerOptions {
  /**
   * Called for requests outside the handler's prefix.
   * @default answer a 404 problem
   */
  onNotFound?(req: IncomingMessage, res: ServerResponse): void;
  /**
   * Told about a failure around the handler, which answers its own errors: a throwing
   * `onNotFound`, a response that could not be written. The client gets a 500 problem (or a
   * cut response once headers are out).
   * @default `console.error`, so that such a 500 is never silent
   */
  onError?(error: unknown, req: IncomingMessage): void;
}

/**
 * A `(req, res)` listener for bare `node:http` (or anything that accepts one) over an
 * {@link ExportHttpHandler}.
 *
 * @example
 * ```ts
 * http.createServer(toNodeHandler(createExportHandler(manager))).listen(4001, '127.0.0.1');
 * ```
 */
export function toNodeHandler(
  handler: ExportHttpHandler<IncomingMessage>,
  options: ToNodeHandlerOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const request = fromNodeRequest(req, res);
    void handler(request)
      .then((response) => {
        if (response !== undefined) return sendNodeResponse(res, response);
        if (options.onNotFound) return options.onNotFound(req, res);
        return sendNodeResponse(res, problemResponse(404, 'NOT_FOUND', 'No route matches this path'));
      })
      .catch((error: unknown) => {
        // The handler answers its own errors; this is a failing onNotFound or a broken socket.
        try {
          if (options.onError) options.onError(error, req);
          else console.error(`spark-export: ${req.method} ${(req.url ?? '').slice(0, 200)} failed:`, error);
        } catch {
          // A failing reporter must not keep the 500 from being sent.
        }
        if (!res.headersSent) {
          void sendNodeResponse(res, problemResponse(500, 'INTERNAL', 'An internal error occurred'));
        } else {
          res.destroy();
        }
      });
  };
}
