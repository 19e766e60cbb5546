import type { Readable } from 'node:stream';

/**
 * A framework-neutral HTTP request. Adapters build it from their framework's request; the
 * core handler owns routing, validation and error mapping.
 *
 * @typeParam TNative - the framework's own request object, carried as {@link native}
 */
export interface ExportHttpRequest<TNative = unknown> {
  /** Upper-case method, e.g. `GET`. */
  method: string;
  /** The full path without the query string, including the mount prefix, e.g. `/export/jobs`. */
  path: string;
  query: URLSearchParams;
  /** Header names in lower case, as node's `IncomingHttpHeaders`. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** A body the host's body parser already parsed (e.g. Express `req.body`). */
  body?: unknown;
  /** The raw body, when nothing parsed it yet. */
  bodyStream?: Readable;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  /**
   * The framework's own request the neutral one was built from (Express `Request`, Koa
   * `Context`, Fastify `FastifyRequest`, node's `IncomingMessage`), so that `identify` and
   * `onError` can read what the host's middleware put there (`req.user`, `ctx.state`). The core
   * never reads it.
   */
  native: TNative;
}

/** A framework-neutral HTTP response. */
export interface ExportHttpResponse {
  status: number;
  headers: Record<string, string>;
  body?: string | Buffer | Readable;
}

/** Answers a request under the prefix, or `undefined` for a path outside it (call `next()`). */
export type ExportHttpHandler<TNative = unknown> = (
  request: ExportHttpRequest<TNative>,
) => Promise<ExportHttpResponse | undefined>;
