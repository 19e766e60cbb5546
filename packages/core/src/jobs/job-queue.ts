import type { BackpressureError, BackpressureReason, ExportError } from '../errors.js';
import type { JobErrorInfo, JobRecord } from './job.js';

/** How a run of a job ended, as its stored record says (`undefined`: the job was deleted). */
export type JobRunOutcome = Pick<JobRecord, 'id' | 'status' | 'error'> | undefined;

/**
 * What the manager gives a {@link JobQueue} at start-up: how to run a stored job in this
 * process, and how to settle one that runs nowhere. Every transition is written to the store,
 * which stays the truth about a job; the queue only decides where and when a job runs.
 */
export interface JobQueueRuntime {
  /**
   * Runs the stored job `id` here: waits for a slot (admission, never refused for the queue or
   * the owner limit: the job was admitted when it was created), exports, commits the file and
   * writes every transition, progress included, to the store. A job already finished (a run
   * whose worker died after it finished) is not run again; a job last `failed` with
   * `INTERRUPTED` runs again. Aborting `signal` ends the run with the signal's reason
   * (`CANCELLED` ends the job `cancelled`; `INTERRUPTED` leaves it to be run again).
   *
   * Resolves with how the job ended; rejects only when the store cannot be read. Rejects with
   * a `shutting_down` `BackpressureError`, the record untouched, when the manager is closing.
   */
  run(
    id: string,
    options: { signal: AbortSignal; onProgress?: (progress: { rows: number; bytes: number }) => void },
  ): Promise<JobRunOutcome>;
  /**
   * Ends a job that runs nowhere: taken out of the queue before it started (`cancelled`), or
   * given up on (`failed`, e.g. its worker died more often than allowed). Does nothing to a
   * job that is finished or no longer exists. Emits `job:cancelled` or `job:failed` here.
   */
  settle(
    id: string,
    outcome: { status: 'cancelled' } | { status: 'failed'; error: JobErrorInfo },
  ): Promise<void>;
  /** A refusal of a new job (429 `queue_full` or 503 `shutting_down`), counted and reported like the manager's own. */
  refuse(reason: BackpressureReason): BackpressureError;
  /** The manager's retention interval (`retention.sweepIntervalMs`), for a queue that schedules one pass per cluster. */
  readonly sweepIntervalMs: number;
  /** `maxAttempts` of the manager: how many times one job may start. */
  readonly maxAttempts: number;
  /** Tells the manager's `warning` listeners. */
  warn(message: string, cause?: unknown): void;
}

/**
 * The seam for where and when queued jobs run. Without one (`ExportManagerOptions.jobQueue`),
 * jobs run in the process that created them, under its admission, and the manager's start-up
 * recovery treats every unfinished job in the store as its own. A shared queue (BullMQ over
 * Redis) lets any replica run any job: it owns recovery of jobs whose process died, carries
 * cancellations to the process running the job, and decides which replica sweeps.
 */
export interface JobQueue {
  /**
   * Binds the queue to the manager and starts taking jobs; called once, after the store and
   * the storage opened. The manager's own start-up recovery does not run with a queue.
   */
  open(runtime: JobQueueRuntime): Promise<void>;
  /**
   * Takes a new job, already stored as `queued`. Throws to refuse it (e.g. `runtime.refuse`);
   * the manager then removes the record, so no job exists.
   */
  enqueue(record: JobRecord): Promise<void>;
  /**
   * Stops the job wherever it is: out of the queue if it waits, its run aborted with `reason`
   * in whichever process runs it. Resolves once the job is finished in the store, or, when its
   * process cannot be reached, once the cancellation is recorded so that no later run starts.
   */
  cancel(id: string, reason: ExportError): Promise<void>;
  /**
   * Whether this process runs the retention pass of the current interval: a shared queue
   * answers true on one replica per interval. Without this method every process sweeps.
   */
  claimSweep?(): Promise<boolean>;
  /**
   * Stops taking jobs. Resolves once the runs of this process have ended (the manager
   * interrupts them after its drain timeout) and their jobs were handed back or finished.
   */
  close(): Promise<void>;
}
