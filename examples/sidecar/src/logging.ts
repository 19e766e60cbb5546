import { AsyncLocalStorage } from 'node:async_hooks';
import { type ExportError, ExportManager, type ExportRequest, type Job } from '@spark-export/core';
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

const requestOwner = new AsyncLocalStorage<string | undefined>();

/**
 * An ExportManager whose job events know the job's owner. The public `Job` does not carry it
 * (clients never see it), so `start` runs in an async context that holds the owner, and the
 * job's events, all emitted from that context, read it back.
 */
export class OwnerAwareExportManager extends ExportManager {
  override start(request: ExportRequest): Promise<Job> {
    return requestOwner.run(request.owner, () => super.start(request));
  }
}

/** The fields every job line carries. */
function jobFields(job: Job, owner: string | undefined) {
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
  // Owners of jobs whose file may still expire later (outside the job's async context).
  const owners = new Map<string, string | undefined>();
  const ownerOf = (job: Job, forget: boolean): string | undefined => {
    const owner = owners.has(job.id) ? owners.get(job.id) : requestOwner.getStore();
    if (forget) owners.delete(job.id);
    else if (owner !== undefined) owners.set(job.id, owner);
    return owner;
  };
  const fields = (job: Job, forget = false) => jobFields(job, ownerOf(job, forget));
  manager.on('job:queued', (job) =>
    log.info({ event: 'job:queued', ...fields(job), queuePosition: job.queuePosition }, 'job queued'),
  );
  manager.on('job:started', (job) => log.info({ event: 'job:started', ...fields(job) }, 'job started'));
  manager.on('job:succeeded', (job) =>
    log.info({ event: 'job:succeeded', outcome: 'succeeded', ...fields(job) }, 'job succeeded'),
  );
  manager.on('job:failed', (job, error) =>
    log.warn(
      {
        event: 'job:failed',
        outcome: 'failed',
        ...fields(job, true),
        error: { code: error.code, message: error.message },
        cause: causeOf(error),
      },
      'job failed',
    ),
  );
  manager.on('job:cancelled', (job) =>
    log.info({ event: 'job:cancelled', outcome: 'cancelled', ...fields(job, true) }, 'job cancelled'),
  );
  manager.on('job:expired', (job) => log.info({ event: 'job:expired', ...fields(job, true) }, 'job expired'));
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
