import { Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { type Compression, DEFAULT_GZIP_LEVEL } from '../src/compression.js';
import { csvFormat } from '../src/formats/csv.js';
import { writeExport } from '../src/pipeline/write-export.js';

/** A destination that keeps every byte written to it. */
function collector(): { destination: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { destination, bytes: () => Buffer.concat(chunks) };
}

const rows = Array.from({ length: 5_000 }, (_, index) => ({
  id: index,
  name: `customer ${index % 97}`,
  note: index % 3 === 0 ? 'paid, on time' : 'refund "partial"',
}));
const expectedText = csvFormat.createEncoder().encode(rows);

async function exportWith(compression: Compression) {
  const { destination, bytes } = collector();
  let opened = 0;
  const result = await writeExport({
    dataset: 'orders',
    open: () => {
      opened++;
      return rows;
    },
    encoder: csvFormat.createEncoder(),
    destination,
    signal: new AbortController().signal,
    compression,
    batchSize: 500,
    end: true,
    hash: false,
  });
  return { result, bytes: bytes(), opened };
}

const zstdDecompressSync = (zlib as { zstdDecompressSync?: (buffer: Buffer) => Buffer }).zstdDecompressSync;
const hasZstd = typeof (zlib as { createZstdCompress?: unknown }).createZstdCompress === 'function';

describe('writeExport compression', () => {
  it('gzips at the default level when none is given, and at the level asked for', async () => {
    const byDefault = await exportWith({ type: 'gzip' });
    expect(zlib.gunzipSync(byDefault.bytes).toString()).toBe(expectedText);
    expect(byDefault.result.bytes).toBe(byDefault.bytes.length);
    // The same text at the same level gives the same bytes: the default is DEFAULT_GZIP_LEVEL.
    // (Checks of the option itself, and zstd's 422 on older Node, are in export-options.test.ts.)
    expect(byDefault.bytes.subarray(10)).toEqual(
      zlib.gzipSync(expectedText, { level: DEFAULT_GZIP_LEVEL }).subarray(10),
    );

    const stored = await exportWith({ type: 'gzip', level: 0 });
    const best = await exportWith({ type: 'gzip', level: 9 });
    expect(zlib.gunzipSync(stored.bytes).toString()).toBe(expectedText);
    expect(zlib.gunzipSync(best.bytes).toString()).toBe(expectedText);
    // Level 0 stores the text uncompressed; level 9 compresses it at least as well as the default.
    expect(stored.bytes.length).toBeGreaterThan(Buffer.byteLength(expectedText));
    expect(best.bytes.length).toBeLessThanOrEqual(byDefault.bytes.length);
  });

  it.runIf(hasZstd)('compresses with zstd where Node has it, at the level asked for', async () => {
    const byDefault = await exportWith({ type: 'zstd' });
    const fast = await exportWith({ type: 'zstd', level: 1 });
    const small = await exportWith({ type: 'zstd', level: 19 });
    for (const run of [byDefault, fast, small]) {
      expect(zstdDecompressSync!(run.bytes).toString()).toBe(expectedText);
    }
    expect(small.bytes.length).toBeLessThan(fast.bytes.length);
  });
});
