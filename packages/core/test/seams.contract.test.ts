import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Limiter, Release } from '../src/admission/limiter.js';
import { Semaphore } from '../src/admission/semaphore.js';
import type { ExportStorage, StorageWrite } from '../src/jobs/export-storage.js';
import { FileJobStore } from '../src/jobs/file-job-store.js';
import type { JobRecord } from '../src/jobs/job.js';
import type { JobQuery, JobStore } from '../src/jobs/job-store.js';
import { LocalExportStorage } from '../src/jobs/local-storage.js';
import { findCase } from '../src/testing/contract-case.js';
import { exportStorageCases, runExportStorageCase } from '../src/testing/export-storage-contract.js';
import {
  describeExportStorageContract,
  describeJobStoreContract,
  describeLimiterContract,
} from '../src/testing/index.js';
import { jobStoreCases, runJobStoreCase } from '../src/testing/job-store-contract.js';
import { limiterCases, runLimiterCase } from '../src/testing/limiter-contract.js';

// ---- the built-in implementations pass the suites -------------------------------------------

const directories: string[] = [];

async function tempDir(): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'spark-export-seams-'));
  directories.push(directory);
  return directory;
}

async function removeTempDirs(): Promise<void> {
  for (const directory of directories.splice(0)) await rm(directory, { recursive: true, force: true });
}

// Admission bounds the queue; the limiter under it waits without a bound (as ExportManager builds it).
const semaphore = (limit: number) => new Semaphore({ limit, maxQueued: Number.MAX_SAFE_INTEGER });
const fileJobStore = async () => new FileJobStore(await tempDir());
const localStorage = async () => new LocalExportStorage(await tempDir());
const fileStoreOptions = {
  reopen: (previous: FileJobStore) => new FileJobStore(previous.directory),
  cleanup: removeTempDirs,
};
const localStorageOptions = {
  // The partial file a commit renames: gone, the rename fails.
  breakCommit: (storage: LocalExportStorage, write: StorageWrite) => rm(`${storage.pathOf(write.name)}.part`),
  cleanup: removeTempDirs,
};

describeLimiterContract('Semaphore', semaphore);
describeJobStoreContract('FileJobStore', fileJobStore, fileStoreOptions);
describeExportStorageContract('LocalExportStorage', localStorage, localStorageOptions);

// ---- the suites fail for broken implementations ---------------------------------------------
//
// Each suite is a list of cases whose bodies assert with `expect`; `describe…Contract` registers
// every case with `it()` and runs it through `run…Case` (factory, open, run, close, cleanup).
// Here the very same `run…Case` runs one named case against a built-in implementation with one
// deliberate bug, and must reject with an assertion error: no nested suites, no second vitest run.

async function expectCaseToFail(run: Promise<void>): Promise<void> {
  await expect(run).rejects.toMatchObject({ name: 'AssertionError' });
}

/** Forwards to a Semaphore; subclasses break one rule. */
class ForwardingLimiter implements Limiter {
  readonly inner: Semaphore;
  constructor(limit: number) {
    this.inner = semaphore(limit);
  }
  get limit(): number {
    return this.inner.limit;
  }
  set limit(value: number) {
    this.inner.limit = value;
  }
  get active(): number {
    return this.inner.active;
  }
  get pending(): number {
    return this.inner.pending;
  }
  tryAcquire(): Release | undefined {
    return this.inner.tryAcquire();
  }
  acquire(options: { signal?: AbortSignal }): Promise<Release> {
    return this.inner.acquire(options);
  }
  close(): void {
    this.inner.close();
  }
}

/** Forgets the signal: an aborted waiter keeps its place and is granted later. */
class IgnoresAbort extends ForwardingLimiter {
  override acquire(): Promise<Release> {
    return this.inner.acquire({});
  }
}

/** Takes every held permit back at close(). */
class RevokesOnClose extends ForwardingLimiter {
  readonly #held = new Set<Release>();
  override tryAcquire(): Release | undefined {
    const release = this.inner.tryAcquire();
    if (release) this.#held.add(release);
    return release;
  }
  override close(): void {
    super.close();
    for (const release of this.#held) release();
  }
}

/** Forwards to a FileJobStore; subclasses break one rule. */
class ForwardingJobStore implements JobStore {
  readonly inner: FileJobStore;
  constructor(inner: FileJobStore) {
    this.inner = inner;
  }
  open(): Promise<void> {
    return this.inner.open();
  }
  get(id: string): Promise<JobRecord | undefined> {
    return this.inner.get(id);
  }
  create(record: JobRecord): Promise<{ record: JobRecord; created: boolean }> {
    return this.inner.create(record);
  }
  save(record: JobRecord): Promise<void> {
    return this.inner.save(record);
  }
  remove(id: string): Promise<void> {
    return this.inner.remove(id);
  }
  findByIdempotencyKey(owner: string | null, key: string): Promise<JobRecord | undefined> {
    return this.inner.findByIdempotencyKey(owner, key);
  }
  list(query: JobQuery): Promise<{ records: JobRecord[]; more: boolean }> {
    return this.inner.list(query);
  }
  all(): AsyncIterable<JobRecord> {
    return this.inner.all();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Sends each save on its own way: later calls take fewer turns, so they land first. */
class SaveOutOfOrder extends ForwardingJobStore {
  #calls = 0;
  override async save(record: JobRecord): Promise<void> {
    const snapshot = structuredClone(record);
    const turns = Math.max(0, 50 - this.#calls++);
    for (let turn = 0; turn < turns; turn++) await Promise.resolve();
    return this.inner.save(snapshot);
  }
}

/** Treats save() of an unknown job as an upsert: a late write brings a removed job back. */
class SaveUpserts extends ForwardingJobStore {
  override async save(record: JobRecord): Promise<void> {
    if (await this.inner.get(record.id)) return this.inner.save(record);
    await this.inner.create(record);
  }
}

/** Forwards to a LocalExportStorage; subclasses break one rule. */
class ForwardingStorage implements ExportStorage {
  readonly inner: LocalExportStorage;
  constructor(inner: LocalExportStorage) {
    this.inner = inner;
  }
  open(): Promise<void> {
    return this.inner.open();
  }
  createWrite(jobId: string, file: { extension: string; contentType: string }): Promise<StorageWrite> {
    return this.inner.createWrite(jobId, file);
  }
  stat(name: string): Promise<{ bytes: number } | undefined> {
    return this.inner.stat(name);
  }
  read(name: string, range?: { start: number; end: number }): Promise<Readable> {
    return this.inner.read(name, range);
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  removeOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    return this.inner.removeOrphans(keep);
  }
}

/** Serves a file while it is still being written (as a storage that writes in place would). */
class PublishesBeforeCommit extends ForwardingStorage {
  override async stat(name: string): Promise<{ bytes: number } | undefined> {
    const partial = await stat(`${this.inner.pathOf(name)}.part`).catch(() => undefined);
    return partial ? { bytes: partial.size } : this.inner.stat(name);
  }
  override async read(name: string, range?: { start: number; end: number }): Promise<Readable> {
    const handle = await open(`${this.inner.pathOf(name)}.part`, 'r').catch(() => undefined);
    if (handle) return handle.createReadStream(range ?? {});
    return this.inner.read(name, range);
  }
}

/** Reads one byte past the end of a range (an exclusive end passed on as inclusive). */
class RangeOneTooLong extends ForwardingStorage {
  override read(name: string, range?: { start: number; end: number }): Promise<Readable> {
    return this.inner.read(name, range && { start: range.start, end: range.end + 1 });
  }
}

/** abort() stops the stream but leaves its partial file behind. */
class AbortLeavesPartial extends ForwardingStorage {
  override async createWrite(
    jobId: string,
    file: { extension: string; contentType: string },
  ): Promise<StorageWrite> {
    const write = await this.inner.createWrite(jobId, file);
    return {
      name: write.name,
      stream: write.stream,
      commit: (info) => write.commit(info),
      abort: async () => {
        write.stream.destroy();
      },
    };
  }
}

describe('the contract suites fail for a broken implementation', () => {
  it('Limiter: one that ignores abort signals grants an aborted waiter', async () => {
    for (const name of [
      'a waiter whose signal aborts is refused and gives up its place to the next waiter',
      'acquire() with an already aborted signal is refused and takes no place',
    ]) {
      await expectCaseToFail(
        runLimiterCase(findCase(limiterCases, name), (limit) => new IgnoresAbort(limit)),
      );
    }
  });

  it('Limiter: one that takes held permits back at close()', async () => {
    const name = 'close() refuses new permits, while permits already held stay valid';
    await expectCaseToFail(
      runLimiterCase(findCase(limiterCases, name), (limit) => new RevokesOnClose(limit)),
    );
  });

  it('JobStore: one whose saves of a job land out of call order', async () => {
    const name = 'writes of one job land in call order: the last of many saves not awaited wins';
    await expectCaseToFail(
      runJobStoreCase(findCase(jobStoreCases, name), async () => new SaveOutOfOrder(await fileJobStore()), {
        cleanup: removeTempDirs,
      }),
    );
  });

  it('JobStore: one whose save() brings a removed job back', async () => {
    const name = 'save() of a job that was never created, or was removed, stores nothing';
    await expectCaseToFail(
      runJobStoreCase(findCase(jobStoreCases, name), async () => new SaveUpserts(await fileJobStore()), {
        cleanup: removeTempDirs,
      }),
    );
  });

  it('ExportStorage: one that serves a file before commit()', async () => {
    const name = 'a write is invisible until commit(); then stat() and read() give its exact bytes';
    await expectCaseToFail(
      runExportStorageCase(
        findCase(exportStorageCases, name),
        async () => new PublishesBeforeCommit(await localStorage()),
        { cleanup: removeTempDirs },
      ),
    );
  });

  it('ExportStorage: one whose ranges end one byte late', async () => {
    const name =
      'read() of a range gives the inclusive bytes start..end: first byte, middle, last byte, whole';
    await expectCaseToFail(
      runExportStorageCase(
        findCase(exportStorageCases, name),
        async () => new RangeOneTooLong(await localStorage()),
        {
          cleanup: removeTempDirs,
        },
      ),
    );
  });

  it('ExportStorage: one whose abort() leaves the partial file', async () => {
    for (const name of [
      'abort() of a write that got bytes leaves nothing',
      'abort() before any byte was written leaves nothing',
    ]) {
      await expectCaseToFail(
        runExportStorageCase(
          findCase(exportStorageCases, name),
          async () => new AbortLeavesPartial(await localStorage()),
          { cleanup: removeTempDirs },
        ),
      );
    }
  });
});
