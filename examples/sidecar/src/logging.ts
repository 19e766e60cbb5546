import {
  type ExportError,
  type ExportManager,
  isBackpressureError,
  isExportError,
  type Job,
  type JobEventContext,
} from '@spark-export/core';
import pino from 'pino';
import type { LogLevel } from './env.js';

export type Logger = pino.Logger;

/** JSON lines on stdout (or `destination`), ISO timestamps, `service` on every line. */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'spark-export-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/** The fields every job line carries. */
function jobFields(job: Job, { owner }: JobEventContext) {
  const started = job.startedAt ? Date.parse(job.startedAt) : undefined;
  const finished = job.finishedAt ? Date.parse(job.finishedAt) : undefined;
  return {
    jobId: job.id,
    dataset: job.dataset,
    format: job.format,
    owner: owner ?? null,
    status: job.status,
    rows: job.progress.rows,
    bytes: job.progress.bytes,
    durationMs: started !== undefined && finished !== undefined ? finished - started : null,
  };
}

/** The underlying cause (an upstream's status, a database error), for operators only. */
function causeOf(error: ExportError): unknown {
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof Error)
    return { type: cause.name, message: cause.message, code: (cause as { code?: unknown }).code };
  return cause;
}

/**
 * One log line per job transition (queued, started, succeeded, failed, cancelled, expired), per
 * streamed export (started, finished) and per rejection (429/503). Progress events are left
 * out: they would drown everything else.
 */
export function logManagerEvents(manager: ExportManager, logger: Logger): void {
  const log = logger.child({ component: 'exports' });
  manager.on('job:queued', (job, context) =>
    log.info(
      { event: 'job:queued', ...jobFields(job, context), queuePosition: job.queuePosition },
      'job queued',
    ),
  );
  manager.on('job:started', (job, context) =>
    log.info({ event: 'job:started', ...jobFields(job, context) }, 'job started'),
  );
  manager.on('job:succeeded', (job, context) =>
    log.info({ event: 'job:succeeded', outcome: 'succeeded', ...jobFields(job, context) }, 'job succeeded'),
  );
  manager.on('job:failed', (job, error, context) =>
    log.warn(
      {
        event: 'job:failed',
        outcome: 'failed',
        ...jobFields(job, context),
        error: { code: error.code, message: error.message },
        cause: causeOf(error),
      },
      'job failed',
    ),
  );
  manager.on('job:cancelled', (job, context) =>
    log.info({ event: 'job:cancelled', outcome: 'cancelled', ...jobFields(job, context) }, 'job cancelled'),
  );
  manager.on('job:expired', (job, context) =>
    log.info({ event: 'job:expired', ...jobFields(job, context) }, 'job expired'),
  );
  manager.on('stream:started', (info) =>
    log.info(
      { event: 'stream:started', dataset: info.dataset, format: info.format, owner: info.owner ?? null },
      'stream started',
    ),
  );
  manager.on('stream:finished', (summary) => {
    const fields = {
      event: 'stream:finished',
      dataset: summary.dataset,
      format: summary.format,
      owner: summary.owner ?? null,
      rows: summary.rows,
      bytes: summary.bytes,
      durationMs: Math.round(summary.durationMs),
      outcome: summary.outcome,
      ...(summary.error
        ? {
            error: { code: summary.error.code, message: summary.error.message },
            cause: causeOf(summary.error),
          }
        : {}),
    };
    if (summary.outcome === 'failed') log.warn(fields, 'stream failed');
    else log.info(fields, `stream ${summary.outcome}`);
  });
  manager.on('rejected', (event) =>
    log.warn(
      {
        event: 'rejected',
        reason: event.reason,
        dataset: event.dataset,
        owner: event.owner ?? null,
        status: event.error.statusCode,
        inFlight: event.error.inFlight,
        limit: event.error.limit,
        retryAfterSeconds: event.error.retryAfterSeconds,
      },
      'export rejected',
    ),
  );
  manager.on('warning', (message, cause) => log.warn({ event: 'warning', err: cause }, message));
}

/**
 * The HTTP handler reports every 5xx it answers. Only failures nobody expected (not the
 * library's own errors) go to error level with their stack, since error level pages someone:
 * a 503 `SHUTTING_DOWN` during a drain happens on every deploy and is already logged (warn) by
 * the manager's `rejected` event; a failing source or disk is the library working as designed
 * and is logged at warn with its code and cause.
 */
export function logHttpFailure(log: Logger, error: unknown, request: { method: string; path: string }): void {
  const where = { method: request.method, path: request.path };
  if (!isExportError(error) || error.code === 'INTERNAL') {
    log.error({ event: 'http:failed', ...where, err: error }, 'internal error');
    return;
  }
  const fields = {
    event: 'http:failed',
    ...where,
    status: error.statusCode,
    error: { code: error.code, message: error.message },
  };
  if (isBackpressureError(error)) log.debug(fields, 'export refused');
  else log.warn({ ...fields, cause: causeOf(error) }, 'request failed');
}
