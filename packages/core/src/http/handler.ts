import { describeValue, ExportError, NotFoundError, ValidationError } from '../errors.js';
import type { Job } from '../jobs/job.js';
import { VERSION } from '../version.js';
import { readJsonBody } from './body.js';
import { downloadResponse, fileExtension } from './download.js';
import {
  checkEventStreamOptions,
  EventStreamCounter,
  eventStreamHeaders,
  jobEventStream,
  tooManyEventStreams,
} from './events.js';
import type { ExportRoutesHandler, ExportRoutesOptions, JobResource } from './handler-options.js';
import { errorToProblem, problemResponse } from './problem.js';
import { badQuery, checkJobRequest, LIST_QUERY_KEYS, streamRequest, withHttpFieldNames } from './requests.js';
import {
  describeDataset,
  json,
  negotiateEncoding,
  streamHead,
  streamHeaders,
  withoutBody,
} from './resources.js';
import { ALLOWED_METHODS, matchRoute, type Route, underPrefix } from './routes.js';
import type { ExportService } from './service.js';
import { createDownloadSigner, type DownloadSigner, normalizePrefix } from './signing.js';
import type { ExportHttpRequest, ExportHttpResponse } from './types.js';

export type { ExportRoutesHandler, ExportRoutesOptions, JobResource } from './handler-options.js';

/**
 * The framework-neutral HTTP API of an export service (an `ExportManager`): routing, validation, error
 * mapping (RFC 9457 problems), downloads with ranges and ETags, streamed exports. Adapters
 * translate their framework's request and response to and from its shapes.
 *
 * @example
 * ```ts
 * const handler = createExportHandler(manager, { identify: (request) => userIdOf(request) });
 * http.createServer(toNodeHandler(handler)).listen(4001);
 * ```
 */
export function createExportHandler<TNative = unknown>(
  manager: ExportService,
  options?: ExportRoutesOptions<TNative>,
): ExportRoutesHandler<TNative>;
// The body never reads `native`: it hands each request to `identify` and `onError` as it came.
export function createExportHandler(
  manager: ExportService,
  options: ExportRoutesOptions = {},
): ExportRoutesHandler {
  const prefix = normalizePrefix(options.prefix ?? '/export');
  const now = options.now ?? Date.now;
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new TypeError(`Expected maxBodyBytes to be an integer >= 1, got ${describeValue(maxBodyBytes)}`);
  }
  if (options.accelRedirect && typeof options.accelRedirect.prefix !== 'string') {
    throw new TypeError(
      `Expected accelRedirect.prefix to be a string, got ${describeValue(options.accelRedirect.prefix)}`,
    );
  }
  const signer: DownloadSigner | undefined = options.signing
    ? createDownloadSigner({
        secret: options.signing.secret,
        prefix,
        now,
        ...(options.signing.ttlSeconds === undefined ? {} : { ttlSeconds: options.signing.ttlSeconds }),
      })
    : undefined;
  const eventStreams = checkEventStreamOptions(options.eventStreams);
  const openStreams = new EventStreamCounter();
  const serveMetrics = options.metrics ?? false;
  const onError = options.onError ?? reportToManager(manager);
  const report = (error: unknown, request: ExportHttpRequest): void => {
    try {
      onError(error, request);
    } catch {
      // A failing error reporter must not turn a problem answer into a crash.
    }
  };
  const startedAt = now();

  const jobPath = (id: string) => `${prefix}/jobs/${id}`;
  const resource = (job: Job): JobResource => ({
    ...job,
    links: {
      self: jobPath(job.id),
      download: job.status === 'succeeded' ? `${jobPath(job.id)}/download` : null,
    },
  });
  const anonymous: { owner?: string } = Object.freeze({});
  const checkOwner = (owner: unknown): { owner?: string } => {
    if (owner === undefined) return anonymous;
    if (typeof owner !== 'string') {
      throw new TypeError(`Expected identify() to return a string or undefined, got ${describeValue(owner)}`);
    }
    return { owner };
  };
  // Synchronous unless identify() answers with a promise: an await per request is not free.
  const identify = (request: ExportHttpRequest): { owner?: string } | Promise<{ owner?: string }> => {
    const owner = options.identify?.(request);
    return owner instanceof Promise ? owner.then(checkOwner) : checkOwner(owner);
  };

  async function dispatch(route: Route, request: ExportHttpRequest): Promise<ExportHttpResponse> {
    const head = request.method === 'HEAD';
    switch (route.name) {
      case 'status': {
        const closing = manager.closing;
        return json(closing ? 503 : 200, {
          status: closing ? 'draining' : 'ok',
          version: VERSION,
          inFlight: manager.inFlight,
          queued: manager.queued,
          limit: manager.limit,
          uptimeSeconds: Math.max(0, Math.floor((now() - startedAt) / 1000)),
        });
      }
      case 'metrics': {
        await identify(request);
        const registry = manager.metrics?.registry;
        if (!registry) throw new NotFoundError('Metrics are not enabled');
        const text = await registry.metrics();
        return {
          status: 200,
          headers: {
            'content-type': registry.contentType,
            'content-length': String(Buffer.byteLength(text)),
            'cache-control': 'no-store',
          },
          body: text,
        };
      }
      case 'datasets': {
        await identify(request);
        return json(200, { datasets: manager.datasets.map(describeDataset) });
      }
      case 'jobs': {
        const caller = await identify(request);
        requireJobs();
        if (request.method === 'POST') return createJob(request, caller);
        return json(200, await listJobs(request.query, caller));
      }
      case 'job': {
        const caller = await identify(request);
        requireJobs();
        const id = route.param!;
        if (request.method === 'DELETE') {
          await manager.delete(id, caller);
          return { status: 204, headers: { 'cache-control': 'no-store' } };
        }
        return json(200, resource(await manager.get(id, caller)));
      }
      case 'cancel': {
        const caller = await identify(request);
        requireJobs();
        return json(200, resource(await cancelJob(route.param!, caller)));
      }
      case 'download': {
        const id = route.param!;
        const caller = isSigned(request.query) ? verifySigned(id, request.query) : await identify(request);
        requireJobs();
        const info = await manager.file(id, caller);
        return downloadResponse(request, info, { accelRedirect: options.accelRedirect });
      }
      case 'events': {
        const caller = await identify(request);
        requireJobs();
        return jobEvents(route.param!, request, caller);
      }
      case 'stream': {
        const identified = identify(request);
        const caller = identified instanceof Promise ? await identified : identified;
        const exportRequest = streamRequest(route.param!, request.query);
        const accepted = negotiateEncoding(request);
        if (head) return streamHead(manager, { ...exportRequest, ...caller }, accepted);
        // The answer a full server gives most: returned, not thrown through three async frames.
        const refusal = manager.refusal({ ...exportRequest, ...caller });
        if (refusal) return errorToProblem(refusal).response;
        const opened = await manager.open(
          { ...exportRequest, ...caller },
          // Read only when the export gets that far: a refused request never needs a signal.
          {
            get signal() {
              return request.signal;
            },
            contentEncoding: accepted,
          },
        );
        // A failure before the first bytes is answered (and reported) as a problem below; one
        // after them can only cut the 200 short, so it is reported here. A client that went
        // away is not a failure, whatever error a framework destroys the body with then.
        let answered = false;
        opened.ready.then(
          () => {
            answered = true;
          },
          () => {},
        );
        opened.body.once('error', (error) => {
          if (answered && !request.signal.aborted) report(error, request);
        });
        // Headers wait for the first bytes, so that a source failing at once (a bad query, an
        // upstream 500) is still answered with its status and a problem, not a cut 200.
        await opened.ready;
        return {
          status: 200,
          headers: streamHeaders(
            opened.contentType,
            opened.filename,
            fileExtension(exportRequest.format, exportRequest.compression),
            opened.contentEncoding,
          ),
          body: opened.body,
        };
      }
    }
  }

  /**
   * The job's changes as Server-Sent Events, for the caller who may see the job (404 for
   * anyone else, as `GET /jobs/:id`), within the caller's number of open streams.
   */
  async function jobEvents(
    id: string,
    request: ExportHttpRequest,
    caller: { owner?: string },
  ): Promise<ExportHttpResponse> {
    const feed = manager.events;
    if (!feed) {
      throw new ExportError('JOBS_NOT_CONFIGURED', 501, 'Job events are not available on this server');
    }
    const job = await manager.get(id, caller);
    if (request.method === 'HEAD') return { status: 200, headers: eventStreamHeaders() };
    const release = openStreams.take(caller.owner, eventStreams.maxPerOwner);
    if (!release) return tooManyEventStreams(eventStreams.maxPerOwner, eventStreams.retryAfterSeconds);
    return jobEventStream({
      job,
      read: () => manager.get(id, caller),
      resource,
      feed,
      lastEventId: request.headers['last-event-id'],
      signal: request.signal,
      now,
      options: eventStreams,
      onClose: release,
      onError: (error) => report(error, request),
    });
  }

  /** Job routes, once the caller is known: without a directory `start()` would throw a bare TypeError (500). */
  function requireJobs(): void {
    if (manager.jobsEnabled) return;
    throw new ExportError(
      'JOBS_NOT_CONFIGURED',
      501,
      'Export jobs are not available on this server (no exports directory is configured); use /stream',
    );
  }

  /**
   * Cancels a queued or running job and keeps its record (unlike DELETE), so that it lists as
   * `cancelled`. Cancelling a cancelled job again answers it as is; any other finished job is a 409.
   */
  async function cancelJob(id: string, caller: { owner?: string }): Promise<Job> {
    const finished = (job: Job) =>
      new ExportError(
        'JOB_FINISHED',
        409,
        `The export already finished (${job.status}); it cannot be cancelled`,
      );
    const job = await manager.get(id, caller);
    if (job.status === 'cancelled') return job;
    if (job.status !== 'queued' && job.status !== 'running') throw finished(job);
    const after = await manager.cancel(id, caller);
    // It may have finished on its own before the cancellation reached it.
    if (after.status !== 'cancelled') throw finished(after);
    return after;
  }

  async function createJob(
    request: ExportHttpRequest,
    caller: { owner?: string },
  ): Promise<ExportHttpResponse> {
    const body = await readJsonBody(request, maxBodyBytes);
    const jobRequest = checkJobRequest(body);
    const key = request.headers['idempotency-key'];
    // Node joins repeated headers of this name into one value with ", ": a key with a comma is
    // two keys (or an ambiguous one), never taken as one.
    if (Array.isArray(key) || key?.includes(',')) {
      throw new ValidationError('Expected one Idempotency-Key header, without commas', {
        field: 'Idempotency-Key',
        statusCode: 400,
        code: 'BAD_REQUEST',
      });
    }
    const existing = key === undefined ? undefined : await manager.findByIdempotencyKey(key, caller);
    const job = await manager.start({
      ...jobRequest,
      ...caller,
      ...(key === undefined ? {} : { idempotencyKey: key }),
    });
    // A repeat of the same request gets its job again (start() refused a different request
    // with this key as 422 IDEMPOTENCY_KEY_REUSED).
    if (existing && existing.id === job.id) return json(200, resource(job), { location: jobPath(job.id) });
    // A first request racing another with the same key gets the same job, also as 202.
    return json(202, resource(job), { location: jobPath(job.id) });
  }

  async function listJobs(query: URLSearchParams, caller: { owner?: string }) {
    for (const key of new Set(query.keys())) {
      if (!LIST_QUERY_KEYS.has(key))
        throw badQuery(key, `Unknown query parameter "${key}"; expected status, dataset, limit or cursor`);
      if (query.getAll(key).length > 1) throw badQuery(key, `Expected at most one "${key}" query parameter`);
    }
    const status = query.get('status');
    const dataset = query.get('dataset');
    const limit = query.get('limit');
    const cursor = query.get('cursor');
    if (limit !== null && !/^\d{1,4}$/.test(limit)) {
      throw badQuery('limit', `Expected limit to be an integer from 1 to 1000, got ${describeValue(limit)}`);
    }
    const page = await manager.list({
      ...caller,
      ...(status === null ? {} : { status: status as Job['status'] }),
      ...(dataset === null ? {} : { dataset }),
      ...(limit === null ? {} : { limit: Number(limit) }),
      ...(cursor === null ? {} : { cursor }),
    });
    return { jobs: page.jobs.map(resource), nextCursor: page.nextCursor };
  }

  function verifySigned(id: string, query: URLSearchParams): { owner?: string } {
    if (!signer) throw forbidden('Signed download links are not enabled');
    for (const key of ['expires', 'sig', 'owner']) {
      if (query.getAll(key).length > 1) throw forbidden('The signed link is not valid');
    }
    const owner = query.get('owner') ?? undefined;
    const check = signer.verify({
      jobId: id,
      owner,
      expires: query.get('expires'),
      signature: query.get('sig'),
    });
    if (check === 'expired') throw forbidden('The signed link has expired');
    if (check !== 'valid') throw forbidden('The signed link is not valid');
    return owner === undefined ? {} : { owner };
  }

  // Matching is pure: the last paths seen (a few datasets' stream routes, status) skip it, and
  // the split into segments too. `null` is a path outside the prefix (not ours to answer).
  const routes = new Map<string, Route | null | undefined>();
  const routeOf = (path: string): Route | null | undefined => {
    let route = routes.get(path);
    if (route !== undefined || routes.has(path)) return route;
    const segments = underPrefix(prefix, path);
    route = segments === undefined ? null : matchRoute(segments);
    if (routes.size >= 256) routes.clear();
    routes.set(path, route);
    return route;
  };

  const answer = async (request: ExportHttpRequest): Promise<ExportHttpResponse | undefined> => {
    const route = routeOf(request.path);
    if (route === null) return undefined;
    try {
      if (!route || (route.name === 'metrics' && !serveMetrics)) {
        return problemResponse(404, 'NOT_FOUND', 'No route matches this path');
      }
      const allowed = ALLOWED_METHODS[route.name];
      if (!allowed.includes(request.method)) {
        return problemResponse(
          405,
          'METHOD_NOT_ALLOWED',
          `Expected one of ${allowed.join(', ')} for this path, got ${request.method.slice(0, 20)}`,
          {},
          { allow: allowed.join(', ') },
        );
      }
      return await dispatch(route, request);
    } catch (error) {
      const { response, internal } = errorToProblem(withHttpFieldNames(error, route?.name));
      if (internal) report(error, request);
      return response;
    }
  };
  const handler = async (request: ExportHttpRequest): Promise<ExportHttpResponse | undefined> => {
    const response = await answer(request);
    return request.method === 'HEAD' && response ? withoutBody(response) : response;
  };

  return Object.assign(handler, {
    prefix,
    signDownloadUrl(
      jobId: string,
      signOptions: { owner?: string | undefined; expiresInSeconds?: number } = {},
    ): string {
      if (!signer)
        throw new TypeError('Signed download links need the `signing` option of createExportHandler');
      return signer.sign(jobId, signOptions);
    },
  });
}

/** The default `onError`: an `http:error` event on the manager, or `console.error` if nobody listens. */
function reportToManager(manager: ExportService): (error: unknown, request: ExportHttpRequest) => void {
  return (error, request) => {
    const where = { method: request.method, path: request.path };
    if (manager.listenerCount('http:error') > 0) manager.emit('http:error', error, where);
    else console.error(`spark-export: ${where.method} ${where.path.slice(0, 200)} failed:`, error);
  };
}

function isSigned(query: URLSearchParams): boolean {
  return query.has('sig') || query.has('expires');
}

function forbidden(message: string): ExportError {
  return new ExportError('FORBIDDEN', 403, message);
}
