import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Row } from '../src/dataset.js';
import { ExportManager } from '../src/export-manager.js';
import { createJobId, type Job, type JobRecord } from '../src/jobs/job.js';
import { createManager, Gates, listDir, removeDir, sha256Of, tempDir } from './jobs.helpers.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));

let directory: string;
let gates: Gates;
const managers: ExportManager[] = [];
const children: ChildProcess[] = [];

function track(manager: ExportManager): ExportManager {
  managers.push(manager);
  return manager;
}

async function manifest(id: string): Promise<JobRecord> {
  return JSON.parse(await readFile(join(directory, `${id}.json`), 'utf8')) as JobRecord;
}

/** Runs a fixture with `node`, handing each JSON line of its stdout to `onMessage`. */
function runChild(
  script: string,
  options: { prefix?: string[]; onMessage: (message: Record<string, unknown>, child: ChildProcess) => void },
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const command = [...(options.prefix ?? []), process.execPath, join(fixtures, script), directory];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    options.onMessage(JSON.parse(line) as Record<string, unknown>, child);
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

interface CrashResult {
  succeeded: Job[];
  interrupted: Job[];
}

/** Runs crash-child.mjs and SIGKILLs it once its five large exports are half-way. */
async function crashChild(): Promise<CrashResult> {
  const result: CrashResult = { succeeded: [], interrupted: [] };
  const exit = await runChild('crash-child.mjs', {
    onMessage: (message, child) => {
      if (message.type === 'succeeded') result.succeeded = message.jobs as Job[];
      if (message.type === 'ready') {
        result.interrupted = message.jobs as Job[];
        child.kill('SIGKILL');
      }
    },
  });
  expect(exit.stderr).toBe('');
  expect(exit.signal).toBe('SIGKILL');
  expect(result.succeeded).toHaveLength(2);
  expect(result.interrupted).toHaveLength(5);
  return result;
}

beforeAll(() => {
  if (!existsSync(dist)) {
    throw new Error(
      `${dist} is missing: the crash tests run the built package in a child process. ` +
        'Build it first (`npm run build` at the root, or `npx tsup` in packages/core); `npm test` does.',
    );
  }
});

beforeEach(async () => {
  directory = await tempDir('spark-recovery-');
  gates = new Gates();
});

afterEach(async () => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.allSettled(managers.splice(0).map((manager) => manager.close({ drainTimeoutMs: 0 })));
  await removeDir(directory);
});

describe('recovery after a crash (SIGKILL)', () => {
  it('fails interrupted jobs with INTERRUPTED, removes their partial files and keeps finished ones intact', async () => {
    const { succeeded, interrupted } = await crashChild();
    for (const job of interrupted) {
      expect(job.status).toBe('running');
      expect(job.progress.bytes).toBeGreaterThan(0);
      // The partial files are really there, as the kill left them.
      expect((await stat(join(directory, `${job.id}.csv.part`))).size).toBe(job.progress.bytes);
      expect((await manifest(job.id)).status).toBe('running');
    }

    const warnings: string[] = [];
    const manager = track(new ExportManager({ directory, metrics: {} }));
    manager.on('warning', (message) => warnings.push(message));
    await manager.ready;

    for (const job of interrupted) {
      const recovered = await manager.get(job.id);
      expect(recovered.status).toBe('failed');
      expect(recovered.error).toEqual({
        code: 'INTERRUPTED',
        message: 'The export was interrupted by a restart',
      });
      expect(recovered.file).toBeNull();
      expect(recovered.finishedAt).not.toBeNull();
      expect((await manifest(job.id)).status).toBe('failed');
      await expect(manager.file(job.id)).rejects.toMatchObject({ code: 'JOB_NOT_READY' });
    }
    const names = await listDir(directory);
    expect(names.filter((name) => name.endsWith('.part') || name.endsWith('.tmp'))).toEqual([]);
    expect(names).toEqual(
      [
        ...interrupted.map((job) => `${job.id}.json`),
        ...succeeded.flatMap((job) => [`${job.id}.json`, `${job.id}.csv`]),
      ].sort(),
    );

    const listed = (await manager.list()).jobs;
    expect(listed).toHaveLength(7);
    for (const job of succeeded) {
      const again = listed.find((candidate) => candidate.id === job.id);
      expect(again).toMatchObject({ status: 'succeeded', file: job.file });
      const info = await manager.file(job.id);
      expect(info.size).toBe(job.file?.bytes);
      expect(await sha256Of(info.path ?? '')).toBe(job.file?.sha256);
    }
    const storage = (await manager.metrics!.storageBytes.get()).values[0]?.value;
    expect(storage).toBe(succeeded.reduce((total, job) => total + (job.file?.bytes ?? 0), 0));
    expect(warnings).toEqual([]);
  });

  it('re-runs interrupted jobs with resumeInterrupted, counting the attempt', async () => {
    const { succeeded, interrupted } = await crashChild();
    const manager = track(
      new ExportManager({
        directory,
        metrics: false,
        resumeInterrupted: true,
        maxConcurrent: 2,
        datasets: {
          small: { source: () => [] },
          // The same dataset, finite this time.
          endless: {
            params: { key: { type: 'string', required: true } },
            source: (params): Row[] =>
              Array.from({ length: 10 }, (_, id) => ({ id, name: `${params.key}-${id}` })),
          },
        },
      }),
    );
    await manager.ready;
    const statuses = await Promise.all(interrupted.map(async (job) => (await manager.get(job.id)).status));
    // Two slots: two run at once, the others wait their turn (beyond maxQueued, which is 0).
    expect(statuses.filter((status) => status === 'running')).toHaveLength(2);
    expect(statuses.filter((status) => status === 'queued')).toHaveLength(3);
    for (const job of interrupted) {
      const done = await manager.wait(job.id);
      expect(done).toMatchObject({ status: 'succeeded', progress: { rows: 10 }, error: null });
      expect((await manifest(job.id)).attempts).toBe(2);
      expect(await sha256Of(join(directory, `${job.id}.csv`))).toBe(done.file?.sha256);
    }
    for (const job of succeeded) {
      expect(await manager.get(job.id)).toMatchObject({ status: 'succeeded', file: job.file });
    }
    expect((await listDir(directory)).filter((name) => name.endsWith('.part'))).toEqual([]);
    expect(manager.inFlight).toBe(0);
    expect(manager.queued).toBe(0);
  });
});

describe('recovery after close()', () => {
  it('re-runs jobs that close() interrupted (running and queued) with resumeInterrupted, at most maxAttempts times', async () => {
    // Regression: close() marks such jobs failed/INTERRUPTED, but recovery only resumed jobs
    // still marked running or queued, so resumeInterrupted never re-ran them.
    const first = track(createManager(directory, gates, { maxConcurrent: 1, maxQueued: 1 }));
    const running = await first.start({ dataset: 'gated', format: 'csv', params: { key: 'r', rows: 700 } });
    const queued = await first.start({ dataset: 'gated', format: 'csv', params: { key: 'q' } });
    await gates.waiting('r');
    await first.close({ drainTimeoutMs: 0 });
    expect((await manifest(running.id)).error?.code).toBe('INTERRUPTED');
    expect((await manifest(queued.id)).error?.code).toBe('INTERRUPTED');
    expect((await manifest(running.id)).attempts).toBe(1);
    expect((await manifest(queued.id)).attempts).toBe(0);

    // Without resumeInterrupted, nothing moves.
    const second = track(createManager(directory, gates, { maxConcurrent: 2 }));
    await second.ready;
    expect((await second.get(running.id)).status).toBe('failed');
    await second.close();

    // maxAttempts 1: the job that already ran once stays failed, the queued one runs.
    const later = new Gates();
    const third = track(
      createManager(directory, later, { maxConcurrent: 2, resumeInterrupted: true, maxAttempts: 1 }),
    );
    await third.ready;
    expect((await third.get(running.id)).status).toBe('failed');
    later.open('q');
    expect(await third.wait(queued.id)).toMatchObject({
      status: 'succeeded',
      error: null,
      finishedAt: expect.any(String),
    });
    await third.close();

    const last = new Gates();
    const fourth = track(
      createManager(directory, last, { maxConcurrent: 2, resumeInterrupted: true, maxAttempts: 2 }),
    );
    await fourth.ready;
    expect((await fourth.get(running.id)).status).toBe('running');
    expect((await fourth.get(queued.id)).status).toBe('succeeded');
    last.open('r');
    expect(await fourth.wait(running.id)).toMatchObject({ status: 'succeeded', progress: { rows: 700 } });
    expect((await manifest(running.id)).attempts).toBe(2);
  });
});

describe('recovery of a damaged directory', () => {
  it('moves corrupt manifests aside and reports them, removes strays, and keeps working', async () => {
    const first = track(createManager(directory, gates));
    const good = await first.wait((await first.start({ dataset: 'plain', format: 'csv' })).id);
    const lost = await first.wait((await first.start({ dataset: 'plain', format: 'csv' })).id);
    await first.close();

    const garbage = createJobId();
    const wrongId = createJobId();
    const badStatus = createJobId();
    const noFile = createJobId();
    const unfinished = createJobId();
    const base = await manifest(good.id);
    await writeFile(join(directory, `${garbage}.json`), '{"version":1,"id":');
    await writeFile(join(directory, `${garbage}.csv`), 'a file nobody may serve');
    await writeFile(join(directory, `${wrongId}.json`), JSON.stringify({ ...base, id: good.id }));
    await writeFile(
      join(directory, `${badStatus}.json`),
      JSON.stringify({ ...base, id: badStatus, status: 'done' }),
    );
    await writeFile(join(directory, `${noFile}.json`), JSON.stringify({ ...base, id: noFile, file: null }));
    // A job whose data file was renamed but whose manifest never said succeeded.
    await writeFile(
      join(directory, `${unfinished}.json`),
      JSON.stringify({ ...base, id: unfinished, status: 'running', file: null }),
    );
    await writeFile(join(directory, `${unfinished}.csv`), 'id\n1\n');
    await writeFile(join(directory, `${good.id}.json.1a2b3c4d.tmp`), '{"half":');
    await writeFile(join(directory, 'README.txt'), 'not ours');
    await removeDir(join(directory, `${lost.id}.csv`));

    const warnings: string[] = [];
    const second = track(createManager(directory, gates));
    second.on('warning', (message) => warnings.push(message));
    await second.ready;

    expect(warnings.filter((message) => message.startsWith('Moved the unreadable manifest')).sort()).toEqual(
      [garbage, wrongId, badStatus, noFile]
        .map((id) => `Moved the unreadable manifest ${id}.json aside to ${id}.json.corrupt`)
        .sort(),
    );
    expect(warnings).toContain(`The file of job ${lost.id} is missing; marked expired`);
    expect(await second.get(good.id)).toMatchObject({ status: 'succeeded', file: good.file });
    expect((await second.get(lost.id)).status).toBe('expired');
    expect(await second.get(unfinished)).toMatchObject({ status: 'failed', error: { code: 'INTERRUPTED' } });
    for (const id of [garbage, wrongId, badStatus, noFile]) {
      await expect(second.get(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
    const corrupt = [garbage, wrongId, badStatus, noFile].map((id) => `${id}.json.corrupt`);
    expect(await listDir(directory)).toEqual(
      [
        'README.txt',
        `${good.id}.csv`,
        `${good.id}.json`,
        `${lost.id}.json`,
        `${unfinished}.json`,
        ...corrupt,
      ].sort(),
    );
    expect((await second.list()).jobs).toHaveLength(3);
    const next = await second.wait((await second.start({ dataset: 'plain', format: 'csv' })).id);
    expect(next.status).toBe('succeeded');
    await second.close();

    // Regression: the next start deleted the moved-aside manifests, which are kept for the operator.
    const third = track(createManager(directory, gates));
    await third.ready;
    const names = await listDir(directory);
    for (const name of corrupt) expect(names).toContain(name);
  });
});

describe('write failures', () => {
  it('fails a job whose file outgrows RLIMIT_FSIZE with WRITE_FAILED, leaves no partial file, frees the slot', async () => {
    // A file size limit makes writes fail with EFBIG half-way, even as root (where file modes
    // do not stop writes). The limit applies to the child process only.
    let report: Record<string, unknown> | undefined;
    const exit = await runChild('fsize-child.mjs', {
      prefix: ['prlimit', `--fsize=${128 * 1024}`, '--'],
      onMessage: (message) => {
        report = message;
      },
    });
    expect(exit.stderr).toBe('');
    expect(exit.code).toBe(0);
    const { big, afterBig, small, inFlight } = report as {
      big: Job;
      afterBig: { inFlight: number; files: string[] };
      small: Job;
      inFlight: number;
    };
    expect(big.status).toBe('failed');
    expect(big.error).toEqual({ code: 'WRITE_FAILED', message: 'Writing the export failed' });
    expect(big.file).toBeNull();
    expect(big.progress.bytes).toBeGreaterThan(0);
    expect(afterBig).toEqual({ inFlight: 0, files: [`${big.id}.json`] });
    expect(small.status).toBe('succeeded');
    expect(inFlight).toBe(0);
    expect(await listDir(directory)).toEqual(
      [`${big.id}.json`, `${small.id}.csv`, `${small.id}.json`].sort(),
    );
    expect((await manifest(big.id)).error?.code).toBe('WRITE_FAILED');
  });
});
