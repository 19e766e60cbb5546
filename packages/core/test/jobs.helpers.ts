import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatasetDefinition, Row } from '../src/dataset.js';
import { ExportManager, type ExportManagerOptions } from '../src/export-manager.js';
import type { Job } from '../src/jobs/job.js';
import { type Deferred, deferred } from '../src/testing/deferred.js';

/** About 120 bytes of CSV per row, so ~600 rows fill one 64 KiB chunk of the writer. */
export function makeRow(index: number): Row {
  return { id: index, name: `row-${index}`, pad: 'x'.repeat(100) };
}

export function* rows(count: number): Generator<Row> {
  for (let index = 0; index < count; index++) yield makeRow(index);
}

/** A plain dataset of `params.rows` rows (default 10). */
export const plainDataset: DatasetDefinition = {
  columns: [{ name: 'id' }, { name: 'name' }, { name: 'pad' }],
  params: { rows: { type: 'integer', default: 10, min: 0 } },
  source: (params) => rows(params.rows as number),
};

/**
 * Sources that write `params.rows` rows, then wait until the test opens their gate (then end)
 * or the export is aborted (then throw the abort reason, as a well-behaved source does).
 */
export class Gates {
  readonly #gates = new Map<string, Deferred>();
  readonly #waiting = new Map<string, Deferred>();
  /** Keys whose source ran its `finally` (closed by the export, whatever the outcome). */
  readonly closed = new Set<string>();

  #get(map: Map<string, Deferred>, key: string): Deferred {
    let entry = map.get(key);
    if (!entry) {
      entry = deferred();
      map.set(key, entry);
    }
    return entry;
  }

  /** Lets the source of `key` end normally. */
  open(key: string): void {
    this.#get(this.#gates, key).resolve();
  }

  /** Resolves once the source of `key` has yielded its rows and waits at its gate. */
  waiting(key: string): Promise<void> {
    return this.#get(this.#waiting, key).promise;
  }

  dataset(): DatasetDefinition {
    return {
      columns: [{ name: 'id' }, { name: 'name' }, { name: 'pad' }],
      params: { key: { type: 'string', required: true }, rows: { type: 'integer', default: 0, min: 0 } },
      source: (params, { signal }) => this.#source(params.key as string, params.rows as number, signal),
    };
  }

  async *#source(key: string, count: number, signal: AbortSignal): AsyncGenerator<Row> {
    try {
      yield* rows(count);
      const gate = this.#get(this.#gates, key).promise;
      this.#get(this.#waiting, key).resolve();
      await new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(signal.reason);
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        gate.then(resolve);
      });
    } finally {
      this.closed.add(key);
    }
  }
}

export async function tempDir(prefix = 'spark-jobs-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(directory: string): Promise<void> {
  await rm(directory, { recursive: true, force: true });
}

export async function listDir(directory: string): Promise<string[]> {
  return (await readdir(directory)).sort();
}

export async function sha256Of(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** A clock the test moves by hand. */
export class ManualClock {
  time: number;
  constructor(start = Date.parse('2025-01-01T00:00:00.000Z')) {
    this.time = start;
  }
  readonly now = (): number => this.time;
  advance(ms: number): void {
    this.time += ms;
  }
}

export function createManager(
  directory: string,
  gates: Gates,
  options: ExportManagerOptions = {},
): ExportManager {
  return new ExportManager({
    directory,
    metrics: false,
    batchSize: 50,
    ...options,
    datasets: { plain: plainDataset, gated: gates.dataset(), ...(options.datasets as object | undefined) },
  });
}

/** Resolves with the next `event` of `manager` whose job satisfies `match`. */
export function nextJobEvent(
  manager: ExportManager,
  event: 'job:queued' | 'job:started' | 'job:progress' | 'job:succeeded' | 'job:cancelled' | 'job:expired',
  match: (job: Job) => boolean = () => true,
): Promise<Job> {
  return new Promise((resolve) => {
    const listener = (job: Job) => {
      if (!match(job)) return;
      manager.off(event, listener);
      resolve(job);
    };
    manager.on(event, listener);
  });
}
