import {
  CancelledError,
  type ExportError,
  type JobQueue,
  type JobQueueRuntime,
  type JobRecord,
} from '@spark-export/core';
import { type Job, Queue, QueueEvents, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { checkPositiveInteger, checkPrefix, describeValue } from './checks.js';
import { DEFAULT_PREFIX } from './keys.js';

export interface BullJobQueueOptions {
  /**
   * The ioredis client for this queue's own keys (cancel markers, the sweep lock). BullMQ's
   * queue, worker and event reader, and the cancel subscriber, run on duplicates of it, which
   * the queue closes; `redis` itself is never closed by the queue.
   */
  redis: Redis;
  /**
   * Jobs that may run at once in the cluster: each replica's worker concurrency, and BullMQ's
   * global concurrency (`Queue.setGlobalConcurrency`) as a cap. Give the same value as the
   * `RedisLimiter`'s `limit`: a job still takes its slot from the limiter, which also counts
   * streams, so streams and jobs share one budget.
   */
  concurrency: number;
  /** Prefix of the keys (`<prefix>bull:exports:*`, `<prefix>cancel:<id>`, `<prefix>sweep`). @default 'spark-export:' */
  prefix?: string;
  /**
   * How long a job's BullMQ lock lives without renewal (renewed every half of it). A worker
   * that dies holds its job this long (plus up to `stalledIntervalMs`) before another replica
   * takes it over; a worker whose event loop stalls for longer loses the job and its run is
   * aborted. @default 30_000
   */
  lockDurationMs?: number;
  /** How often each worker looks for jobs whose lock expired. @default lockDurationMs */
  stalledIntervalMs?: number;
  /**
   * How many times a job whose worker died is taken over by another replica; once more and it
   * fails (`INTERRUPTED`). Low on purpose: an export that kills its process (memory) must not
   * kill replica after replica. `0`: a job whose worker died fails at once. @default 1
   */
  maxStalledCount?: number;
  /**
   * Jobs that may wait in the cluster's queue; one more is refused with 429 `queue_full`. The
   * count is read before the job is added, so concurrent creations may pass it by a few.
   * @default undefined (no bound)
   */
  maxWaiting?: number;
  /** Longest wait of `cancel()` for a run in another process to end. @default 5_000 */
  cancelWaitMs?: number;
  /** Told about Redis errors of the worker, the event reader and the subscriber. @default () => {} */
  onError?: (error: unknown) => void;
}

/** How long a cancel marker outlives the cancel: a job cannot wait to start longer than this and still see it. */
const CANCEL_MARKER_MS = 7 * 24 * 3600_000;
/** The BullMQ queue's name (its keys are `<prefix>bull:exports:*`). */
export const QUEUE_NAME = 'exports';

interface LocalRun {
  controller: AbortController;
  done: Promise<unknown>;
}

/**
 * Runs jobs on BullMQ: a job is a BullMQ job whose `jobId` is the export id, and every
 * replica's worker takes jobs from the one queue, so any replica runs any job. The job store
 * stays the truth (BullMQ only holds what runs where); progress goes to the store and to
 * `job.updateProgress`. A job's worker that dies loses its lock: another replica re-runs the
 * job (the storage's commit publishes under the job's name, so there is never a second file),
 * up to `maxStalledCount` times, then the job fails. A cancel is a marker key plus a pub/sub
 * message, so the replica running the job aborts it at once, and a run that starts later sees
 * the marker. One replica per interval runs the retention sweep (a lock with a TTL).
 *
 * @example
 * ```ts
 * const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
 * const limiter = new RedisLimiter({ redis, limit: 5 });
 * const jobQueue = new BullJobQueue({ redis, concurrency: 5 });
 * const store = new RedisJobStore({ redis });
 * const manager = new ExportManager({ limiter, jobQueue, store, storage, maxQueued: 20 });
 * ```
 */
export class BullJobQueue implements JobQueue {
  readonly #redis: Redis;
  readonly #concurrency: number;
  readonly #prefix: string;
  readonly #lockDurationMs: number;
  readonly #stalledIntervalMs: number;
  readonly #maxStalledCount: number;
  readonly #maxWaiting: number | undefined;
  readonly #cancelWaitMs: number;
  readonly #onError: (error: unknown) => void;
  readonly #running = new Map<string, LocalRun>();
  readonly #connections: Redis[] = [];
  #runtime: JobQueueRuntime | undefined;
  #queue: Queue | undefined;
  #worker: Worker | undefined;
  #events: QueueEvents | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: BullJobQueueOptions) {
    if (typeof options?.redis?.duplicate !== 'function') {
      throw new TypeError(`Expected redis to be an ioredis client, got ${describeValue(options?.redis)}`);
    }
    this.#redis = options.redis;
    this.#concurrency = checkPositiveInteger('concurrency', options.concurrency);
    this.#prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX);
    this.#lockDurationMs = checkPositiveInteger('lockDurationMs', options.lockDurationMs ?? 30_000);
    this.#stalledIntervalMs = checkPositiveInteger(
      'stalledIntervalMs',
      options.stalledIntervalMs ?? this.#lockDurationMs,
    );
    const maxStalledCount = options.maxStalledCount ?? 1;
    if (!Number.isSafeInteger(maxStalledCount) || maxStalledCount < 0) {
      throw new TypeError(
        `Expected maxStalledCount to be an integer of 0 or more, got ${describeValue(maxStalledCount)}`,
      );
    }
    this.#maxStalledCount = maxStalledCount;
    this.#maxWaiting =
      options.maxWaiting === undefined ? undefined : checkPositiveInteger('maxWaiting', options.maxWaiting);
    this.#cancelWaitMs = checkPositiveInteger('cancelWaitMs', options.cancelWaitMs ?? 5_000);
    this.#onError = options.onError ?? (() => {});
  }

  /** Jobs this process runs now (waiting for their slot or exporting). */
  get running(): number {
    return this.#running.size;
  }

  async open(runtime: JobQueueRuntime): Promise<void> {
    if (this.#runtime)
      throw new Error('BullJobQueue.open() was called twice: give each manager its own queue');
    this.#runtime = runtime;
    const bullPrefix = `${this.#prefix}bull`;
    // BullMQ's blocking reads need connections that retry forever (maxRetriesPerRequest null).
    const connection = () => {
      const redis = this.#redis.duplicate({ maxRetriesPerRequest: null });
      this.#connections.push(redis);
      return redis;
    };
    this.#queue = new Queue(QUEUE_NAME, { connection: connection(), prefix: bullPrefix });
    this.#queue.on('error', (error) => this.#onError(error));
    await this.#queue.setGlobalConcurrency(this.#concurrency);

    const subscriber = connection();
    subscriber.on('message', (_channel: string, id: string) => {
      this.#running.get(id)?.controller.abort(new CancelledError());
    });
    await subscriber.subscribe(this.#cancelChannel);

    this.#events = new QueueEvents(QUEUE_NAME, { connection: connection(), prefix: bullPrefix });
    this.#events.on('error', (error) => this.#onError(error));
    // A job BullMQ gave up on (its workers died more than maxStalledCount times) was never ended
    // by a run: its record still says queued or running. One replica settles it.
    this.#events.on('failed', ({ jobId, failedReason }) => {
      void this.#settleAbandoned(jobId, failedReason).catch((error: unknown) => this.#onError(error));
    });
    await this.#events.waitUntilReady();

    this.#worker = new Worker(QUEUE_NAME, (job, token) => this.#process(job, token), {
      connection: connection(),
      prefix: bullPrefix,
      concurrency: this.#concurrency,
      lockDuration: this.#lockDurationMs,
      stalledInterval: this.#stalledIntervalMs,
      maxStalledCount: this.#maxStalledCount,
    });
    this.#worker.on('error', (error) => this.#onError(error));
    // A lock that could not be renewed means another replica may take the job over: this run
    // stops (INTERRUPTED) rather than race it to the commit.
    this.#worker.on('lockRenewalFailed', (ids) => {
      for (const id of ids) {
        this.#running
          .get(id)
          ?.controller.abort(new CancelledError('The job lost its BullMQ lock', { code: 'INTERRUPTED' }));
      }
    });
    await this.#worker.waitUntilReady();
  }

  async enqueue(record: JobRecord): Promise<void> {
    const queue = this.#opened();
    if (this.#closing) throw this.#requireRuntime().refuse('shutting_down');
    if (this.#maxWaiting !== undefined && (await queue.getWaitingCount()) >= this.#maxWaiting) {
      throw this.#requireRuntime().refuse('queue_full');
    }
    await queue.add(
      'export',
      { owner: record.owner },
      {
        jobId: record.id,
        // Runs that end INTERRUPTED (a replica shut down, a lost lease or lock) are retried,
        // within the manager's maxAttempts; lasting failures are not (UnrecoverableError).
        attempts: this.#requireRuntime().maxAttempts,
        // The store keeps the job's history; BullMQ only needs what still has to run.
        removeOnComplete: true,
        removeOnFail: true,
      },
    );
  }

  async cancel(id: string, reason: ExportError): Promise<void> {
    const queue = this.#opened();
    const runtime = this.#requireRuntime();
    // The marker first: a run that starts after this sees it, whichever replica it is on.
    await this.#redis.set(this.#cancelKey(id), '1', 'PX', CANCEL_MARKER_MS);
    const local = this.#running.get(id);
    if (local) {
      local.controller.abort(reason);
      await local.done;
      return;
    }
    const job = await queue.getJob(id);
    if (!job) {
      // Not in BullMQ: finished (settle does nothing then), or never queued.
      await runtime.settle(id, { status: 'cancelled' });
      return;
    }
    const state = await job.getState();
    if (state !== 'active') {
      try {
        await job.remove();
        await runtime.settle(id, { status: 'cancelled' });
        return;
      } catch {
        // Taken by a worker meanwhile (a locked job cannot be removed): cancel the run instead.
      }
    }
    await this.#redis.publish(this.#cancelChannel, id);
    const events = this.#events;
    if (!events) return;
    // Resolves when the run ended; a replica that died does not answer, and the marker then
    // cancels the job when another replica takes it over.
    await job.waitUntilFinished(events, this.#cancelWaitMs).catch(() => {});
  }

  async claimSweep(): Promise<boolean> {
    const interval = this.#requireRuntime().sweepIntervalMs;
    // Held for most of one interval and never released: one pass per interval for the cluster.
    const ttl = Math.max(1, interval - Math.min(1000, Math.floor(interval / 10)));
    const claimed = await this.#redis.set(`${this.#prefix}sweep`, String(process.pid), 'PX', ttl, 'NX');
    return claimed === 'OK';
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Waits for the runs of this process; the manager interrupts them after its drain timeout,
    // and BullMQ then hands their jobs to another replica (a retry).
    await this.#worker?.close();
    await this.#events?.close();
    await this.#queue?.close();
    await Promise.allSettled(this.#connections.map((redis) => redis.quit()));
  }

  async #process(job: Job, _token?: string): Promise<string> {
    const runtime = this.#requireRuntime();
    const id = job.id as string;
    const controller = new AbortController();
    let finish!: () => void;
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    this.#running.set(id, { controller, done });
    try {
      // Registered before the marker is read: a cancel either finds this run or left its marker.
      if ((await this.#redis.exists(this.#cancelKey(id))) === 1) {
        await runtime.settle(id, { status: 'cancelled' });
        return 'cancelled';
      }
      let outcome: Awaited<ReturnType<JobQueueRuntime['run']>>;
      try {
        outcome = await runtime.run(id, {
          signal: controller.signal,
          onProgress: (progress) => {
            job.updateProgress(progress).catch((error: unknown) => this.#onError(error));
          },
        });
      } catch (error) {
        // Shutting down before it ran, or the store unreachable: another attempt, maybe elsewhere.
        throw new Error(`The job did not run: ${String(error)}`, { cause: error });
      }
      if (!outcome) return 'deleted';
      if (outcome.status === 'failed') {
        const message = `${outcome.error?.code}: ${outcome.error?.message}`;
        if (outcome.error?.code === 'INTERRUPTED') throw new Error(message);
        throw new UnrecoverableError(message);
      }
      return outcome.status;
    } finally {
      this.#running.delete(id);
      finish();
    }
  }

  async #settleAbandoned(id: string, failedReason: string): Promise<void> {
    // Every replica hears the event; the first to set the key settles.
    const first = await this.#redis.set(`${this.#prefix}settled:${id}`, '1', 'PX', 60_000, 'NX');
    if (first !== 'OK') return;
    await this.#requireRuntime().settle(id, {
      status: 'failed',
      error: { code: 'INTERRUPTED', message: `The export was interrupted and given up on (${failedReason})` },
    });
  }

  get #cancelChannel(): string {
    return `${this.#prefix}cancel`;
  }

  #cancelKey(id: string): string {
    return `${this.#prefix}cancel:${id}`;
  }

  #opened(): Queue {
    if (!this.#queue) throw new Error('BullJobQueue is not open: pass it to an ExportManager as jobQueue');
    return this.#queue;
  }

  #requireRuntime(): JobQueueRuntime {
    if (!this.#runtime) throw new Error('BullJobQueue is not open: pass it to an ExportManager as jobQueue');
    return this.#runtime;
  }
}
