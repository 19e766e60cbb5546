import { fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  type DatasetDefinition,
  ExportManager,
  type Job,
  type JobChange,
  LocalExportStorage,
  type Row,
} from '@spark-export/core';
import { type Deferred, deferred, describeJobQueueContract } from '@spark-export/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BullJobEventFeed,
  BullJobQueue,
  type BullJobQueueOptions,
  RedisJobStore,
  RedisLimiter,
} from '../src/index.js';
import { type RedisServer, requireRedisServer, startRedis, uniquePrefix } from './redis-server.js';

const bin = await requireRedisServer();

function row(index: number): Row {
  return { id: index, name: `row-${index}`, pad: 'x'.repeat(100) };
}

/**
 * Sources shared by every replica of a test (they run in this process): each writes
 * `params.rows` rows, then waits at its gate until the test opens it or the export aborts.
 * `running` counts the sources that are exporting right now, across replicas.
 */
class Gates {
  readonly #gates = new Map<string, Deferred>();
  readonly #waiting = new Map<string, Deferred>();
  readonly aborted = new Set<string>();
  readonly started: string[] = [];
  running = 0;
  maxRunning = 0;

  #get(map: Map<string, Deferred>, key: string): Deferred {
    let entry = map.get(key);
    if (!entry) {
      entry = deferred();
      map.set(key, entry);
    }
    return entry;
  }

  open(key: string): void {
    this.#get(this.#gates, key).resolve();
  }

  waiting(key: string): Promise<void> {
    return this.#get(this.#waiting, key).promise;
  }

  dataset(): DatasetDefinition {
    return {
      columns: [{ name: 'id' }, { name: 'name' }, { name: 'pad' }],
      params: { key: { type: 'string', required: true }, rows: { type: 'integer', default: 3, min: 0 } },
      source: (params, { signal }) => this.#source(params.key as string, params.rows as number, signal),
    };
  }

  async *#source(key: string, count: number, signal: AbortSignal): AsyncGenerator<Row> {
    this.started.push(key);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      for (let index = 0; index < count; index++) yield row(index);
      const gate = this.#get(this.#gates, key).promise;
      this.#get(this.#waiting, key).resolve();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.aborted.add(key);
          reject(signal.reason);
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        gate.then(resolve);
      });
    } finally {
      this.running--;
    }
  }
}

/** Resolves with the first job event of `name` for job `id` on any of `managers`. */
function nextEvent(
  managers: readonly ExportManager[],
  name: 'job:started' | 'job:succeeded' | 'job:failed' | 'job:cancelled',
  id?: string,
): Promise<{ job: Job; manager: ExportManager }> {
  return new Promise((resolve) => {
    for (const manager of managers) {
      const listener = (job: Job) => {
        if (id !== undefined && job.id !== id) return;
        for (const other of managers) other.off(name, listener);
        resolve({ job, manager });
      };
      manager.on(name, listener);
    }
  });
}

/** Reads `read()` until `done` holds: a bounded wait (at most 200 reads, 10 ms apart) for a write another connection makes. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let attempt = 0; !done(value); attempt++) {
    if (attempt >= 200) throw new Error(`Still not there after 200 reads: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
    value = await read();
  }
  return value;
}

/** The dataset the child replica hangs in (fixtures/replica.mjs); here it ends. */
const slowDataset: DatasetDefinition = {
  columns: [{ name: 'id' }, { name: 'pad' }],
  async *source() {
    for (let id = 0; id < CHILD_ROWS; id++) yield { id, pad: 'x'.repeat(100) };
  },
};
const CHILD_ROWS = 2000;
const fixture = fileURLToPath(new URL('./fixtures/replica.mjs', import.meta.url));
const bullmqDist = fileURLToPath(new URL('../dist/index.js', import.meta.url));

describe.skipIf(!bin)('BullJobQueue (real redis-server, two replicas in one process)', () => {
  let server: RedisServer;
  let directory: string;
  const managers: ExportManager[] = [];
  const limiters: RedisLimiter[] = [];
  let lastPrefix = '';
  const feedPrefix = () => lastPrefix;
  /** The queues of the last cluster(), by replica. */
  let queues: BullJobQueue[] = [];

  beforeAll(async () => {
    server = await startRedis(bin as string);
  });
  afterAll(async () => {
    await server?.stop();
  });
  afterEach(async () => {
    await Promise.allSettled(managers.splice(0).map((manager) => manager.close({ drainTimeoutMs: 0 })));
    await Promise.allSettled(limiters.splice(0).map((limiter) => limiter.drained()));
    if (directory) await rm(directory, { recursive: true, force: true });
  });

  /** `count` replicas sharing one Redis prefix and one exports directory. */
  async function cluster(
    count: number,
    options: {
      limit: number;
      gates: Gates;
      queue?: Partial<BullJobQueueOptions>;
      maxQueued?: number;
      /** Join replicas that run already (a child process) on this prefix and in `directory`. */
      prefix?: string;
    },
  ): Promise<[ExportManager, ExportManager]> {
    const prefix = options.prefix ?? uniquePrefix();
    lastPrefix = prefix;
    if (!options.prefix) directory = await mkdtemp(join(tmpdir(), 'spark-bull-'));
    const replicas: ExportManager[] = [];
    queues = [];
    for (let index = 0; index < count; index++) {
      const redis = server.client();
      const limiter = new RedisLimiter({ redis, limit: options.limit, prefix, retryIntervalMs: 20 });
      limiters.push(limiter);
      const jobQueue = new BullJobQueue({ redis, concurrency: options.limit, prefix, ...options.queue });
      queues.push(jobQueue);
      const manager = new ExportManager({
        limiter,
        store: new RedisJobStore({ redis, prefix }),
        storage: new LocalExportStorage(directory),
        jobQueue,
        maxQueued: options.maxQueued ?? 10,
        progressIntervalMs: 0,
        datasets: { gated: options.gates.dataset(), slow: slowDataset },
        metrics: false,
      });
      managers.push(manager);
      replicas.push(manager);
    }
    await Promise.all(replicas.map((manager) => manager.ready));
    // Typed as a pair for destructuring; a cluster of one leaves the second undefined, unused.
    return replicas as [ExportManager, ExportManager];
  }

  async function committedFiles(id: string): Promise<string[]> {
    return (await readdir(directory)).filter((name) => name.startsWith(id) && !name.endsWith('.part'));
  }

  it('runs a job created on one replica and answers for it, and serves its file, from every replica', async () => {
    const gates = new Gates();
    const [a, b] = await cluster(2, { limit: 2, gates });
    const succeeded = nextEvent([a, b], 'job:succeeded');
    const job = await a.start({
      dataset: 'gated',
      format: 'csv',
      params: { key: 'one', rows: 5 },
      owner: 'u1',
    });
    expect(job.status).toBe('queued');
    await gates.waiting('one');
    // Progress is written to the store while the job runs (a round trip after the rows were
    // written), so the replica that does not run it sees it too.
    for (const manager of [a, b]) {
      const running = await eventually(
        () => manager.get(job.id, { owner: 'u1' }),
        (seen) => seen.progress.rows === 5,
      );
      expect(running.status).toBe('running');
    }
    gates.open('one');
    await succeeded;
    for (const manager of [a, b]) {
      const done = await manager.get(job.id, { owner: 'u1' });
      expect(done.status).toBe('succeeded');
      expect((await manager.list({ owner: 'u1' })).jobs.map((listed) => listed.id)).toEqual([job.id]);
      const file = await manager.file(job.id, { owner: 'u1' });
      const bytes = await readFile(file.path as string);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(file.sha256);
      expect(bytes.toString().split('\n')).toHaveLength(7);
    }
    await expect(b.get(job.id, { owner: 'u2' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await committedFiles(job.id)).toHaveLength(1);
  });

  it('keeps streams and jobs of all replicas under one limit', async () => {
    const gates = new Gates();
    const [a, b] = await cluster(2, { limit: 2, gates });
    // A stream on A holds one of the two slots of the cluster.
    const stream = await a.open({ dataset: 'gated', format: 'csv', params: { key: 'stream', rows: 1 } });
    stream.body.resume();
    await gates.waiting('stream');
    const jobs: Job[] = [];
    for (let index = 0; index < 4; index++) {
      const replica = index % 2 === 0 ? a : b;
      jobs.push(await replica.start({ dataset: 'gated', format: 'csv', params: { key: `job-${index}` } }));
    }
    // Only one job can run next to the stream; the others wait (BullMQ's global concurrency
    // lets two be active, and the second waits for its slot from the limiter).
    await Promise.race(jobs.map((_, index) => gates.waiting(`job-${index}`)));
    expect(gates.running).toBe(2);
    gates.open('stream');
    for await (const _chunk of stream.body) {
      // drained
    }
    let finished = 0;
    while (finished < jobs.length) {
      const key = gates.started.filter((started) => started.startsWith('job-'))[finished] as string;
      await gates.waiting(key);
      const succeeded = nextEvent([a, b], 'job:succeeded');
      gates.open(key);
      await succeeded;
      finished++;
    }
    expect(gates.maxRunning).toBe(2);
    for (const job of jobs) expect((await b.get(job.id)).status).toBe('succeeded');
  });

  it('cancels from one replica a job running on the other within a second, leaving no file', async () => {
    const gates = new Gates();
    const replicas = await cluster(2, { limit: 2, gates });
    const [a] = replicas;
    const started = nextEvent(replicas, 'job:started');
    const job = await a.start({ dataset: 'gated', format: 'csv', params: { key: 'c' } });
    const { manager: runner } = await started;
    await gates.waiting('c');
    const other = replicas.find((manager) => manager !== runner) as ExportManager;
    const cancelled = nextEvent([runner], 'job:cancelled', job.id);
    const before = performance.now();
    const answer = await other.cancel(job.id);
    const elapsed = performance.now() - before;
    await cancelled;
    expect(answer.status).toBe('cancelled');
    expect(elapsed).toBeLessThan(1000);
    expect(gates.aborted.has('c')).toBe(true);
    expect(await readdir(directory)).toEqual([]);
    // Deleting it from the other replica removes the record everywhere.
    await other.delete(job.id);
    await expect(runner.get(job.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('hands the jobs of a replica that shuts down to another replica, which finishes them', async () => {
    const gates = new Gates();
    const replicas = await cluster(2, { limit: 2, gates });
    const started = nextEvent(replicas, 'job:started');
    const job = await replicas[0].start({ dataset: 'gated', format: 'csv', params: { key: 'h' } });
    const { manager: first } = await started;
    await gates.waiting('h');
    const other = replicas.find((manager) => manager !== first) as ExportManager;
    const restarted = nextEvent([other], 'job:started', job.id);
    const succeeded = nextEvent([other], 'job:succeeded', job.id);
    await first.close({ drainTimeoutMs: 0 });
    expect(gates.aborted.has('h')).toBe(true);
    await restarted;
    gates.open('h');
    await succeeded;
    expect((await other.get(job.id)).status).toBe('succeeded');
    expect(await committedFiles(job.id)).toHaveLength(1);
  });

  it('cancels a job still waiting in the queue: it never runs', async () => {
    const gates = new Gates();
    const [a, b] = await cluster(2, { limit: 1, gates });
    const first = await a.start({
      dataset: 'gated',
      format: 'csv',
      params: { key: 'first' },
    });
    await gates.waiting('first');
    const second = await b.start({
      dataset: 'gated',
      format: 'csv',
      params: { key: 'second' },
    });
    expect((await a.cancel(second.id)).status).toBe('cancelled');
    const succeeded = nextEvent([a, b], 'job:succeeded', first.id);
    gates.open('first');
    await succeeded;
    // A third job runs after the first: the cancelled one was taken out of the queue, not run.
    const third = await b.start({
      dataset: 'gated',
      format: 'csv',
      params: { key: 'third' },
    });
    await gates.waiting('third');
    expect(gates.started).toEqual(['first', 'third']);
    expect((await b.get(second.id)).status).toBe('cancelled');
    gates.open('third');
    await nextEvent([a, b], 'job:succeeded', third.id);
  });

  it('refuses a job with 429 queue_full once maxWaiting jobs wait, and creates no record', async () => {
    const gates = new Gates();
    const [a] = await cluster(1, { limit: 1, gates, queue: { maxWaiting: 1 } });
    const manager = a;
    await manager.start({ dataset: 'gated', format: 'csv', params: { key: 'run' }, owner: 'q' });
    await gates.waiting('run');
    await manager.start({ dataset: 'gated', format: 'csv', params: { key: 'wait' }, owner: 'q' });
    const refused = manager.start({ dataset: 'gated', format: 'csv', params: { key: 'no' }, owner: 'q' });
    await expect(refused).rejects.toMatchObject({ statusCode: 429, reason: 'queue_full' });
    expect((await manager.list({ owner: 'q' })).jobs).toHaveLength(2);
  });

  it('keeps idempotency keys cluster-wide: the same key on two replicas at once gives one job', async () => {
    const gates = new Gates();
    const [a, b] = await cluster(2, { limit: 2, gates });
    const request = {
      dataset: 'gated',
      format: 'csv' as const,
      params: { key: 'idem' },
      owner: 'u',
      idempotencyKey: 'k-1',
    };
    const [one, two] = await Promise.all([a.start(request), b.start(request)]);
    expect(one.id).toBe(two.id);
    expect((await a.list({ owner: 'u' })).jobs).toHaveLength(1);
    await gates.waiting('idem');
    gates.open('idem');
    await nextEvent([a, b], 'job:succeeded', one.id);
    expect(gates.started).toEqual(['idem']);
  });

  it('feeds every replica the changes of jobs that run on any replica (BullJobEventFeed)', async () => {
    const gates = new Gates();
    const replicas = await cluster(2, { limit: 1, gates });
    const feed = new BullJobEventFeed({
      redis: server.client(),
      store: new RedisJobStore({ redis: server.client(), prefix: feedPrefix() }),
      prefix: feedPrefix(),
    });
    await feed.waitUntilReady();
    const changes: JobChange[] = [];
    const ended = deferred();
    const unsubscribe = feed.subscribe((change) => {
      changes.push(change);
      if (change.type === 'succeeded' || change.type === 'cancelled') ended.resolve();
    });
    try {
      const job = await replicas[0].start({
        dataset: 'gated',
        format: 'csv',
        params: { key: 'f', rows: 2 },
        owner: 'o',
      });
      await gates.waiting('f');
      gates.open('f');
      await ended.promise;
      const types = changes.filter((change) => change.jobId === job.id).map((change) => change.type);
      expect(types[0]).toBe('queued');
      expect(types).toContain('started');
      expect(types.at(-1)).toBe('succeeded');
      expect(changes.every((change) => change.owner === 'o')).toBe(true);
      // The feed only wakes; the state is read from any replica.
      expect((await replicas[1].get(job.id, { owner: 'o' })).status).toBe('succeeded');
    } finally {
      unsubscribe();
      await feed.close();
    }
  });

  it('lets one replica per interval run the retention sweep', async () => {
    const gates = new Gates();
    await cluster(3, { limit: 1, gates });
    const claims = await Promise.all(queues.map((queue) => queue.claimSweep()));
    expect(claims.filter(Boolean)).toHaveLength(1);
    // Within the same interval nobody claims it again, the winner included.
    expect(await Promise.all(queues.map((queue) => queue.claimSweep()))).toEqual([false, false, false]);
  });

  describe('a replica killed mid-job (SIGKILL, child process)', () => {
    const lockDurationMs = 1000;

    beforeAll(() => {
      if (!existsSync(bullmqDist)) {
        throw new Error(
          `${bullmqDist} is missing: the crash tests run the built packages in a child process. ` +
            'Build them first (`npm run build` at the root); `npm test` does.',
        );
      }
    });

    /** Starts a replica in a child process, lets it start a job, and kills it mid-export. */
    async function killedReplica(limit: number): Promise<{ prefix: string; id: string }> {
      const prefix = uniquePrefix();
      directory = await mkdtemp(join(tmpdir(), 'spark-bull-crash-'));
      const child = fork(fixture, {
        env: {
          ...process.env,
          SPARK_REPLICA: JSON.stringify({
            port: server.port,
            prefix,
            directory,
            limit,
            lockDurationMs,
            rows: CHILD_ROWS,
          }),
        },
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('exit', (_code, signal) => resolve(signal)),
      );
      const id = await new Promise<string>((resolve, reject) => {
        child.once('message', (message: { type: string; id: string }) => resolve(message.id));
        void exited.then(() => reject(new Error(`The child replica exited early:\n${stderr}`)));
      });
      process.kill(child.pid as number, 'SIGKILL');
      expect(await exited).toBe('SIGKILL');
      return { prefix, id };
    }

    it('re-runs the job on a surviving replica: succeeded, with exactly one file', async () => {
      const { prefix, id } = await killedReplica(2);
      const gates = new Gates();
      const [survivor] = await cluster(1, {
        limit: 2,
        gates,
        prefix,
        queue: { lockDurationMs, stalledIntervalMs: 200 },
      });
      expect((await survivor.get(id)).status).toBe('running');
      const { job } = await nextEvent([survivor], 'job:succeeded', id);
      expect(job.progress.rows).toBe(CHILD_ROWS);
      // One committed file, the partial file of the dead run replaced, and it is the one served.
      expect(await readdir(directory)).toEqual([job.file?.name]);
      const file = await survivor.file(id);
      const bytes = await readFile(file.path as string);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(file.sha256);
      expect(bytes.toString().trimEnd().split('\n')).toHaveLength(CHILD_ROWS + 1);
      // Two starts: the dead one and the re-run.
      expect((await new RedisJobStore({ redis: server.client(), prefix }).get(id))?.attempts).toBe(2);
    });

    it('fails the job (INTERRUPTED) when its workers died more often than maxStalledCount, leaving no file', async () => {
      const { prefix, id } = await killedReplica(2);
      const gates = new Gates();
      const [survivor] = await cluster(1, {
        limit: 2,
        gates,
        prefix,
        queue: { lockDurationMs, stalledIntervalMs: 200, maxStalledCount: 0 },
      });
      const { job } = await nextEvent([survivor], 'job:failed', id);
      expect(job.error?.code).toBe('INTERRUPTED');
      expect((await survivor.get(id)).status).toBe('failed');
      expect(await readdir(directory)).toEqual([]);
    });
  });
});

// The JobQueue contract: queues made within one case share a prefix (replicas of one cluster).
let contractServer: RedisServer | undefined;
let contractPrefix = uniquePrefix();
if (bin) {
  beforeAll(async () => {
    contractServer = await startRedis(bin);
  });
  afterAll(async () => {
    await contractServer?.stop();
  });
}
describe.skipIf(!bin)('BullJobQueue', () => {
  describeJobQueueContract(
    'BullJobQueue',
    ({ concurrency }) =>
      new BullJobQueue({
        redis: (contractServer as RedisServer).client(),
        concurrency,
        prefix: contractPrefix,
      }),
    {
      cleanup: async () => {
        contractPrefix = uniquePrefix();
      },
    },
  );
});
