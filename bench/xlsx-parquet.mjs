// XLSX and Parquet exports of @spark-export/core: throughput and peak RSS against exceljs's
// streaming WorkbookWriter and against the CSV export of the same rows (bench/formats.mjs's 7
// columns, typed), then a 10x bigger run to show that peak RSS does not grow with the rows.
// docs/benchmarks.md quotes its output.
//
//   node bench/xlsx-parquet.mjs                 1M rows x 3 rounds, then 10M rows once each
//   node bench/xlsx-parquet.mjs --quick         20k rows, 1 round, no memory runs (smoke)
//   node bench/xlsx-parquet.mjs --rows N --rounds R --memory-rows M
//   node bench/xlsx-parquet.mjs --only xlsx:manager,csv:manager   some variants only
//   node bench/xlsx-parquet.mjs --strict        exit 1 when a target is missed
//   node bench/xlsx-parquet.mjs --variant xlsx:manager --rows N --out DIR   one child run
//
// Each run is a child process of its own (peak RSS is per process); the order of the variants
// rotates every round, and the figures are medians.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, createDeflateRaw } from 'node:zlib';
import { generateRows } from './rows.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const DIST = fileURLToPath(new URL('../packages/core/dist/index.js', import.meta.url));

const VARIANTS = [
  'xlsx:manager',
  'xlsx:manager-level6',
  'xlsx:exceljs-writer',
  'parquet:manager',
  'csv:manager',
  // The zip library choice: deflating the same sheet XML with fflate (sync, what the encoder
  // uses) and with Node's zlib stream (what yazl and archiver use).
  'deflate:fflate',
  'deflate:node-zlib',
];
// The CSV export's flat memory is shown by bench/formats.mjs.
const MEMORY_VARIANTS = ['xlsx:manager', 'parquet:manager'];
const COLUMNS = [
  { name: 'id', type: 'integer' },
  { name: 'name', type: 'string' },
  { name: 'email', type: 'string' },
  { name: 'amount', type: 'number' },
  { name: 'created_at', type: 'date' },
  { name: 'active', type: 'boolean' },
  { name: 'note', type: 'string' },
];

function fail(message) {
  console.error(`bench/xlsx-parquet.mjs: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { quick: false, strict: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) fail(`Expected a value after ${arg}`);
      return next;
    };
    const count = (name) => {
      const number = Number(value().replaceAll('_', ''));
      if (!Number.isSafeInteger(number) || number < 1) fail(`Expected ${name} to be a positive integer`);
      return number;
    };
    if (arg === '--quick') args.quick = true;
    else if (arg === '--strict') args.strict = true;
    else if (arg === '--variant') args.variant = value();
    else if (arg === '--out') args.out = value();
    else if (arg === '--rows') args.rows = count('--rows');
    else if (arg === '--rounds') args.rounds = count('--rounds');
    else if (arg === '--memory-rows') args.memoryRows = count('--memory-rows');
    else if (arg === '--only') args.only = value().split(',');
    else fail(`Unknown argument ${JSON.stringify(arg)}; see the header of bench/xlsx-parquet.mjs`);
  }
  return args;
}

// ---- variants (child process) ------------------------------------------------------------------

async function manager(format, options = {}) {
  if (!existsSync(DIST)) fail('packages/core/dist/index.js is missing: run npm run build first');
  const { ExportManager } = await import(DIST);
  return (rowCount, path) => {
    const exports = new ExportManager({
      ...options,
      datasets: { bench: { columns: COLUMNS, source: () => generateRows(rowCount) } },
    });
    return exports.stream({ dataset: 'bench', format }, createWriteStream(path));
  };
}

async function exceljsWriter() {
  const { default: ExcelJS } = await import('exceljs');
  return async (rowCount, path) => {
    // exceljs's streaming writer, set up like ours: inline strings, no styles.
    const workbook = new ExcelJS.stream.xlsx.WorkbookWriter({
      filename: path,
      useSharedStrings: false,
      useStyles: false,
    });
    const sheet = workbook.addWorksheet('Sheet1');
    sheet.columns = COLUMNS.map((column) => ({ header: column.name, key: column.name }));
    for (const row of generateRows(rowCount)) {
      sheet.addRow({ ...row, created_at: new Date(row.created_at) }).commit();
    }
    sheet.commit();
    await workbook.commit();
  };
}

/** Sheet XML like the encoder's, in 256 KiB pieces, for the deflate-only variants. */
function* sheetXml(rowCount) {
  let xml = '';
  let r = 1;
  for (const row of generateRows(rowCount)) {
    r++;
    xml += `<row r="${r}"><c r="A${r}"><v>${row.id}</v></c><c r="B${r}" t="inlineStr"><is><t xml:space="preserve">${row.name}</t></is></c><c r="C${r}" t="inlineStr"><is><t xml:space="preserve">${row.email}</t></is></c><c r="D${r}"><v>${row.amount}</v></c><c r="E${r}" s="2"><v>${Date.parse(row.created_at) / 86_400_000 + 25_569}</v></c><c r="F${r}" t="b"><v>${row.active ? 1 : 0}</v></c><c r="G${r}" t="inlineStr"><is><t xml:space="preserve">${row.note}</t></is></c></row>`;
    if (xml.length >= 256 * 1024) {
      yield Buffer.from(xml);
      xml = '';
    }
  }
  yield Buffer.from(xml);
}

async function deflateWithFflate() {
  const { Deflate } = await import('fflate');
  return async (rowCount, path) => {
    const out = createWriteStream(path);
    const deflate = new Deflate({ level: 1 }, (chunk) => out.write(chunk));
    for (const piece of sheetXml(rowCount)) deflate.push(piece, false);
    deflate.push(new Uint8Array(0), true);
    out.end();
    await once(out, 'finish');
  };
}

async function deflateWithNodeZlib() {
  return async (rowCount, path) => {
    const out = createWriteStream(path);
    const deflate = createDeflateRaw({ level: 1, strategy: constants.Z_DEFAULT_STRATEGY });
    deflate.pipe(out);
    for (const piece of sheetXml(rowCount)) {
      if (!deflate.write(piece)) await once(deflate, 'drain');
    }
    deflate.end();
    await once(out, 'finish');
  };
}

async function runVariant(variant, rowCount, directory) {
  const [format, kind] = variant.split(':');
  const path = join(directory, `${variant.replace(':', '-')}.${format}`);
  const runs = {
    'xlsx:manager': () => manager('xlsx'),
    'xlsx:manager-level6': () => manager('xlsx', { xlsx: { compressionLevel: 6 } }),
    'xlsx:exceljs-writer': exceljsWriter,
    'parquet:manager': () => manager('parquet'),
    'csv:manager': () => manager('csv'),
    'deflate:fflate': deflateWithFflate,
    'deflate:node-zlib': deflateWithNodeZlib,
  };
  if (!Object.hasOwn(runs, variant))
    fail(`Unknown variant ${JSON.stringify(variant)}; expected one of ${VARIANTS.join(', ')}`);
  const run = await runs[variant]();
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  await run(rowCount, path);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const cpu = process.cpuUsage(cpuBefore);
  const bytes = (await stat(path)).size;
  await rm(path, { force: true });
  console.log(
    JSON.stringify({
      variant,
      kind,
      rows: rowCount,
      bytes,
      ms: round(ms, 1),
      cpuMs: round((cpu.user + cpu.system) / 1000, 1),
      maxRssMB: round(process.resourceUsage().maxRSS / 1024, 1),
    }),
  );
}

// ---- parent ------------------------------------------------------------------------------------

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

const pad = (text, width, right = false) =>
  right ? String(text).padStart(width) : String(text).padEnd(width);

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
  const memoryRows = args.quick ? undefined : (args.memoryRows ?? rowCount * 10);
  const directory = await mkdtemp(join(os.tmpdir(), 'spark-export-bench-'));
  console.log(
    `spark-export xlsx/parquet bench: ${rowCount.toLocaleString('en-US')} rows x ${rounds} round(s), median; ` +
      `Node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, ` +
      `${round(os.totalmem() / 2 ** 30, 1)} GiB RAM, load average ${os
        .loadavg()
        .map((load) => load.toFixed(2))
        .join(' ')}`,
  );
  const variants = args.only ?? VARIANTS;
  for (const variant of variants) {
    if (!VARIANTS.includes(variant))
      fail(`Unknown variant ${JSON.stringify(variant)}; expected some of ${VARIANTS.join(', ')}`);
  }
  const results = new Map(variants.map((variant) => [variant, []]));
  const checks = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const order = variants.map((_, i) => variants[(i + r * 2) % variants.length]);
      for (const variant of order) {
        const result = await child(variant, rowCount, directory);
        results.get(variant).push(result);
        console.log(`  round ${r + 1}: ${JSON.stringify(result)}`);
      }
    }
    const stats = new Map(
      [...results].map(([variant, runs]) => {
        const ms = median(runs.map((run) => run.ms));
        return [
          variant,
          {
            rows: runs[0].rows,
            bytes: runs[0].bytes,
            ms,
            cpuMs: median(runs.map((run) => run.cpuMs)),
            rowsPerSec: runs[0].rows / (ms / 1000),
            maxRssMB: median(runs.map((run) => run.maxRssMB)),
          },
        ];
      }),
    );
    console.log('');
    console.log(
      `${pad('variant', 24)}${pad('rows/s', 12, true)}${pad('CPU s', 8, true)}${pad('peak RSS MiB', 14, true)}${pad('bytes', 14, true)}`,
    );
    for (const [variant, s] of stats) {
      console.log(
        `${pad(variant, 24)}${pad(Math.round(s.rowsPerSec).toLocaleString('en-US'), 12, true)}${pad((s.cpuMs / 1000).toFixed(2), 8, true)}${pad(s.maxRssMB.toFixed(1), 14, true)}${pad(s.bytes, 14, true)}`,
      );
    }
    const atLeast = (name, text, value, target) =>
      checks.push({ name, text, target: `>= ${target}`, pass: value >= target });
    const xlsx = stats.get('xlsx:manager');
    if (xlsx) {
      atLeast(
        'XLSX rows/s at the default zip level (1)',
        Math.round(xlsx.rowsPerSec).toLocaleString('en-US'),
        xlsx.rowsPerSec,
        150_000,
      );
    }
    const exceljs = stats.get('xlsx:exceljs-writer');
    if (xlsx && exceljs) {
      const vsExceljs = xlsx.rowsPerSec / exceljs.rowsPerSec;
      atLeast('XLSX vs exceljs WorkbookWriter (rows/s)', `${vsExceljs.toFixed(2)}x`, vsExceljs, 3);
      const byCpu = exceljs.cpuMs / xlsx.cpuMs;
      atLeast('XLSX vs exceljs WorkbookWriter (by CPU time)', `${byCpu.toFixed(2)}x`, byCpu, 3);
    }

    if (memoryRows !== undefined) {
      console.log('');
      console.log(`memory: ${memoryRows.toLocaleString('en-US')} rows, one run each`);
      for (const variant of MEMORY_VARIANTS.filter((name) => results.has(name))) {
        const big = await child(variant, memoryRows, directory);
        const small = stats.get(variant);
        const growth = big.maxRssMB / small.maxRssMB;
        console.log(
          `  ${JSON.stringify(big)}  (${Math.round(big.rows / (big.ms / 1000)).toLocaleString('en-US')} rows/s; peak RSS ${big.maxRssMB.toFixed(1)} MiB vs ${small.maxRssMB.toFixed(1)} MiB at ${small.rows.toLocaleString('en-US')} rows)`,
        );
        checks.push({
          name: `RSS ${variant}: ${memoryRows.toLocaleString('en-US')} / ${small.rows.toLocaleString('en-US')} rows`,
          text: `${growth.toFixed(2)}x`,
          target: '<= 1.2x',
          pass: growth <= 1.2,
        });
        if (variant === 'xlsx:manager') {
          checks.push({
            name: `RSS ${variant} at ${memoryRows.toLocaleString('en-US')} rows`,
            text: `${big.maxRssMB.toFixed(1)} MiB`,
            target: '< 200 MiB',
            pass: big.maxRssMB < 200,
          });
        }
      }
    }
    console.log('');
    console.log(`${pad('target', 60)}${pad('measured', 12, true)}${pad('target', 14, true)}  result`);
    for (const check of checks) {
      console.log(
        `${pad(check.name, 60)}${pad(check.text, 12, true)}${pad(check.target, 14, true)}  ${check.pass ? 'PASS' : 'FAIL'}`,
      );
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
  if (args.strict && checks.some((check) => !check.pass)) process.exit(1);
}

await main();
