#!/usr/bin/env node
// How responsive is the sidecar while it exports? Starts the built sidecar (demo config:
// 1,000,000 SQLite orders) as a child process, keeps five full `orders` CSV exports running,
// and times ~500 sequential GET /export/status requests made while all five run.
//
//   npm run build && node bench/status-latency.mjs [samples]
//
// The target (issue #5): p99 under 50 ms. docs/benchmarks.md quotes this script's output.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SAMPLES = Number(process.argv[2] ?? 500);
const EXPORTS = 5;
const server = fileURLToPath(new URL('../examples/sidecar/dist/server.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'spark-bench-'));

const child = spawn(process.execPath, [server], {
  cwd: dir,
  env: {
    ...process.env,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    EXPORT_MAX_CONCURRENT: String(EXPORTS),
  },
  stdio: ['ignore', 'ignore', 'pipe'],
});
const cleanup = () => {
  child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);

try {
  const seedStart = performance.now();
  const origin = await new Promise((resolve, reject) => {
    let text = '';
    child.stderr.on('data', (chunk) => {
      text += chunk;
      const match = /spark-export sidecar: (http:\/\/[^\s/]+)\/export/.exec(text);
      if (match) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`the sidecar exited (${code}):\n${text}`)));
  });
  const startupMs = performance.now() - seedStart;

  const startExport = async () => {
    const response = await fetch(`${origin}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'orders', format: 'csv' }),
    });
    if (response.status !== 202)
      throw new Error(`POST /export/jobs answered ${response.status}: ${await response.text()}`);
    return response.headers.get('location');
  };

  const jobs = [];
  for (let i = 0; i < EXPORTS; i++) jobs.push(await startExport());

  const latencies = [];
  let skipped = 0;
  while (latencies.length < SAMPLES) {
    const started = performance.now();
    const response = await fetch(`${origin}/export/status`);
    const body = await response.json();
    const ms = performance.now() - started;
    if (body.inFlight === EXPORTS) latencies.push(ms);
    else {
      // An export finished: start another so that five run for every sample that counts.
      skipped++;
      for (let i = body.inFlight; i < EXPORTS; i++) jobs.push(await startExport());
    }
  }

  let rows = 0;
  let exportMs = 0;
  for (const location of jobs) {
    const job = await (await fetch(`${origin}${location}`)).json();
    rows += job.progress.rows;
    if (job.status === 'succeeded')
      exportMs = Math.max(exportMs, Date.parse(job.finishedAt) - Date.parse(job.startedAt));
  }

  latencies.sort((a, b) => a - b);
  const pct = (p) =>
    latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)].toFixed(2);
  const cpu = cpus();
  console.log(
    `status-latency: GET /export/status while ${EXPORTS} SQLite exports of 1,000,000 orders (CSV) run`,
  );
  console.log(`  samples   ${latencies.length} (${skipped} taken between exports were dropped)`);
  console.log(`  p50       ${pct(50)} ms`);
  console.log(`  p95       ${pct(95)} ms`);
  console.log(`  p99       ${pct(99)} ms   (target < 50 ms)`);
  console.log(`  max       ${latencies.at(-1).toFixed(2)} ms`);
  console.log(
    `  exports   ${jobs.length} started, ${rows.toLocaleString('en-US')} rows written while sampling`,
  );
  console.log(`  start-up  ${(startupMs / 1000).toFixed(1)} s (seeding the demo database included)`);
  console.log(
    `  machine   ${cpu.length} x ${cpu[0]?.model.trim()}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${process.platform}/${process.arch}`,
  );
} finally {
  cleanup();
  process.off('exit', cleanup);
}
