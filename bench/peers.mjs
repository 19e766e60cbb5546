// spark-export against the CSV and JSON libraries a user would otherwise reach for, and against
// hand-written loops, in one run. See bench/README.md; docs/benchmarks.md quotes its output.
//
//   npm run bench:peers                    1M rows x 3 rounds, the event-loop comparison, the 10M memory run
//   node bench/peers.mjs --quick           20k rows, 1 round (smoke)
//   node bench/peers.mjs --rows N --rounds R [--no-memory] [--only csv,json,...]
//   node bench/peers.mjs --variant csv:spark-async --rows N --out DIR     one child run
//
// Every run is its own child process (peak RSS is per process; JIT state and garbage of one
// variant stay out of the next). Rounds rotate the order of the variants. Every variant exports
// the same seeded rows (bench/rows.mjs) to a file and reports wall time, CPU time (user +
// system, all threads) and peak RSS; the parent prints medians and the target ratios.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import {
  CHUNK_CHARS,
  COLUMNS,
  csvLine,
  generateRows,
  generateRowsAsync,
  inBatches,
  TYPED_COLUMNS,
  writeBatched,
  writeBatchedAsync,
} from './rows.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const DIST =
  process.env.SPARK_EXPORT_DIST ?? fileURLToPath(new URL('../packages/core/dist/index.js', import.meta.url));
const HEADER = `${COLUMNS.join(',')}\n`;
const BATCH = 500;
/** The level both gzip variants use: the library's default. */
const GZIP_LEVEL = 3;

const VARIANTS = {
  csv: [
    'csv:spark-async',
    'csv:hand-async',
    'csv:papaparse',
    'csv:json2csv',
    'csv:fast-csv',
    'csv:csv-stringify-stream',
    'csv:csv-stringify-sync',
    'csv:spark-sync',
    'csv:hand-sync',
    'rows:async-only',
  ],
  ndjson: ['ndjson:spark', 'ndjson:spark-no-columns', 'ndjson:hand-row', 'ndjson:fast-json-stringify'],
  json: ['json:spark', 'json:hand-batch'],
  gzip: ['csv-gzip:spark', 'csv-gzip:hand'],
  eventloop: ['eventloop:spark', 'eventloop:hand'],
};

// ---- arguments -----------------------------------------------------------------------------------

function parseArgs(argv) {
  const args = { quick: false, memory: true, only: Object.keys(VARIANTS) };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) fail(`Expected a value after ${arg}`);
      return next;
    };
    if (arg === '--quick') args.quick = true;
    else if (arg === '--no-memory') args.memory = false;
    else if (arg === '--variant') args.variant = value();
    else if (arg === '--out') args.out = value();
    else if (arg === '--rows') args.rows = positiveInteger('--rows', value());
    else if (arg === '--rounds') args.rounds = positiveInteger('--rounds', value());
    else if (arg === '--only') {
      args.only = value().split(',');
      for (const group of args.only) {
        if (!Object.hasOwn(VARIANTS, group))
          fail(`Unknown group ${JSON.stringify(group)}; expected some of ${Object.keys(VARIANTS).join(',')}`);
      }
    } else fail(`Unknown argument ${JSON.stringify(arg)}; see the header of bench/peers.mjs`);
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
  console.error(`bench/peers.mjs: ${message}`);
  process.exit(2);
}

// ---- variants (child process) --------------------------------------------------------------------

async function loadManager(rowCount, { sync = false, columns = TYPED_COLUMNS } = {}) {
  if (!existsSync(DIST)) fail('packages/core/dist/index.js is missing: run npm run build first');
  const { ExportManager } = await import(DIST);
  return new ExportManager({
    maxConcurrent: 5,
    datasets: {
      bench: {
        ...(columns ? { columns } : {}),
        source: () => (sync ? generateRows(rowCount) : generateRowsAsync(rowCount)),
      },
    },
  });
}

/** A write stream that resolves once closed; strings are written as UTF-8, like the manager's. */
function fileOut(path) {
  return createWriteStream(path);
}

/** The variant's export as a function of the output path; what runs is what is timed. */
async function prepareVariant(variant, rowCount) {
  switch (variant) {
    case 'csv:spark-async': {
      const manager = await loadManager(rowCount);
      return (path) => manager.stream({ dataset: 'bench', format: 'csv' }, fileOut(path));
    }
    case 'csv:spark-sync': {
      const manager = await loadManager(rowCount, { sync: true });
      return (path) => manager.stream({ dataset: 'bench', format: 'csv' }, fileOut(path));
    }
    case 'csv:hand-async':
      return (path) =>
        writeBatchedAsync(fileOut(path), generateRowsAsync(rowCount), { head: HEADER, encode: csvLine });
    case 'csv:hand-sync':
      return (path) => writeBatched(path, generateRows(rowCount), { head: HEADER, encode: csvLine });
    case 'csv:papaparse': {
      const { default: Papa } = await import('papaparse');
      return (path) =>
        writeChunks(fileOut(path), async function* () {
          let header = true;
          for await (const batch of inBatches(generateRowsAsync(rowCount), BATCH)) {
            // unparse joins lines with \r\n by default; \n keeps the bytes comparable.
            yield `${Papa.unparse(batch, { columns: COLUMNS, header, newline: '\n' })}\n`;
            header = false;
          }
        });
    }
    case 'csv:json2csv': {
      const { Transform } = await import('@json2csv/node');
      return (path) =>
        pipeline(
          Readable.from(generateRowsAsync(rowCount)),
          new Transform({ fields: COLUMNS }, {}, { objectMode: true }),
          fileOut(path),
        );
    }
    case 'csv:fast-csv': {
      const { format } = await import('@fast-csv/format');
      return (path) =>
        pipeline(Readable.from(generateRowsAsync(rowCount)), format({ headers: COLUMNS }), fileOut(path));
    }
    case 'csv:csv-stringify-stream': {
      const { stringify } = await import('csv-stringify');
      return (path) =>
        pipeline(
          Readable.from(generateRowsAsync(rowCount)),
          stringify({ header: true, columns: COLUMNS }),
          fileOut(path),
        );
    }
    case 'csv:csv-stringify-sync': {
      const { stringify } = await import('csv-stringify/sync');
      return (path) =>
        writeChunks(fileOut(path), async function* () {
          let header = true;
          for await (const batch of inBatches(generateRowsAsync(rowCount), BATCH)) {
            yield stringify(batch, { header, columns: COLUMNS });
            header = false;
          }
        });
    }
    case 'rows:async-only':
      return async () => {
        let ids = 0;
        for await (const row of generateRowsAsync(rowCount)) ids += row.id;
        if (ids === 0) throw new Error('no rows generated');
      };
    case 'ndjson:spark': {
      const manager = await loadManager(rowCount);
      return (path) => manager.stream({ dataset: 'bench', format: 'ndjson' }, fileOut(path));
    }
    case 'ndjson:spark-no-columns': {
      const manager = await loadManager(rowCount, { columns: null });
      return (path) => manager.stream({ dataset: 'bench', format: 'ndjson' }, fileOut(path));
    }
    case 'ndjson:hand-row':
      return (path) =>
        writeBatchedAsync(fileOut(path), generateRowsAsync(rowCount), {
          head: '',
          encode: (row) => `${JSON.stringify(row)}\n`,
        });
    case 'ndjson:fast-json-stringify': {
      const { default: fastJson } = await import('fast-json-stringify');
      const jsonType = {
        integer: 'integer',
        number: 'number',
        boolean: 'boolean',
        string: 'string',
        date: 'string',
      };
      const stringifyRow = fastJson({
        type: 'object',
        properties: Object.fromEntries(
          TYPED_COLUMNS.map((column) => [column.name, { type: jsonType[column.type] }]),
        ),
      });
      return (path) =>
        writeBatchedAsync(fileOut(path), generateRowsAsync(rowCount), {
          head: '',
          encode: (row) => `${stringifyRow(row)}\n`,
        });
    }
    case 'json:spark': {
      const manager = await loadManager(rowCount);
      return (path) => manager.stream({ dataset: 'bench', format: 'json' }, fileOut(path));
    }
    case 'json:hand-batch':
      return (path) =>
        writeChunks(fileOut(path), async function* () {
          let lead = '[';
          for await (const batch of inBatches(generateRowsAsync(rowCount), BATCH)) {
            yield lead + JSON.stringify(batch).slice(1, -1);
            lead = ',';
          }
          yield lead === '[' ? '[]' : ']';
        });
    case 'csv-gzip:spark': {
      const manager = await loadManager(rowCount);
      return (path) =>
        manager.stream({ dataset: 'bench', format: 'csv', compression: 'gzip' }, fileOut(path));
    }
    case 'csv-gzip:hand':
      return async (path) => {
        const gzip = createGzip({ level: GZIP_LEVEL });
        const done = pipeline(gzip, fileOut(path));
        await writeBatchedAsync(gzip, generateRowsAsync(rowCount), { head: HEADER, encode: csvLine });
        await done;
      };
    case 'eventloop:spark': {
      const manager = await loadManager(rowCount);
      return (path) =>
        Promise.all(
          [0, 1, 2, 3, 4].map((n) =>
            manager.stream({ dataset: 'bench', format: 'csv' }, fileOut(`${path}.${n}`)),
          ),
        );
    }
    case 'eventloop:hand':
      return (path) =>
        Promise.all(
          [0, 1, 2, 3, 4].map((n) =>
            writeBatchedAsync(fileOut(`${path}.${n}`), generateRowsAsync(rowCount), {
              head: HEADER,
              encode: csvLine,
            }),
          ),
        );
    default:
      fail(`Unknown variant ${JSON.stringify(variant)}`);
  }
}

/** Writes the generator's strings, gathered into ~64 KiB chunks, waiting for `drain`. */
async function writeChunks(out, generate) {
  let chunk = '';
  for await (const text of generate()) {
    chunk += text;
    if (chunk.length >= CHUNK_CHARS) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
}

async function runVariant(variant, rowCount, directory) {
  const path = join(directory, variant.replace(':', '-'));
  const run = await prepareVariant(variant, rowCount);
  const eventLoop = variant.startsWith('eventloop:');
  const delay = eventLoop ? monitorEventLoopDelay({ resolution: 10 }) : undefined;
  delay?.enable();
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  await run(path);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const cpu = process.cpuUsage(cpuBefore);
  delay?.disable();
  let bytes = 0;
  for (const file of eventLoop ? [0, 1, 2, 3, 4].map((n) => `${path}.${n}`) : [path]) {
    if (variant === 'rows:async-only') break;
    bytes += (await stat(file)).size;
    await rm(file, { force: true });
  }
  const result = {
    variant,
    rows: eventLoop ? rowCount * 5 : rowCount,
    bytes,
    ms: round(ms, 1),
    cpuMs: round((cpu.user + cpu.system) / 1000, 1),
    maxRssMB: round(process.resourceUsage().maxRSS / 1024, 1),
  };
  if (delay) {
    result.p50Ms = round(delay.percentile(50) / 1e6, 2);
    result.p99Ms = round(delay.percentile(99) / 1e6, 2);
    result.maxMs = round(delay.max / 1e6, 2);
  }
  console.log(JSON.stringify(result));
}

// ---- parent --------------------------------------------------------------------------------------

function child(variant, rowCount, directory) {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [SCRIPT, '--variant', variant, '--rows', String(rowCount), '--out', directory],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
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

function pad(text, width, right = false) {
  const string = String(text);
  return right ? string.padStart(width) : string.padEnd(width);
}

const loadAverage = () =>
  os
    .loadavg()
    .map((load) => load.toFixed(2))
    .join(' ');

function summarise(runs) {
  const pick = (key) => median(runs.map((run) => run[key]));
  const ms = pick('ms');
  const summary = {
    rows: runs[0].rows,
    bytes: runs[0].bytes,
    ms,
    cpuMs: pick('cpuMs'),
    maxRssMB: pick('maxRssMB'),
    rowsPerSec: runs[0].rows / (ms / 1000),
  };
  if (runs[0].p99Ms !== undefined) {
    summary.p50Ms = pick('p50Ms');
    summary.p99Ms = pick('p99Ms');
    summary.maxMs = pick('maxMs');
  }
  return summary;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.variant) {
    if (!args.out) fail('Expected --out DIR with --variant');
    await runVariant(args.variant, args.rows ?? 1_000_000, args.out);
    return;
  }
  if (!existsSync(DIST)) fail('packages/core/dist/index.js is missing: run npm run build first');
  const rowCount = args.rows ?? (args.quick ? 20_000 : 1_000_000);
  const rounds = args.rounds ?? (args.quick ? 1 : 3);
  const memory = args.memory && !args.quick && args.only.includes('csv');
  const variants = args.only.flatMap((group) => VARIANTS[group]);
  const directory = await mkdtemp(join(os.tmpdir(), 'spark-export-peers-'));
  console.log(
    `spark-export peers: ${rowCount.toLocaleString('en-US')} rows x ${rounds} round(s), median; Node ${process.version}, ` +
      `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${round(os.totalmem() / 2 ** 30, 1)} GiB RAM, ` +
      `load average ${loadAverage()}`,
  );
  const results = new Map(variants.map((variant) => [variant, []]));
  try {
    for (let r = 0; r < rounds; r++) {
      // Rotate the order each round so that no variant always runs first or after the heaviest.
      const order = variants.map((_, i) => variants[(i + r * 5) % variants.length]);
      for (const variant of order) {
        // The event-loop runs are five exports each: a fifth of the rows keeps them as long as one.
        const rows = variant.startsWith('eventloop:') ? Math.ceil(rowCount / 5) : rowCount;
        const result = await child(variant, rows, directory);
        results.get(variant).push(result);
        console.log(`  round ${r + 1}: ${JSON.stringify(result)}`);
      }
    }
    const stats = new Map([...results].map(([variant, runs]) => [variant, summarise(runs)]));
    console.log('');
    console.log(
      `${pad('variant', 28)}${pad('rows/s', 12, true)}${pad('wall s', 9, true)}${pad('CPU s', 8, true)}${pad('peak RSS MiB', 14, true)}${pad('bytes', 13, true)}  loop p50/p99/max ms`,
    );
    for (const [variant, s] of stats) {
      console.log(
        `${pad(variant, 28)}${pad(Math.round(s.rowsPerSec).toLocaleString('en-US'), 12, true)}${pad((s.ms / 1000).toFixed(2), 9, true)}` +
          `${pad((s.cpuMs / 1000).toFixed(2), 8, true)}${pad(s.maxRssMB.toFixed(1), 14, true)}${pad(s.bytes || '-', 13, true)}` +
          `${s.p99Ms === undefined ? '' : `  ${s.p50Ms}/${s.p99Ms}/${s.maxMs}`}`,
      );
    }

    const checks = [];
    const ratio = (name, a, b, target) => {
      if (!stats.has(a) || !stats.has(b)) return;
      const byWall = stats.get(a).rowsPerSec / stats.get(b).rowsPerSec;
      const byCpu = stats.get(b).cpuMs / stats.get(a).cpuMs;
      checks.push({
        name: `${name}: ${a} / ${b}`,
        text: `${byWall.toFixed(2)}x`,
        cpu: `${byCpu.toFixed(2)}x`,
        target: `>= ${target}x`,
        pass: byCpu >= target,
      });
    };
    ratio('CSV async vs hand-written', 'csv:spark-async', 'csv:hand-async', 1.25);
    const fastestPeer = [
      'csv:papaparse',
      'csv:json2csv',
      'csv:fast-csv',
      'csv:csv-stringify-stream',
      'csv:csv-stringify-sync',
    ]
      .filter((variant) => stats.has(variant))
      .sort((a, b) => stats.get(a).cpuMs - stats.get(b).cpuMs)[0];
    if (fastestPeer) ratio('CSV vs the fastest CSV library', 'csv:spark-async', fastestPeer, 1.5);
    ratio('CSV sync vs hand-written sync', 'csv:spark-sync', 'csv:hand-sync', 1.4);
    ratio('NDJSON declared vs JSON.stringify(row)', 'ndjson:spark', 'ndjson:hand-row', 1.1);
    ratio('JSON declared vs JSON.stringify(batch)', 'json:spark', 'json:hand-batch', 1.0);
    ratio(`gzip CSV (level ${GZIP_LEVEL}) vs hand-written gzip`, 'csv-gzip:spark', 'csv-gzip:hand', 1.0);
    if (stats.has('eventloop:spark') && stats.has('eventloop:hand')) {
      const extra = stats.get('eventloop:spark').p99Ms - stats.get('eventloop:hand').p99Ms;
      checks.push({
        name: 'event-loop p99, 5 exports: spark minus hand-written',
        text: `${extra >= 0 ? '+' : ''}${extra.toFixed(1)} ms`,
        target: '<= +1 ms',
        pass: extra <= 1,
      });
    }
    if (memory) {
      const big = await child('csv:spark-async', rowCount * 10, directory);
      const small = stats.get('csv:spark-async');
      console.log(`\nmemory: ${JSON.stringify(big)}`);
      checks.push({
        name: `peak RSS csv:spark-async, ${big.rows.toLocaleString('en-US')} / ${small.rows.toLocaleString('en-US')} rows`,
        text: `${(big.maxRssMB / small.maxRssMB).toFixed(2)}x`,
        target: '<= 1.1x',
        pass: big.maxRssMB / small.maxRssMB <= 1.1,
      });
      checks.push({
        name: `peak RSS csv:spark-async at ${big.rows.toLocaleString('en-US')} rows`,
        text: `${big.maxRssMB.toFixed(1)} MiB`,
        target: '< 150 MiB',
        pass: big.maxRssMB < 150,
      });
    }
    console.log('');
    console.log(
      `${pad('target (ratios by CPU time; wall time beside)', 78)}${pad('by wall', 10, true)}${pad('by CPU', 10, true)}${pad('target', 11, true)}  result`,
    );
    for (const check of checks) {
      console.log(
        `${pad(check.name, 78)}${pad(check.cpu ? check.text : '', 10, true)}${pad(check.cpu ?? check.text, 10, true)}${pad(check.target, 11, true)}  ${check.pass ? 'PASS' : 'FAIL'}`,
      );
    }
    console.log(`\nload average at the end: ${loadAverage()}`);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

await main();
