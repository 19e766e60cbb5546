// `GET /jobs/:id/events`: a job's changes as Server-Sent Events.
import { Readable } from 'node:stream';
import { checkInteger } from '../checks.js';
import { describeValue, isExportError } from '../errors.js';
import { FINISHED_STATUSES, type Job, type JobStatus } from '../jobs/job.js';
import type { JobEventFeed } from '../jobs/job-events.js';
import type { JobResource } from './handler-options.js';
import { problemResponse } from './problem.js';
import type { ExportHttpResponse } from './types.js';

/** Options of the events route (`eventStreams` of the handler). */
export interface EventStreamOptions {
  /**
   * Event streams one owner (or all anonymous callers together) may hold open in this process;
   * one more is answered 429 with `Retry-After`. Each open stream holds a connection (and, in a
   * browser on HTTP/1.1, one of its six per origin).
   * @default 10
   */
  maxPerOwner?: number;
  /**
   * Milliseconds between heartbeat comments (`: heartbeat`) on an open stream, so that proxies
   * and load balancers do not cut an idle connection while a job waits.
   * @default 15000
   */
  heartbeatMs?: number;
  /**
   * Least milliseconds between two `progress` events of one stream; changes of state are sent
   * at once.
   * @default 250
   */
  progressIntervalMs?: number;
  /** `Retry-After` of the 429 beyond `maxPerOwner`, in seconds. @default 5 */
  retryAfterSeconds?: number;
  /** How long a browser waits before it reconnects after a dropped stream (the `retry:` field). @default 2000 */
  reconnectMs?: number;
}

export interface ResolvedEventStreamOptions {
  maxPerOwner: number;
  heartbeatMs: number;
  progressIntervalMs: number;
  retryAfterSeconds: number;
  reconnectMs: number;
}

export function checkEventStreamOptions(options: EventStreamOptions | undefined): ResolvedEventStreamOptions {
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new TypeError(`Expected eventStreams to be an object, got ${describeValue(options)}`);
  }
  return {
    maxPerOwner: checkInteger('eventStreams.maxPerOwner', options?.maxPerOwner ?? 10, { min: 1 }),
    heartbeatMs: checkInteger('eventStreams.heartbeatMs', options?.heartbeatMs ?? 15_000, { min: 1 }),
    progressIntervalMs: checkInteger('eventStreams.progressIntervalMs', options?.progressIntervalMs ?? 250),
    retryAfterSeconds: checkInteger('eventStreams.retryAfterSeconds', options?.retryAfterSeconds ?? 5, {
      min: 1,
    }),
    reconnectMs: checkInteger('eventStreams.reconnectMs', options?.reconnectMs ?? 2000),
  };
}

/** What a client reconnects with: the state and rows of the last event it got. */
interface Seen {
  status: JobStatus;
  rows: number;
}

const EVENT_ID = /^(queued|running|succeeded|failed|cancelled|expired):(0|[1-9]\d{0,15})$/;

/**
 * Event ids are the state they describe (`running:15000`), not a counter: any replica can
 * resume a stream from a `Last-Event-ID` without remembering what it sent. An id it cannot read
 * is a fresh start.
 */
export function parseEventId(value: string | string[] | undefined): Seen | undefined {
  if (typeof value !== 'string') return undefined;
  const match = EVENT_ID.exec(value.trim());
  if (!match) return undefined;
  return { status: match[1] as JobStatus, rows: Number(match[2]) };
}

const eventIdOf = (job: Job) => `${job.status}:${job.progress.rows}`;

export function percentOf(job: Job): number | null {
  const total = job.progress.totalRows;
  if (total === null || total <= 0) return job.status === 'succeeded' ? 100 : null;
  return Math.min(100, Math.floor((job.progress.rows / total) * 1000) / 10);
}

/** The headers of an event stream: never cached, transformed (compressed) or buffered by a proxy. */
export function eventStreamHeaders(): Record<string, string> {
  return {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store, no-transform',
    'x-accel-buffering': 'no',
    'x-content-type-options': 'nosniff',
  };
}

export interface JobEventStreamInput {
  /** The job as first read for this caller (the owner check is done). */
  job: Job;
  /** Reads the job again for this caller; throws `NotFoundError` once it is gone. */
  read(): Promise<Job>;
  resource(job: Job): JobResource;
  feed: JobEventFeed;
  lastEventId: string | string[] | undefined;
  signal: AbortSignal;
  now: () => number;
  options: ResolvedEventStreamOptions;
  /** Called once when the stream ends, however it ends. */
  onClose(): void;
  /** An unexpected failure while reading the job: reported, and the stream ends. */
  onError(error: unknown): void;
}

/**
 * The response of the events route. Subscribes before the first read, so that no change between
 * that read and the subscription is lost; every wake-up reads the job again (the store is the
 * truth: a wake-up may come from another replica) and sends what changed since the last event:
 * a state event (`queued`, `running`, `succeeded`, `failed`, `cancelled`, `expired`, whose data
 * is the job as `GET /jobs/:id` answers it) or a throttled `progress` event (rows, bytes,
 * totalRows, percent). The stream ends after a finished state. A
 * client that already saw that state (its `Last-Event-ID`) gets 204, which tells an
 * `EventSource` to stop reconnecting.
 */
export function jobEventStream(input: JobEventStreamInput): ExportHttpResponse {
  const { feed, options, now } = input;
  const seen = parseEventId(input.lastEventId);
  if (seen && FINISHED_STATUSES.has(input.job.status) && seen.status === input.job.status) {
    input.onClose();
    return { status: 204, headers: { 'cache-control': 'no-store' } };
  }

  let sentStatus: JobStatus | undefined = seen?.status;
  let sentRows = seen?.rows;
  let lastProgressAt = Number.NEGATIVE_INFINITY;
  let closed = false;
  let reading = false;
  let again = false;

  const body = new Readable({ read() {} });
  const unsubscribe = feed.subscribe((change) => {
    if (change.jobId === input.job.id) wake();
  });
  const heartbeat = setInterval(() => {
    if (!closed) body.push(': heartbeat\n\n');
  }, options.heartbeatMs);
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    unsubscribe();
    input.signal.removeEventListener('abort', onAbort);
    input.onClose();
  };
  const onAbort = () => {
    close();
    body.destroy();
  };
  body.once('close', close);
  input.signal.addEventListener('abort', onAbort, { once: true });

  const send = (event: string, id: string, data: unknown) => {
    body.push(`id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const end = () => {
    close();
    body.push(null);
  };
  /** Sends what changed; true when the job reached a finished state (the stream then ends). */
  const update = (job: Job): boolean => {
    if (job.status !== sentStatus) {
      sentStatus = job.status;
      sentRows = job.progress.rows;
      send(job.status, eventIdOf(job), input.resource(job));
    } else if (job.progress.rows !== sentRows && job.status === 'running') {
      const at = now();
      if (at - lastProgressAt < options.progressIntervalMs) return false;
      lastProgressAt = at;
      sentRows = job.progress.rows;
      send('progress', eventIdOf(job), {
        id: job.id,
        status: job.status,
        rows: job.progress.rows,
        bytes: job.progress.bytes,
        totalRows: job.progress.totalRows,
        percent: percentOf(job),
      });
    }
    return FINISHED_STATUSES.has(job.status);
  };
  // One read at a time: a wake-up during a read makes one more read after it, never a pile.
  const wake = () => {
    if (closed) return;
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    void (async () => {
      try {
        do {
          again = false;
          const job = await input.read();
          if (closed) return;
          if (update(job)) {
            end();
            return;
          }
        } while (again && !closed);
      } catch (error) {
        if (closed) return;
        // A job deleted while watched ends its stream; a reconnect then gets the 404.
        if (!(isExportError(error) && error.statusCode === 404)) input.onError(error);
        end();
      } finally {
        reading = false;
      }
    })();
  };

  // How long a browser waits before it reconnects after a dropped connection.
  body.push(`retry: ${options.reconnectMs}\n\n`);
  if (update(input.job)) end();
  return { status: 200, headers: eventStreamHeaders(), body };
}

/** Open event streams per owner, in this process. */
export class EventStreamCounter {
  readonly #open = new Map<string, number>();

  /** Takes a place for `owner`, or returns `undefined` when the owner holds `limit` already. */
  take(owner: string | undefined, limit: number): (() => void) | undefined {
    const key = owner === undefined ? '' : `o:${owner}`;
    const count = this.#open.get(key) ?? 0;
    if (count >= limit) return undefined;
    this.#open.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#open.get(key) ?? 1) - 1;
      if (left === 0) this.#open.delete(key);
      else this.#open.set(key, left);
    };
  }
}

export function tooManyEventStreams(limit: number, retryAfterSeconds: number): ExportHttpResponse {
  return problemResponse(
    429,
    'TOO_MANY_EVENT_STREAMS',
    `Too many open event streams (${limit} per caller); close one or retry later`,
    { retryAfterSeconds },
    { 'retry-after': String(retryAfterSeconds) },
  );
}
