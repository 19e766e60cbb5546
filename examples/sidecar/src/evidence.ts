/**
 * `npm run evidence` (node dist/evidence.js): starts the built sidecar on a free loopback port
 * with the built-in demo data, sends more concurrent export jobs than its limit, and writes what
 * an operator or reviewer needs to see that it works into `evidence/export/` at the repository
 * root (or `--out DIR`):
 *
 *   metrics.txt         the full /export/metrics scrape after the load
 *   export_metrics.txt  its export_* families only
 *   exports_ls.txt      every file of the exports directory with its size and sha256
 *   assert.txt          each check with PASS or FAIL
 *
 * Exits 1 when any check fails, 2 on a usage error. `--export-dir DIR` keeps the exports there
 * (default: a temp directory, removed afterwards); `--jobs N` sends N jobs at once (default:
 * the limit + 3). EXPORT_MAX_CONCURRENT and EXPORT_API_TOKEN are taken from the environment.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const DIST = fileURLToPath(new URL('.', import.meta.url));
/** examples/sidecar/dist -> the repository root (also /app in the Docker image). */
const REPO_ROOT = resolve(DIST, '..', '..', '..');
const SERVER = join(DIST, 'server.js');
/** About 90 days of the demo's orders (~120,000 rows): long enough to hold a slot. */
const LOAD = { dataset: 'orders', format: 'csv', params: { from: '2025-10-01' } } as const;
const JOB_TIMEOUT_MS = 300_000;

interface Check {
  ok: boolean;
  text: string;
}

interface Manifest {
  id: string;
  status: string;
  file: { name: string; bytes: number; sha256: string } | null;
}

function usage(message: string): never {
  process.stderr.write(
    `spark-export evidence: ${message}\nusage: node dist/evidence.js [--out DIR] [--export-dir DIR] [--jobs N]\n`,
  );
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  let values: { out?: string; 'export-dir'?: string; jobs?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { out: { type: 'string' }, 'export-dir': { type: 'string' }, jobs: { type: 'string' } },
      strict: true,
    }));
  } catch (error) {
    usage((error as Error).message);
  }
  const outDir = resolve(values.out ?? join(REPO_ROOT, 'evidence', 'export'));
  const limitText = process.env.EXPORT_MAX_CONCURRENT?.trim() || '5';
  const limit = Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1)
    usage(`EXPORT_MAX_CONCURRENT must be an integer >= 1, got ${limitText}`);
  const jobs = values.jobs === undefined ? limit + 3 : Number(values.jobs);
  if (!Number.isSafeInteger(jobs) || jobs <= limit || jobs > 100) {
    usage(`--jobs must be an integer above the limit (${limit}) and at most 100, got ${values.jobs}`);
  }
  const token = process.env.EXPORT_API_TOKEN?.trim() || undefined;
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};

  const workDir = await mkdtemp(join(tmpdir(), 'spark-evidence-'));
  const exportDir = values['export-dir'] ? resolve(values['export-dir']) : join(workDir, 'exports');
  await mkdir(exportDir, { recursive: true });
  await mkdir(outDir, { recursive: true });

  // The built-in demo (its database in the sidecar's data directory), run in a scratch
  // directory: no EXPORT_CONFIG, no config file there.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of [
    'EXPORT_CONFIG',
    'EXPORT_ACCEL_REDIRECT_PREFIX',
    'EXPORT_OWNER_HEADER',
    'PORT',
    'HOST',
  ]) {
    delete env[name];
  }
  const child = spawn(process.execPath, [SERVER], {
    cwd: workDir,
    env: { ...env, PORT: '0', HOST: '127.0.0.1', EXPORT_DIR: exportDir, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));

  try {
    const origin = await listeningOrigin(child);
    process.stderr.write(
      `spark-export evidence: sidecar at ${origin}, ${jobs} jobs at once (limit ${limit})\n`,
    );
    const checks: Check[] = [];
    const check = (ok: boolean, text: string) => checks.push({ ok, text });

    // The load: every request at once, so that all slots are taken before any job can finish.
    const answers = await Promise.all(
      Array.from({ length: jobs }, async () => {
        const response = await fetch(`${origin}/export/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...auth },
          body: JSON.stringify(LOAD),
        });
        await response.arrayBuffer();
        return {
          status: response.status,
          location: response.headers.get('location'),
          retryAfter: response.headers.get('retry-after'),
        };
      }),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const rejected = answers.filter((a) => a.status === 429);
    check(
      accepted.length + rejected.length === jobs && rejected.length >= 1 && accepted.length <= limit,
      `load beyond the limit: ${jobs} jobs sent at once, ${accepted.length} accepted (202), ${rejected.length} rejected (429), limit ${limit}` +
        (accepted.length + rejected.length === jobs
          ? ''
          : `; other statuses: ${answers.map((a) => a.status).join(',')}`),
    );
    check(
      rejected.every((a) => Number(a.retryAfter) >= 1),
      `every 429 carried Retry-After >= 1 (${rejected.map((a) => a.retryAfter).join(', ') || 'none'})`,
    );

    const finished = await Promise.all(accepted.map((a) => waitForJob(`${origin}${a.location}`, auth)));
    const succeeded = finished.filter((status) => status === 'succeeded').length;
    check(
      succeeded === accepted.length,
      `every accepted job succeeded: ${succeeded} of ${accepted.length} (${finished.join(', ')})`,
    );
    const status = await waitForIdle(origin);

    const metricsResponse = await fetch(`${origin}/export/metrics`, { headers: auth });
    const metrics = await metricsResponse.text();
    check(metricsResponse.ok, `GET /export/metrics answered ${metricsResponse.status}`);
    const started = sumOf(metrics, 'export_jobs_started_total');
    check(
      started === accepted.length,
      `jobs started equals accepted requests: export_jobs_started_total ${started}, 202 responses ${accepted.length}`,
    );
    const rejectedTotal = sumOf(metrics, 'export_jobs_rejected_total');
    check(
      rejectedTotal === rejected.length,
      `rejections equal 429s seen: export_jobs_rejected_total ${rejectedTotal}, 429 responses ${rejected.length}`,
    );
    const completed = sumOf(metrics, 'export_jobs_completed_total', 'outcome="succeeded"');
    check(
      completed === succeeded,
      `succeeded jobs counted once: export_jobs_completed_total{outcome="succeeded"} ${completed}, jobs ${succeeded}`,
    );

    const listing = await listExports(exportDir);
    const manifests: Manifest[] = [];
    for (const entry of listing.filter((e) => e.name.endsWith('.json'))) {
      manifests.push(JSON.parse(await readFile(join(exportDir, entry.name), 'utf8')) as Manifest);
    }
    const done = manifests.filter((m) => m.status === 'succeeded' && m.file);
    const mismatched = done.filter((m) => {
      const entry = listing.find((e) => e.name === m.file!.name);
      return entry === undefined || entry.sha256 !== m.file!.sha256 || entry.bytes !== m.file!.bytes;
    });
    check(
      done.length === succeeded && mismatched.length === 0,
      `every succeeded file's sha256 and size match its manifest: ${done.length - mismatched.length} of ${done.length} files` +
        (mismatched.length ? `; mismatched: ${mismatched.map((m) => m.id).join(', ')}` : ''),
    );
    const parts = listing.filter((e) => e.name.endsWith('.part'));
    check(
      parts.length === 0,
      `no .part file left: ${parts.length} found${parts.length ? ` (${parts.map((p) => p.name).join(', ')})` : ''}`,
    );
    const inFlight = sumOf(metrics, 'export_jobs_in_flight');
    check(
      inFlight === 0 && status.inFlight === 0,
      `in flight back to 0: export_jobs_in_flight ${inFlight}, /export/status inFlight ${status.inFlight}`,
    );

    child.kill('SIGTERM');
    const code = await exited;
    check(code === 0, `SIGTERM drained the sidecar and it exited 0 (exit code ${code})`);

    await writeFile(join(outDir, 'metrics.txt'), metrics);
    await writeFile(join(outDir, 'export_metrics.txt'), exportFamilies(metrics));
    await writeFile(
      join(outDir, 'exports_ls.txt'),
      [
        `# ${exportDir} after ${jobs} jobs; bytes sha256 name`,
        ...listing.map((e) => `${String(e.bytes).padStart(12)}  ${e.sha256}  ${e.name}`),
        `# ${listing.length} files, ${listing.reduce((sum, e) => sum + e.bytes, 0)} bytes`,
        '',
      ].join('\n'),
    );
    const failed = checks.filter((c) => !c.ok).length;
    await writeFile(
      join(outDir, 'assert.txt'),
      [
        `# spark-export sidecar evidence, ${new Date().toISOString()}`,
        `# sidecar ${origin} (built dist, demo data), version ${status.version}, EXPORT_MAX_CONCURRENT=${limit}`,
        ...checks.map((c) => `${c.ok ? 'PASS' : 'FAIL'}  ${c.text}`),
        `RESULT: ${failed === 0 ? 'PASS' : 'FAIL'} (${checks.length - failed} of ${checks.length} passed)`,
        '',
      ].join('\n'),
    );
    process.stderr.write(
      `spark-export evidence: ${failed === 0 ? 'PASS' : `FAIL (${failed} failed)`}, written to ${outDir}\n`,
    );
    return failed === 0 ? 0 : 1;
  } catch (error) {
    process.stderr.write(`spark-export evidence: ${(error as Error).message}\n${stderr.slice(-2000)}`);
    return 1;
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await rm(workDir, { recursive: true, force: true });
  }
}

/** The origin from the sidecar's `listening` log line (JSON on stdout). */
function listeningOrigin(child: ChildProcess): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error('the sidecar did not start within 120 s')), 120_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        try {
          const entry = JSON.parse(line) as { event?: string; url?: string };
          if (entry.event === 'listening' && entry.url) {
            clearTimeout(timer);
            resolvePromise(new URL(entry.url).origin);
          }
        } catch {
          // not a JSON line
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the sidecar exited (${code}) before listening`));
    });
  });
}

async function waitForJob(url: string, headers: Record<string, string>): Promise<string> {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    const job = (await (await fetch(url, { headers })).json()) as { status: string };
    if (job.status !== 'queued' && job.status !== 'running') return job.status;
    if (Date.now() > deadline) return `${job.status} after ${JOB_TIMEOUT_MS / 1000} s`;
    await new Promise((done) => setTimeout(done, 100));
  }
}

async function waitForIdle(origin: string): Promise<{ inFlight: number; version: string }> {
  for (let attempt = 0; ; attempt++) {
    const status = (await (await fetch(`${origin}/export/status`)).json()) as {
      inFlight: number;
      queued: number;
      version: string;
    };
    if ((status.inFlight === 0 && status.queued === 0) || attempt >= 100) return status;
    await new Promise((done) => setTimeout(done, 50));
  }
}

/** Sum of a metric's samples (optionally only those whose labels contain `labelMatch`). */
function sumOf(metrics: string, name: string, labelMatch?: string): number {
  let sum = 0;
  for (const line of metrics.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    if (labelMatch !== undefined && !(match[2] ?? '').includes(labelMatch)) continue;
    sum += Number(match[3]);
  }
  return sum;
}

/** The `# HELP`, `# TYPE` and sample lines of the export_* families. */
function exportFamilies(metrics: string): string {
  return `${metrics
    .split('\n')
    .filter((line) => /^(# (HELP|TYPE) )?export_/.test(line))
    .join('\n')}\n`;
}

async function listExports(dir: string): Promise<{ name: string; bytes: number; sha256: string }[]> {
  const names = (await readdir(dir)).sort();
  const entries: { name: string; bytes: number; sha256: string }[] = [];
  for (const name of names) {
    const info = await stat(join(dir, name));
    if (!info.isFile()) continue;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(join(dir, name))) hash.update(chunk as Buffer);
    entries.push({ name, bytes: info.size, sha256: hash.digest('hex') });
  }
  return entries;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`spark-export evidence: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
