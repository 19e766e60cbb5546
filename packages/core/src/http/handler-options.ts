// The options of the HTTP handler (every adapter takes the same) and the shapes it answers with.
import type { Job } from '../jobs/job.js';
import type { EventStreamOptions } from './events.js';
import type { ExportHttpHandler, ExportHttpRequest } from './types.js';

/**
 * Options of {@link createExportHandler}; every adapter takes the same.
 * @typeParam TNative - the framework's request that `identify` and `onError` find as `request.native`
 */
export interface ExportRoutesOptions<TNative = unknown> {
  /**
   * Where the API is mounted. Requests whose path is not under it are left to the host.
   * @default '/export'
   */
  prefix?: string;
  /**
   * Who is asking: the owner of the jobs the request may see, derived from the host's own
   * auth (a session, a verified token). Throw an `ExportError` with status 401 or 403 (codes
   * `UNAUTHORIZED`, `FORBIDDEN`) to turn the request away; it is answered as such. Called for
   * every route but `/status` and signed download links.
   * @default every request is anonymous (owner `undefined`): all callers share the jobs
   * @example
   * ```ts
   * identify: (request) => {
   *   const user = sessions.get(request.headers.cookie);
   *   if (!user) throw new ExportError('UNAUTHORIZED', 401, 'Log in first');
   *   return user.id;
   * }
   * ```
   */
  identify?(request: ExportHttpRequest<TNative>): string | undefined | Promise<string | undefined>;
  /**
   * Serve the manager's Prometheus registry at `<prefix>/metrics`. Off by default: the route
   * serves the whole registry (with `metrics: { registry }` on the manager, every metric of the
   * host app) to whoever `identify` lets in, anonymous callers included. Turn it on behind
   * access control, or serve the registry elsewhere (an internal port).
   * @default false
   */
  metrics?: boolean;
  /**
   * Largest accepted request body (`POST /jobs`), in bytes; larger bodies get 413.
   * @default 65536
   */
  maxBodyBytes?: number;
  /**
   * Enables signed download links (`handler.signDownloadUrl`): whoever holds one may download
   * that job's file until it expires, without `identify`.
   * @default undefined (signed links are refused with 403)
   */
  signing?: {
    /** HMAC-SHA256 key, at least 16 bytes; the same on every replica. */
    secret: string | Buffer;
    /** Lifetime of links signed without `expiresInSeconds`. @default 3600 */
    ttlSeconds?: number;
  };
  /**
   * Answer downloads with `X-Accel-Redirect: <prefix><file name>` and no body, so that nginx
   * sends the file (with ranges) from an `internal` location over the exports directory.
   * @default undefined (the handler streams files itself)
   * @example
   * ```ts
   * accelRedirect: { prefix: '/_export_files/' } // nginx: location /_export_files/ { internal; alias /data/exports/; }
   * ```
   */
  accelRedirect?: { prefix: string };
  /**
   * The events route, `GET <prefix>/jobs/:id/events` (Server-Sent Events): how many streams one
   * owner may hold open in this process, the heartbeat, the progress throttle.
   * @default `{ maxPerOwner: 10, heartbeatMs: 15000, progressIntervalMs: 250, retryAfterSeconds: 5, reconnectMs: 2000 }`
   */
  eventStreams?: EventStreamOptions;
  /**
   * Told about every error answered with a 5xx (but 501): errors that are not the library's
   * (answered with a generic 500) and the library's own server-side failures, such as a source
   * that fails before its first row (502); and about a streamed export that failed after its
   * 200 was sent (the response is cut short). Log them here.
   * @default emit `http:error` (error, `{ method, path }`) on the manager, or `console.error`
   * when nothing listens to it: a 5xx is never silent
   */
  onError?(error: unknown, request: ExportHttpRequest<TNative>): void;
  /**
   * Clock in epoch milliseconds (uptime, signed-link expiry, the progress throttle of event streams); injectable for tests.
   * @default Date.now
   */
  now?: () => number;
}

/** A job as the HTTP API shows it. */
export interface JobResource extends Job {
  links: {
    self: string;
    /** The download path once the job succeeded, else `null`. */
    download: string | null;
  };
}

/** The handler of {@link createExportHandler}: an {@link ExportHttpHandler} that can also sign links. */
export interface ExportRoutesHandler<TNative = unknown> extends ExportHttpHandler<TNative> {
  /** The normalised mount prefix, e.g. `/export`. */
  readonly prefix: string;
  /**
   * The path and query of a signed download link (prepend your origin). Needs `signing`.
   * @throws {TypeError} when the handler was created without `signing`
   */
  signDownloadUrl(jobId: string, options?: { owner?: string | undefined; expiresInSeconds?: number }): string;
}
