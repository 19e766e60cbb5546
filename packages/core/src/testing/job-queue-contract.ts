import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BackpressureError, CancelledError, isExportError } from '../errors.js';
import type { JobRecord } from '../jobs/job.js';
import type { JobQueue, JobQueueRuntime, JobRunOutcome } from '../jobs/job-queue.js';
import type { ContractCase } from './contract-case.js';
import { type Deferred, deferred } from './deferred.js';

/**
 * Makes a queue that runs at most `concurrency` jobs at once. Queues made within one test share
 * their backend, as the replicas of one cluster do (a single-process queue shares nothing: then
 * pass `replicas: false`); no two tests share one.
 */
export type MakeJobQueue = (options: { concurrency: number }) => JobQueue | Promise<JobQueue>;

export interface JobQueueContractOptions {
  /** False for a queue that cannot have replicas: the cases with two queues are skipped. @default true */
  replicas?: boolean;
  /** Runs after each test, once its queues are closed (e.g. to delete the keys they used). */
  cleanup?: () => Promise<void>;
}

/** One call of `runtime.run`, held until the case finishes it or its signal aborts. */
export interface RecordedRun {
  readonly id: string;
  readonly signal: AbortSignal;
  /** Ends the run with this status. */
  finish(status: 'succeeded' | 'failed'): void;
  /** Settles with the run's outcome once `run` returned it. */
  readonly ended: Promise<JobRunOutcome>;
}

/** A runtime that records what the queue asks of it, for the cases (and for implementers' own tests). */
export class RecordingRuntime implements JobQueueRuntime {
  readonly runs: RecordedRun[] = [];
  readonly settled: { id: string; status: string }[] = [];
  readonly sweepIntervalMs = 60_000;
  readonly maxAttempts = 3;
  readonly #started = new Map<string, Deferred<RecordedRun>>();

  /** Resolves with the first run of `id` once it started. */
  started(id: string): Promise<RecordedRun> {
    return this.#entry(id).promise;
  }

  run(id: string, options: { signal: AbortSignal }): Promise<JobRunOutcome> {
    const finished = deferred<JobRunOutcome>();
    const { signal } = options;
    const onAbort = () => {
      const reason: unknown = signal.reason;
      const code = isExportError(reason) ? reason.code : 'INTERRUPTED';
      finished.resolve(
        code === 'CANCELLED'
          ? { id, status: 'cancelled', error: null }
          : { id, status: 'failed', error: { code, message: String(reason) } },
      );
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const run: RecordedRun = {
      id,
      signal,
      finish: (status) =>
        finished.resolve({
          id,
          status,
          error: status === 'failed' ? { code: 'SOURCE_FAILED', message: 'x' } : null,
        }),
      ended: finished.promise,
    };
    this.runs.push(run);
    this.#entry(id).resolve(run);
    return finished.promise;
  }

  async settle(id: string, outcome: { status: 'cancelled' | 'failed' }): Promise<void> {
    this.settled.push({ id, status: outcome.status });
  }

  refuse(reason: 'queue_full' | 'shutting_down' | 'concurrency_limit' | 'owner_limit' | 'queue_timeout') {
    return new BackpressureError({ reason, limit: 1, inFlight: 1 });
  }

  warn(): void {}

  #entry(id: string): Deferred<RecordedRun> {
    let entry = this.#started.get(id);
    if (!entry) {
      entry = deferred<RecordedRun>();
      this.#started.set(id, entry);
    }
    return entry;
  }
}

export interface JobQueueContext {
  /** A queue from `makeQueue`, opened with `runtime`, closed after the case. */
  open(concurrency: number, runtime: RecordingRuntime): Promise<JobQueue>;
}

function makeRecord(): JobRecord {
  return {
    version: 1,
    id: `exp_${randomBytes(16).toString('base64url')}`,
    status: 'queued',
    dataset: 'orders',
    format: 'csv',
    params: {},
    columns: null,
    filename: null,
    compression: 'none',
    csv: null,
    owner: 'alice',
    idempotencyKey: null,
    createdAt: new Date().toISOString(),
    startedAt: null,
    finishedAt: null,
    expiresAt: null,
    rows: 0,
    bytes: 0,
    totalRows: null,
    file: null,
    error: null,
    attempts: 0,
  };
}

export const jobQueueCases: readonly ContractCase<JobQueueContext>[] = [
  {
    name: 'runs an enqueued job through runtime.run with its id',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const queue = await open(1, runtime);
      const record = makeRecord();
      await queue.enqueue(record);
      const run = await runtime.started(record.id);
      expect(run.signal.aborted).toBe(false);
      run.finish('succeeded');
      expect(await run.ended).toMatchObject({ id: record.id, status: 'succeeded' });
    },
  },
  {
    name: 'runs at most `concurrency` jobs at once, the next when one ends',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const queue = await open(1, runtime);
      const [first, second] = [makeRecord(), makeRecord()];
      await queue.enqueue(first);
      const running = await runtime.started(first.id);
      await queue.enqueue(second);
      expect(runtime.runs.map((run) => run.id)).toEqual([first.id]);
      running.finish('succeeded');
      (await runtime.started(second.id)).finish('succeeded');
      expect(runtime.runs.map((run) => run.id)).toEqual([first.id, second.id]);
    },
  },
  {
    name: 'cancel() aborts a running job with the reason and resolves once its run ended',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const queue = await open(1, runtime);
      const record = makeRecord();
      await queue.enqueue(record);
      const run = await runtime.started(record.id);
      await queue.cancel(record.id, new CancelledError());
      expect(run.signal.aborted).toBe(true);
      expect((run.signal.reason as CancelledError).code).toBe('CANCELLED');
      expect(await run.ended).toMatchObject({ status: 'cancelled' });
    },
  },
  {
    name: 'cancel() of a job that waits settles it cancelled, and it never runs',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const queue = await open(1, runtime);
      const [busy, waiting, after] = [makeRecord(), makeRecord(), makeRecord()];
      await queue.enqueue(busy);
      const running = await runtime.started(busy.id);
      await queue.enqueue(waiting);
      await queue.cancel(waiting.id, new CancelledError());
      expect(runtime.settled).toEqual([{ id: waiting.id, status: 'cancelled' }]);
      await queue.enqueue(after);
      running.finish('succeeded');
      (await runtime.started(after.id)).finish('succeeded');
      expect(runtime.runs.map((run) => run.id)).toEqual([busy.id, after.id]);
    },
  },
  {
    name: 'close() resolves once the runs of the queue ended',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const queue = await open(1, runtime);
      const record = makeRecord();
      await queue.enqueue(record);
      const run = await runtime.started(record.id);
      let closed = false;
      const closing = queue.close().then(() => {
        closed = true;
      });
      await Promise.resolve();
      expect(closed).toBe(false);
      run.finish('succeeded');
      await closing;
      expect(closed).toBe(true);
    },
  },
  {
    name: 'a job enqueued on one replica can be cancelled from another',
    needs: 'replicas',
    async run({ open }) {
      const runtime = new RecordingRuntime();
      const other = new RecordingRuntime();
      const queue = await open(1, runtime);
      const peer = await open(1, other);
      const record = makeRecord();
      await queue.enqueue(record);
      const run = await Promise.race([runtime.started(record.id), other.started(record.id)]);
      await peer.cancel(record.id, new CancelledError());
      expect(run.signal.aborted).toBe(true);
      expect(await run.ended).toMatchObject({ status: 'cancelled' });
    },
  },
  {
    name: 'claimSweep() is won by one replica per interval',
    needs: 'replicas',
    async run({ open }) {
      const queues = [await open(1, new RecordingRuntime()), await open(1, new RecordingRuntime())];
      if (!queues.every((queue) => queue.claimSweep)) return;
      const claims = await Promise.all(queues.map((queue) => queue.claimSweep?.()));
      expect(claims.filter(Boolean)).toHaveLength(1);
    },
  },
];

/** Runs one case with fresh queues, closing them (and running `cleanup`) afterwards. */
export async function runJobQueueCase(
  contractCase: ContractCase<JobQueueContext>,
  makeQueue: MakeJobQueue,
  options: JobQueueContractOptions = {},
): Promise<void> {
  const opened: JobQueue[] = [];
  const runtimes: RecordingRuntime[] = [];
  const open = async (concurrency: number, runtime: RecordingRuntime) => {
    const queue = await makeQueue({ concurrency });
    await queue.open(runtime);
    opened.push(queue);
    runtimes.push(runtime);
    return queue;
  };
  try {
    await contractCase.run({ open });
  } finally {
    // Runs a failed case left held would keep close() waiting: end them, as the manager does.
    for (const runtime of runtimes) for (const run of runtime.runs) run.finish('succeeded');
    await Promise.allSettled(opened.map((queue) => queue.close()));
    await options.cleanup?.();
  }
}

/**
 * The contract of a {@link JobQueue}: call at the top level of a test file. Without
 * `replicas: false`, queues made in one test must share their backend.
 *
 * @example
 * ```ts
 * describeJobQueueContract('BullJobQueue', ({ concurrency }) =>
 *   new BullJobQueue({ redis: new Redis(), concurrency, prefix }),
 * );
 * ```
 */
export function describeJobQueueContract(
  name: string,
  makeQueue: MakeJobQueue,
  options: JobQueueContractOptions = {},
): void {
  describe(`JobQueue contract: ${name}`, () => {
    for (const contractCase of jobQueueCases) {
      const skip = contractCase.needs === 'replicas' && options.replicas === false;
      it.skipIf(skip)(contractCase.name, () => runJobQueueCase(contractCase, makeQueue, options));
    }
  });
}
