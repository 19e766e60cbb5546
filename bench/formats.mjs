// Export throughput and memory of @spark-export/core against a hand-written baseline and the
// plain csv-stringify pipeline. See bench/README.md; docs/benchmarks.md quotes its output.
//
//   node bench/formats.mjs                 1M rows x 3 rounds, then the 10M-row memory runs
//   node bench/formats.mjs --quick         100k rows, 1 round (smoke)
//   node bench/formats.mjs --strict        exit 1 when a target is missed
//   node bench/formats.mjs --variant csv:manager --rows 1000000 --out DIR [--keep]
//                                          one child run (--keep leaves the file in DIR)
//
// Every measurement runs in its own child process: peak RSS (`maxRSS`) is per process, and a
// fresh process keeps one variant's garbage and JIT state out of the next one's numbers.

import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { COLUMNS, csvLine, generateRows, generateRowsAsync, TYPED_COLUMNS, writeBatched } from './rows.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
// SPARK_EXPORT_DIST points the manager variants at another build (a before/after comparison).
const DIST =
  process.env.SPARK_EXPORT_DIST ?? fileURLToPath(new URL('../packages/core/dist/index.js', import.meta.url));

const VARIANTS = [
  'csv:manager',
  // The same export from an async generator (a database cursor, a paginated API).
  'csv:manager-async',
  'csv:baseline',
  'csv:csv-stringify-pipeline',
  'json:manager',
  'json:baseline',
  'ndjson:manager',
  'ndjson:baseline',
  // Not an export: the row generator alone, to show how much of every run is spent making rows.
  'rows:generate-only',
];
const MEMORY_VARIANTS = ['csv:manager', 'ndjson:manager'];
const DEFAULT_ROWS = 1_000_000;
// ---- arguments ---------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = {
    quick: false,
    strict: false,
    memory: false,
    keep: false,
    rows: undefined,
    rounds: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) fail(`Expected a value after ${arg}`);
      return next;
    };
    if (arg === '--quick') args.quick = true;
    else if (arg === '--strict') args.strict = true;
    else if (arg === '--memory') args.memory = true;
    else if (arg === '--keep') args.keep = true;
    else if (arg === '--variant') args.variant = value();
    else if (arg === '--out') args.out = value();
    else if (arg === '--rows') args.rows = positiveInteger('--rows', value());
    else if (arg === '--rounds') args.rounds = positiveInteger('--rounds', value());
    else if (arg === '--memory-rows') args.memoryRows = positiveInteger('--memory-rows', value());
    else fail(`Unknown argument ${JSON.stringify(arg)}; see the header of bench/formats.mjs`);
  }
  return args;
}

function positiveInteger(name, text) {
  const number = Number(text.replaceAll('_', ''));
  if (!Number.isSafeInteger(number) || number < 1)
    fail(`Expected ${name} to be a positive integer, got ${text}`);
  return number;
}

function fail(message) {
  console.error(`bench/formats.mjs: ${message}`);
  process.exit(2);
}

async function runVariant(variant, rowCount, directory, keep) {
  const [format, kind] = variant.split(':');
  const path = join(directory, `${variant.replace(':', '-')}.${format}`);
  let run;
  if (kind === 'manager' || kind === 'manager-async') {
    if (!existsSync(DIST)) fail('packages/core/dist/index.js is missing: run npm run build first');
    const { ExportManager } = await import(DIST);
    const source = kind === 'manager' ? () => generateRows(rowCount) : () => generateRowsAsync(rowCount);
    const manager = new ExportManager({
      datasets: {
        bench: { columns: TYPED_COLUMNS, source },
      },
    });
    run = () => manager.stream({ dataset: 'bench', format }, createWriteStream(path));
  } else if (variant === 'csv:baseline') {
    run = () =>
      writeBatched(path, generateRows(rowCount), { head: `${COLUMNS.join(',')}\n`, encode: csvLine });
  } else if (variant === 'json:baseline') {
    run = () =>
      writeBatched(path, generateRows(rowCount), {
        head: '[',
        encode: (row) => JSON.stringify(row),
        between: ',',
        tail: ']',
      });
  } else if (variant === 'ndjson:baseline') {
    run = () =>
      writeBatched(path, generateRows(rowCount), { head: '', encode: (row) => `${JSON.stringify(row)}\n` });
  } else if (variant === 'rows:generate-only') {
    run = async () => {
      let ids = 0;
      for (const row of generateRows(rowCount)) ids += row.id;
      if (ids === 0) throw new Error('no rows generated');
    };
  } else if (variant === 'csv:csv-stringify-pipeline') {
    const { stringify } = await import('csv-stringify');
    run = () =>
      pipeline(Readable.from(generateRows(rowCount)), stringify({ header: true }), createWriteStream(path));
  } else {
    fail(`Unknown variant ${JSON.stringify(variant)}; expected one of ${VARIANTS.join(', ')}`);
  }
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  await run();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  // CPU time of the whole process (all threads): less disturbed than wall time by other load.
  const cpu = process.cpuUsage(cpuBefore);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const bytes = kind === 'generate-only' ? 0 : (await stat(path)).size;
  if (!keep) await rm(path, { force: true });
  // maxRSS is in kilobytes (KiB).
  const maxRssMB = process.resourceUsage().maxRSS / 1024;
  console.log(
    JSON.stringify({
      variant,
      rows: rowCount,
      bytes,
      ms: round(ms, 1),
      cpuMs: round(cpuMs, 1),
      maxRssMB: round(maxRssMB, 1),
    }),
  );
}

// ---- parent ------------------------------------------------------------------------------------

function child(variant, rowCount, directory) {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [SCRIPT, '--variant', variant, '--rows', String(rowCount), '--out', directory],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let stdout = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (text) => {
      stdout += text;
    });
    proc.on('error', reject);
    proc.on('close', (code) => {
      const line = stdout.trim().split('\n').at(-1);
      if (code !== 0 || !line) {
        reject(new Error(`${variant} (${rowCount} rows) exited with code ${code}${line ? `: ${line}` : ''}`));
        return;
      }
      resolve(JSON.parse(line));
    });
  });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function round(value, digits) {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function loadAverage() {
  return os
    .loadavg()
    .map((load) => load.toFixed(2))
    .join(' ');
}

function pad(text, width, right = false) {
  const string = String(text);
  return right ? string.padStart(width) : string.padEnd(width);
}

function summarise(runs) {
  const ms = median(runs.map((run) => run.ms));
  const { rows, bytes } = runs[0];
  return {
    rows,
    bytes,
    ms,
    cpuMs: median(runs.map((run) => run.cpuMs)),
    rowsPerSec: rows / (ms / 1000),
    mbPerSec: bytes / 1e6 / (ms / 1000),
    maxRssMB: median(runs.map((run) => run.maxRssMB)),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.variant) {
    if (!args.out) fail('Expected --out DIR with --variant');
    await runVariant(args.variant, args.rows ?? DEFAULT_ROWS, args.out, args.keep);
    return;
  }
  if (!existsSync(DIST)) fail('packages/core/dist/index.js is missing: run npm run build first');

  const rowCount = args.rows ?? (args.quick ? 100_000 : DEFAULT_ROWS);
  const rounds = args.rounds ?? (args.quick ? 1 : 3);
  const memory = args.memory || (args.rows === undefined && !args.quick);
  const memoryRows = args.memoryRows ?? rowCount * 10;
  const directory = await mkdtemp(join(os.tmpdir(), 'spark-export-bench-'));
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(
    `spark-export bench: ${rowCount.toLocaleString('en-US')} rows x ${rounds} round(s), median; ` +
      `Node ${process.version}, ${os.cpus().length} x ${cpu}, ${round(os.totalmem() / 2 ** 30, 1)} GiB RAM, ` +
      `load average ${loadAverage()}`,
  );

  const results = new Map(VARIANTS.map((variant) => [variant, []]));
  try {
    for (let r = 0; r < rounds; r++) {
      // Rotate the order each round so no variant always runs first (or always after the heaviest).
      const order = VARIANTS.map((_, i) => VARIANTS[(i + r * 3) % VARIANTS.length]);
      for (const variant of order) {
        const result = await child(variant, rowCount, directory);
        results.get(variant).push(result);
        console.log(`  round ${r + 1}: ${JSON.stringify(result)}`);
      }
    }

    const stats = new Map([...results].map(([variant, runs]) => [variant, summarise(runs)]));
    console.log('');
    console.log(
      `${pad('variant', 28)}${pad('rows/s', 12, true)}${pad('MB/s', 9, true)}${pad('CPU s', 8, true)}${pad('peak RSS MiB', 14, true)}${pad('bytes', 14, true)}`,
    );
    for (const [variant, s] of stats) {
      console.log(
        `${pad(variant, 28)}${pad(Math.round(s.rowsPerSec).toLocaleString('en-US'), 12, true)}` +
          `${pad(s.bytes > 0 ? s.mbPerSec.toFixed(1) : '-', 9, true)}${pad((s.cpuMs / 1000).toFixed(2), 8, true)}${pad(s.maxRssMB.toFixed(1), 14, true)}${pad(s.bytes > 0 ? s.bytes : '-', 14, true)}`,
      );
    }

    const checks = [];
    const ratio = (name, a, b, target) => {
      const value = stats.get(a).rowsPerSec / stats.get(b).rowsPerSec;
      // For reading noisy runs only: the same ratio by CPU time, which other load disturbs less.
      const byCpu = stats.get(b).cpuMs / stats.get(a).cpuMs;
      checks.push({
        name: `${name}: ${a} / ${b}`,
        text: `${value.toFixed(2)}x`,
        cpu: `${byCpu.toFixed(2)}x`,
        target: `>= ${target}x`,
        pass: value >= target,
      });
    };
    ratio('CSV vs plain csv-stringify', 'csv:manager', 'csv:csv-stringify-pipeline', 1.5);
    ratio('CSV vs hand-written', 'csv:manager', 'csv:baseline', 0.8);
    ratio('CSV from an async source vs hand-written', 'csv:manager-async', 'csv:baseline', 0.8);
    ratio('JSON vs hand-written', 'json:manager', 'json:baseline', 0.9);
    ratio('NDJSON vs hand-written', 'ndjson:manager', 'ndjson:baseline', 0.9);

    if (memory) {
      console.log('');
      console.log(`memory: ${memoryRows.toLocaleString('en-US')} rows, one run each`);
      for (const variant of MEMORY_VARIANTS) {
        const big = await child(variant, memoryRows, directory);
        const small = stats.get(variant);
        const growth = big.maxRssMB / small.maxRssMB;
        console.log(
          `  ${JSON.stringify(big)}  (${Math.round(big.rows / (big.ms / 1000)).toLocaleString('en-US')} rows/s; ` +
            `peak RSS ${big.maxRssMB.toFixed(1)} MiB vs ${small.maxRssMB.toFixed(1)} MiB at ${small.rows.toLocaleString('en-US')} rows)`,
        );
        checks.push({
          name: `RSS ${variant}: ${memoryRows.toLocaleString('en-US')} / ${small.rows.toLocaleString('en-US')} rows`,
          text: `${growth.toFixed(2)}x`,
          target: '<= 1.2x',
          pass: growth <= 1.2,
        });
        checks.push({
          name: `RSS ${variant} at ${memoryRows.toLocaleString('en-US')} rows`,
          text: `${big.maxRssMB.toFixed(1)} MiB`,
          target: '< 150 MiB',
          pass: big.maxRssMB < 150,
        });
      }
    }

    console.log('');
    console.log(
      `${pad('target (rows/s ratios use wall time)', 72)}${pad('measured', 12, true)}${pad('target', 12, true)}  result  (by CPU time)`,
    );
    for (const check of checks) {
      console.log(
        `${pad(check.name, 72)}${pad(check.text, 12, true)}${pad(check.target, 12, true)}  ${check.pass ? 'PASS' : 'FAIL'}${check.cpu ? `    (${check.cpu})` : ''}`,
      );
    }
    const failed = checks.filter((check) => !check.pass).length;
    console.log('');
    // Other processes competing for the CPUs make every number noisier; say so next to them.
    console.log(`load average at the end: ${loadAverage()}`);
    console.log(
      failed === 0
        ? 'all targets met'
        : `${failed} target(s) missed${args.strict ? '' : ' (exit 0; pass --strict to fail)'}`,
    );
    if (failed > 0 && args.strict) process.exitCode = 1;
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

await main();
