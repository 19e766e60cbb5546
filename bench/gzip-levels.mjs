// CPU time and output size of every gzip level (and zstd levels where Node has zstd) on the
// benchmark's CSV: the measurement behind DEFAULT_GZIP_LEVEL in packages/core/src/pipeline/write-export.ts.
//
//   node bench/gzip-levels.mjs [--rows N] [--rounds R]     (default 200,000 rows, 3 rounds)
//
// The CSV is the bytes the manager writes for the seeded rows (bench/rows.mjs), compressed in
// ~64 KiB chunks through a stream as the pipeline does. Levels are interleaved within each round;
// the script prints the median CPU time (user + system: the compression runs on the thread pool),
// the throughput by CPU time and the size relative to the input.

import os from 'node:os';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { CHUNK_CHARS, COLUMNS, csvLine, generateRows } from './rows.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(name);
  return index === -1 ? fallback : Number(args[index + 1]);
};
const rowCount = option('--rows', 200_000);
const rounds = option('--rounds', 3);

const chunks = [];
let chunk = `${COLUMNS.join(',')}\n`;
for (const row of generateRows(rowCount)) {
  chunk += csvLine(row);
  if (chunk.length >= CHUNK_CHARS) {
    chunks.push(Buffer.from(chunk));
    chunk = '';
  }
}
chunks.push(Buffer.from(chunk));
const inputBytes = chunks.reduce((sum, buffer) => sum + buffer.length, 0);

const candidates = [1, 2, 3, 4, 5, 6, 9].map((level) => ({
  name: `gzip ${level}`,
  create: () => zlib.createGzip({ level }),
}));
if (typeof zlib.createZstdCompress === 'function') {
  for (const level of [1, 3, 6]) {
    candidates.push({
      name: `zstd ${level}`,
      create: () => zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: level } }),
    });
  }
}

async function measure(candidate) {
  let bytes = 0;
  const sink = new Writable({
    write(data, _encoding, callback) {
      bytes += data.length;
      callback();
    },
  });
  const before = process.cpuUsage();
  await pipeline(Readable.from(chunks), candidate.create(), sink);
  const cpu = process.cpuUsage(before);
  return { cpuMs: (cpu.user + cpu.system) / 1000, bytes };
}

const results = new Map(candidates.map((candidate) => [candidate.name, []]));
for (let round = 0; round < rounds; round++) {
  for (let i = 0; i < candidates.length; i++) {
    const candidate = candidates[(i + round * 3) % candidates.length];
    results.get(candidate.name).push(await measure(candidate));
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
console.log(
  `gzip-levels: ${(inputBytes / 1e6).toFixed(1)} MB of CSV (${rowCount.toLocaleString('en-US')} rows), ${rounds} rounds, median; ` +
    `Node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown CPU'}, load average ${os
      .loadavg()
      .map((load) => load.toFixed(2))
      .join(' ')}`,
);
console.log(`${'level'.padEnd(8)}${'CPU ms'.padStart(9)}${'MB/s by CPU'.padStart(13)}${'size'.padStart(8)}`);
for (const [name, runs] of results) {
  const cpuMs = median(runs.map((run) => run.cpuMs));
  const size = runs[0].bytes / inputBytes;
  console.log(
    `${name.padEnd(8)}${cpuMs.toFixed(0).padStart(9)}${(inputBytes / 1e6 / (cpuMs / 1000)).toFixed(1).padStart(13)}${(size * 100).toFixed(1).padStart(7)}%`,
  );
}
