import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import type { ExportStorage, StorageWrite } from '../jobs/export-storage.js';
import type { ContractCase } from './contract-case.js';

/** Makes a fresh, empty storage that shares no files with any other test. The suite opens it. */
export type MakeExportStorage<S extends ExportStorage = ExportStorage> = () => S | Promise<S>;

export interface ExportStorageContractOptions<S extends ExportStorage = ExportStorage> {
  /**
   * Leaves a partial write of `jobId` behind as a crashed process would, for the
   * `removeOrphans()` case. Override it when abandoned writes of a live process do not count
   * as partial (e.g. an object store that only cleans up uploads older than some age).
   * @default starts a write, writes a few bytes and abandons it
   */
  leavePartial?: (storage: S, jobId: string) => Promise<void>;
  /**
   * Makes the coming `commit()` of `write` fail (its stream has finished), e.g. by removing
   * the partial file or aborting the upload behind the storage's back. Without it, the case
   * "abort() after a failed commit" is skipped.
   */
  breakCommit?: (storage: S, write: StorageWrite) => Promise<void>;
  /** Runs after each test (e.g. to remove a temp dir or the test's bucket prefix). */
  cleanup?: () => Promise<void>;
}

export interface ExportStorageContext {
  /** An opened storage from `makeStorage`, empty. */
  readonly storage: ExportStorage;
  leavePartial(jobId: string): Promise<void>;
  /** `undefined` without the `breakCommit` option. */
  readonly breakCommit: ((write: StorageWrite) => Promise<void>) | undefined;
}

/**
 * A new job id, shaped as the manager makes them (`exp_` and 22 base64url characters). Made
 * here rather than imported, so that the suite depends on the storage's interface only.
 */
function createJobId(): string {
  return `exp_${randomBytes(16).toString('base64url')}`;
}

const CSV = { extension: 'csv', contentType: 'text/csv; charset=utf-8' };

/** `length` bytes that differ from their neighbours, so that an offset error changes the bytes read. */
function pattern(length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length);
  // xorshift32: cheap, deterministic, and no run of equal bytes for a shifted range to hide in.
  let state = seed >>> 0 || 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Writes `chunk` and waits until the stream has taken it (its write callback ran). */
function writeAndWait(stream: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.write(chunk, (error) => (error ? reject(error) : resolve()));
  });
}

/** Writes every chunk honouring backpressure, then ends the stream and waits for it to finish. */
async function writeAll(stream: Writable, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (!stream.write(chunk)) await once(stream, 'drain');
  }
  stream.end();
  await finished(stream);
}

/** Writes and commits a whole file for a new job. */
async function store(
  storage: ExportStorage,
  bytes: Buffer,
  jobId = createJobId(),
): Promise<{ jobId: string; name: string }> {
  const write = await storage.createWrite(jobId, CSV);
  await writeAll(write.stream, [bytes]);
  await write.commit({ bytes: bytes.length, sha256: sha256(bytes), contentType: CSV.contentType });
  return { jobId, name: write.name };
}

async function readAll(
  storage: ExportStorage,
  name: string,
  range?: { start: number; end: number },
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await storage.read(name, range)) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

async function expectAbsent(storage: ExportStorage, name: string, why: string): Promise<void> {
  expect(await storage.stat(name), `stat() should find nothing: ${why}`).toBeUndefined();
  await expect(storage.read(name), `read() should reject: ${why}`).rejects.toBeDefined();
}

/**
 * Checks that a thrown-away write of `jobId` left nothing: no file, nothing for
 * `removeOrphans()` to clean up, and the job can be written afresh (a stale partial file in
 * the way would fail or mix into the new write). `keep` names the other committed files.
 */
async function expectNothingLeft(
  storage: ExportStorage,
  jobId: string,
  name: string,
  keep: readonly string[] = [],
): Promise<void> {
  await expectAbsent(storage, name, 'the write was thrown away');
  const removed = await storage.removeOrphans(new Set(keep));
  expect(
    removed.filter((each) => each.includes(jobId)),
    'removeOrphans() should find nothing of a write that was thrown away',
  ).toEqual([]);
  const bytes = pattern(100, 7);
  const again = await store(storage, bytes, jobId);
  expect(again.name).toBe(name);
  expect(await readAll(storage, name)).toEqual(bytes);
  await storage.remove(name);
}

/** @internal The cases of {@link describeExportStorageContract}, exported for the suite's own tests. */
export const exportStorageCases: readonly ContractCase<ExportStorageContext>[] = [
  {
    name: 'a write is invisible until commit(); then stat() and read() give its exact bytes',
    async run({ storage }) {
      const bytes = pattern(1000);
      const write = await storage.createWrite(createJobId(), CSV);
      await writeAndWait(write.stream, bytes.subarray(0, 400));
      await expectAbsent(storage, write.name, 'bytes were written, the stream is open');
      await writeAll(write.stream, [bytes.subarray(400)]);
      await expectAbsent(storage, write.name, 'the stream finished, commit() was not called');
      await write.commit({ bytes: bytes.length, sha256: sha256(bytes), contentType: CSV.contentType });
      expect((await storage.stat(write.name))?.bytes).toBe(1000);
      expect(await readAll(storage, write.name)).toEqual(bytes);
    },
  },
  {
    name: 'read() of a range gives the inclusive bytes start..end: first byte, middle, last byte, whole',
    async run({ storage }) {
      const bytes = pattern(1000);
      const { name } = await store(storage, bytes);
      for (const [start, end] of [
        [0, 0],
        [0, 9],
        [500, 500],
        [123, 876],
        [990, 999],
        [999, 999],
        [0, 999],
      ] as const) {
        expect(await readAll(storage, name, { start, end }), `bytes ${start}-${end}`).toEqual(
          bytes.subarray(start, end + 1),
        );
      }
    },
  },
  {
    name: 'an empty file commits and reads back empty',
    async run({ storage }) {
      const { name } = await store(storage, Buffer.alloc(0));
      expect((await storage.stat(name))?.bytes).toBe(0);
      expect(await readAll(storage, name)).toEqual(Buffer.alloc(0));
    },
  },
  {
    name: 'names derive from the job id and the extension, never from other caller text',
    async run({ storage }) {
      const jobs = [createJobId(), createJobId(), createJobId()] as const;
      const writes = [
        await storage.createWrite(jobs[0], { extension: 'csv', contentType: 'text/csv; name="../../evil"' }),
        await storage.createWrite(jobs[1], { extension: 'ndjson.gz', contentType: 'application/x-ndjson' }),
        await storage.createWrite(jobs[2], { extension: 'json', contentType: 'application/json' }),
      ];
      try {
        writes.forEach((write, index) => {
          expect(write.name).toContain(jobs[index]);
          expect(write.name).not.toMatch(/\.\.|[/\\]|evil/);
        });
        expect(writes[0]?.name).toMatch(/\.csv$/);
        expect(writes[1]?.name).toMatch(/\.ndjson\.gz$/);
        expect(writes[2]?.name).toMatch(/\.json$/);
      } finally {
        for (const write of writes) await write.abort();
      }
    },
  },
  {
    name: 'createWrite() refuses a job id that is not one',
    async run({ storage }) {
      for (const jobId of ['../escape', 'exp_/../../etc/passwd', '']) {
        await expect(
          Promise.resolve().then(() => storage.createWrite(jobId, CSV)),
          `createWrite(${JSON.stringify(jobId)})`,
        ).rejects.toBeDefined();
      }
    },
  },
  {
    name: 'stat() and read() find a file by its exact name only',
    async run({ storage }) {
      const { name } = await store(storage, pattern(10));
      for (const other of [`sub/../${name}`, `./${name}`, `${name}/`]) {
        await expectAbsent(
          storage,
          other,
          `${JSON.stringify(other)} is not the name ${JSON.stringify(name)}`,
        );
      }
    },
  },
  {
    name: 'abort() of a write that got bytes leaves nothing',
    async run({ storage }) {
      const jobId = createJobId();
      const write = await storage.createWrite(jobId, CSV);
      await writeAndWait(write.stream, pattern(5000));
      await write.abort();
      await expectNothingLeft(storage, jobId, write.name);
    },
  },
  {
    name: 'abort() of a finished write that was not committed leaves nothing',
    async run({ storage }) {
      const jobId = createJobId();
      const write = await storage.createWrite(jobId, CSV);
      await writeAll(write.stream, [pattern(5000)]);
      await write.abort();
      await expectNothingLeft(storage, jobId, write.name);
    },
  },
  {
    name: 'abort() before any byte was written leaves nothing',
    async run({ storage }) {
      // An export that fails at once: the storage may still be opening its file or upload. A
      // cleanup that does not wait for that loses the race only now and then (a local file
      // stream not waited for left a file a few times in a hundred), so the case asks 100 times.
      const writes: { jobId: string; name: string }[] = [];
      for (let index = 0; index < 100; index++) {
        const jobId = createJobId();
        const write = await storage.createWrite(jobId, CSV);
        await write.abort();
        writes.push({ jobId, name: write.name });
      }
      for (const { name } of writes) await expectAbsent(storage, name, 'the write was thrown away');
      expect(await storage.removeOrphans(new Set()), 'nothing should be left to clean up').toEqual([]);
      const [first] = writes as [{ jobId: string; name: string }];
      await expectNothingLeft(storage, first.jobId, first.name);
    },
  },
  {
    name: 'abort() after a failed commit() leaves nothing',
    needs: 'breakCommit',
    async run({ storage, breakCommit }) {
      const jobId = createJobId();
      const bytes = pattern(5000);
      const write = await storage.createWrite(jobId, CSV);
      await writeAll(write.stream, [bytes]);
      await (breakCommit as (write: StorageWrite) => Promise<void>)(write);
      await expect(
        write.commit({ bytes: bytes.length, sha256: sha256(bytes), contentType: CSV.contentType }),
      ).rejects.toBeDefined();
      await write.abort();
      await expectNothingLeft(storage, jobId, write.name);
    },
  },
  {
    name: 'remove() deletes a committed file; removing a missing one is no error',
    async run({ storage }) {
      const { name } = await store(storage, pattern(10));
      const other = await store(storage, pattern(20, 3));
      await storage.remove(name);
      await expectAbsent(storage, name, 'it was removed');
      await storage.remove(name);
      expect(await readAll(storage, other.name)).toEqual(pattern(20, 3));
    },
  },
  {
    name: 'removeOrphans() removes unclaimed files and partial writes, keeps claimed files, and names what it removed',
    async run({ storage, leavePartial }) {
      const keptBytes = pattern(300, 11);
      const kept = await store(storage, keptBytes);
      const orphan = await store(storage, pattern(300, 12));
      const partialJob = createJobId();
      await leavePartial(partialJob);
      const removed = await storage.removeOrphans(new Set([kept.name]));
      expect(removed).toContain(orphan.name);
      expect(removed).not.toContain(kept.name);
      expect(
        removed.some((each) => each.includes(partialJob)),
        'removeOrphans() should name the partial write it removed',
      ).toBe(true);
      expect(await readAll(storage, kept.name)).toEqual(keptBytes);
      await expectAbsent(storage, orphan.name, 'it was an orphan');
      expect(await storage.removeOrphans(new Set([kept.name])), 'nothing is left to remove').toEqual([]);
      // The job of the partial write can run again.
      const again = await store(storage, pattern(50, 13), partialJob);
      expect(await readAll(storage, again.name)).toEqual(pattern(50, 13));
    },
  },
  {
    name: 'writes for different jobs do not interfere',
    async run({ storage }) {
      const [first, second, dropped] = [pattern(3000, 21), pattern(2000, 22), pattern(1000, 23)];
      const droppedJob = createJobId();
      const writes = [
        await storage.createWrite(createJobId(), CSV),
        await storage.createWrite(createJobId(), {
          extension: 'ndjson',
          contentType: 'application/x-ndjson',
        }),
        await storage.createWrite(droppedJob, CSV),
      ] as const;
      // Interleaved, as three exports running at once write.
      for (let offset = 0; offset < 3000; offset += 500) {
        await writeAndWait(writes[0].stream, first.subarray(offset, offset + 500));
        if (offset < 2000) await writeAndWait(writes[1].stream, second.subarray(offset, offset + 500));
        if (offset < 1000) await writeAndWait(writes[2].stream, dropped.subarray(offset, offset + 500));
      }
      await writes[2].abort();
      await Promise.all([writeAll(writes[0].stream, []), writeAll(writes[1].stream, [])]);
      await writes[1].commit({ bytes: 2000, sha256: sha256(second), contentType: 'application/x-ndjson' });
      await writes[0].commit({ bytes: 3000, sha256: sha256(first), contentType: CSV.contentType });
      expect(await readAll(storage, writes[0].name)).toEqual(first);
      expect(await readAll(storage, writes[1].name)).toEqual(second);
      await expectNothingLeft(storage, droppedJob, writes[2].name, [writes[0].name, writes[1].name]);
    },
  },
  {
    name: 'a file of a few MiB written in many chunks, honouring backpressure, round-trips with its sha256',
    async run({ storage }) {
      const chunkSize = 16 * 1024;
      const chunks = Array.from({ length: 256 }, (_, index) => pattern(chunkSize, index + 1));
      const whole = Buffer.concat(chunks);
      const digest = sha256(whole);
      const write = await storage.createWrite(createJobId(), CSV);
      await writeAll(write.stream, chunks);
      await write.commit({ bytes: whole.length, sha256: digest, contentType: CSV.contentType });
      expect((await storage.stat(write.name))?.bytes).toBe(4 * 1024 * 1024);
      expect(sha256(await readAll(storage, write.name))).toBe(digest);
      // A range across chunk boundaries, as a resumed download asks for.
      const start = chunkSize - 1;
      const end = 3 * chunkSize + 99;
      expect(await readAll(storage, write.name, { start, end })).toEqual(whole.subarray(start, end + 1));
    },
  },
];

/**
 * Runs one case against a storage from `makeStorage` (opened first), then ends abandoned
 * writes and runs `cleanup`.
 * @internal
 */
export async function runExportStorageCase<S extends ExportStorage>(
  contractCase: ContractCase<ExportStorageContext>,
  makeStorage: MakeExportStorage<S>,
  options: ExportStorageContractOptions<S> = {},
): Promise<void> {
  const abandoned: StorageWrite[] = [];
  try {
    const storage = await makeStorage();
    await storage.open();
    const { breakCommit } = options;
    await contractCase.run({
      storage,
      async leavePartial(jobId) {
        if (options.leavePartial) return options.leavePartial(storage, jobId);
        const write = await storage.createWrite(jobId, CSV);
        abandoned.push(write);
        await writeAndWait(write.stream, pattern(1000));
      },
      breakCommit: breakCommit && ((write) => breakCommit(storage, write)),
    });
  } finally {
    // Destroyed, not aborted: a crashed process cleans up nothing.
    for (const write of abandoned) write.stream.destroy();
    await options.cleanup?.();
  }
}

/**
 * Registers a vitest suite that checks an {@link ExportStorage} against its contract: nothing
 * is visible until `commit()`, committed files read back byte for byte (and in inclusive
 * ranges), `abort()` leaves nothing at any point of a write, names come from the job id and
 * the extension only, `remove()` and `removeOrphans()` delete what they should and only that,
 * concurrent writes stay apart, and a file of a few MiB round-trips with its sha256. Each test
 * gets a storage from `makeStorage`, which the suite opens. Call it at the top level of a test file.
 *
 * The cases call `removeOrphans()` with small `keep` sets: give each test an empty directory,
 * bucket prefix or bucket of its own, never one that holds files anybody needs.
 *
 * @param name Shown in the suite title.
 * @param makeStorage A fresh, empty storage for each test.
 *
 * @example
 * ```ts
 * import { mkdtemp, rm } from 'node:fs/promises';
 * import { tmpdir } from 'node:os';
 * import { join } from 'node:path';
 * import { LocalExportStorage } from '@spark-export/core';
 * import { describeExportStorageContract } from '@spark-export/core/testing';
 *
 * describeExportStorageContract(
 *   'LocalExportStorage',
 *   async () => new LocalExportStorage(await mkdtemp(join(tmpdir(), 'files-'))),
 *   { breakCommit: (storage, write) => rm(`${storage.pathOf(write.name)}.part`) },
 * );
 * ```
 */
export function describeExportStorageContract<S extends ExportStorage>(
  name: string,
  makeStorage: MakeExportStorage<S>,
  options: ExportStorageContractOptions<S> = {},
): void {
  describe(`ExportStorage contract: ${name}`, () => {
    for (const contractCase of exportStorageCases) {
      const skip = contractCase.needs === 'breakCommit' && !options.breakCommit;
      it.skipIf(skip)(contractCase.name, () => runExportStorageCase(contractCase, makeStorage, options));
    }
  });
}
