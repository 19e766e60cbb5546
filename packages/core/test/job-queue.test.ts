import { afterEach, describe, expect, it } from 'vitest';
import { BackpressureError, type ExportError } from '../src/errors.js';
import { ExportManager } from '../src/export-manager.js';
import type { JobRecord } from '../src/jobs/job.js';
import type { JobQueue, JobQueueRuntime } from '../src/jobs/job-queue.js';
import { describeJobQueueContract } from '../src/testing/index.js';
import { Gates, removeDir, tempDir } from './jobs.helpers.js';

/**
 * The smallest JobQueue: FIFO in this process, `concurrency` runs at once. It shows the seam's
 * shape, holds it to the contract, and drives the manager through the queue path.
 */
class InProcessQueue implements JobQueue {
  readonly #concurrency: number;
  readonly #waiting: string[] = [];
  readonly #running = new Map<string, { controller: AbortController; done: Promise<unknown> }>();
  #runtime: JobQueueRuntime | undefined;
  #closed = false;

  constructor(concurrency: number) {
    this.#concurrency = concurrency;
  }

  async open(runtime: JobQueueRuntime): Promise<void> {
    this.#runtime = runtime;
  }

  async enqueue(record: JobRecord): Promise<void> {
    if (this.#closed) throw (this.#runtime as JobQueueRuntime).refuse('shutting_down');
    this.#waiting.push(record.id);
    this.#next();
  }

  async cancel(id: string, reason: ExportError): Promise<void> {
    const index = this.#waiting.indexOf(id);
    if (index !== -1) {
      this.#waiting.splice(index, 1);
      await this.#runtime?.settle(id, { status: 'cancelled' });
      return;
    }
    const running = this.#running.get(id);
    running?.controller.abort(reason);
    await running?.done;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#running.values()].map((run) => run.done));
  }

  #next(): void {
    while (!this.#closed && this.#running.size < this.#concurrency && this.#waiting.length > 0) {
      const id = this.#waiting.shift() as string;
      const controller = new AbortController();
      const done = (this.#runtime as JobQueueRuntime)
        .run(id, { signal: controller.signal })
        .catch(() => {})
        .finally(() => {
          this.#running.delete(id);
          this.#next();
        });
      this.#running.set(id, { controller, done });
    }
  }
}

describeJobQueueContract('an in-process FIFO queue', ({ concurrency }) => new InProcessQueue(concurrency), {
  replicas: false,
});

describe('ExportManager with a jobQueue', () => {
  let directory: string | undefined;
  const managers: ExportManager[] = [];
  afterEach(async () => {
    await Promise.allSettled(managers.splice(0).map((manager) => manager.close({ drainTimeoutMs: 0 })));
    if (directory) await removeDir(directory);
  });

  it('refuses a jobQueue that is not one, or one without a store and storage, with a TypeError', () => {
    expect(() => new ExportManager({ directory: '/tmp/x', jobQueue: {} as JobQueue })).toThrow(
      /Expected jobQueue to be a JobQueue .*got/,
    );
    expect(() => new ExportManager({ jobQueue: new InProcessQueue(1) })).toThrow(
      'Expected store and storage (shared ones) with jobQueue',
    );
  });

  it('runs jobs through the queue: stored first, run by the queue, cancelled through it', async () => {
    directory = await tempDir();
    const gates = new Gates();
    const manager = new ExportManager({
      directory,
      jobQueue: new InProcessQueue(1),
      datasets: { gated: gates.dataset() },
      metrics: false,
    });
    managers.push(manager);
    const first = await manager.start({ dataset: 'gated', format: 'csv', params: { key: 'a', rows: 2 } });
    expect(first.status).toBe('queued');
    const second = await manager.start({ dataset: 'gated', format: 'csv', params: { key: 'b' } });
    await gates.waiting('a');
    expect((await manager.get(first.id)).status).toBe('running');
    // The second waits in the queue (concurrency 1), so cancelling it settles it: it never runs.
    expect((await manager.cancel(second.id)).status).toBe('cancelled');
    expect(gates.closed.has('b')).toBe(false);
    gates.open('a');
    const done = await manager.wait(first.id);
    expect(done.status).toBe('succeeded');
    expect(done.progress.rows).toBe(2);
  });

  it('does not run the start-up recovery with a queue: a running job in the store stays running', async () => {
    directory = await tempDir();
    const gates = new Gates();
    const first = new ExportManager({ directory, datasets: { gated: gates.dataset() }, metrics: false });
    managers.push(first);
    const job = await first.start({ dataset: 'gated', format: 'csv', params: { key: 'r' } });
    await gates.waiting('r');
    // A second manager over the same records, as another replica: with a queue it leaves the job alone.
    const replica = new ExportManager({ directory, jobQueue: new InProcessQueue(1), metrics: false });
    managers.push(replica);
    await replica.ready;
    expect((await replica.get(job.id)).status).toBe('running');
    gates.open('r');
    expect((await first.wait(job.id)).status).toBe('succeeded');
  });

  it('answers 503 WRITE_FAILED when the queue cannot take the job (its backend is down), and keeps no record', async () => {
    directory = await tempDir();
    const queue = new InProcessQueue(1);
    queue.enqueue = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    };
    const manager = new ExportManager({
      directory,
      jobQueue: queue,
      datasets: { gated: new Gates().dataset() },
      metrics: false,
    });
    managers.push(manager);
    const refused = manager.start({ dataset: 'gated', format: 'csv', params: { key: 'x' } });
    await expect(refused).rejects.toMatchObject({ code: 'WRITE_FAILED', statusCode: 503 });
    expect((await manager.list()).jobs).toEqual([]);
  });

  it('answers a refusal of the queue as the error, and keeps no record of the refused job', async () => {
    directory = await tempDir();
    const queue = new InProcessQueue(1);
    const manager = new ExportManager({
      directory,
      jobQueue: queue,
      datasets: { gated: new Gates().dataset() },
      metrics: false,
    });
    managers.push(manager);
    await manager.ready;
    await queue.close();
    const refused = manager.start({ dataset: 'gated', format: 'csv', params: { key: 'x' } });
    await expect(refused).rejects.toBeInstanceOf(BackpressureError);
    await expect(refused).rejects.toMatchObject({ statusCode: 503 });
    expect((await manager.list()).jobs).toEqual([]);
  });
});
