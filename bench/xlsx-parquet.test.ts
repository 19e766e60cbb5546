import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Keeps bench/xlsx-parquet.mjs from rotting: it must run end to end and report every variant.
// No assertion looks at timings; the benchmark itself reports PASS/FAIL against its targets.
// Needs packages/core/dist (`npm test` builds first).

const run = promisify(execFile);
const script = fileURLToPath(new URL('./xlsx-parquet.mjs', import.meta.url));
const variants = [
  'xlsx:manager',
  'xlsx:manager-level6',
  'xlsx:exceljs-writer',
  'parquet:manager',
  'csv:manager',
  'deflate:fflate',
  'deflate:node-zlib',
];

describe('bench/xlsx-parquet.mjs', () => {
  it('exports with every variant and prints a line for each', { timeout: 180_000 }, async () => {
    const { stdout } = await run(process.execPath, [script, '--quick', '--rows', '2000'], {
      maxBuffer: 1024 * 1024,
    });
    const results = new Map<string, { rows: number; bytes: number }>();
    for (const match of stdout.matchAll(/^ {2}round 1: (\{.*\})$/gm)) {
      const result = JSON.parse(match[1]!) as { variant: string; rows: number; bytes: number };
      results.set(result.variant, result);
    }
    expect([...results.keys()].sort()).toEqual([...variants].sort());
    for (const variant of variants) {
      expect(results.get(variant)).toMatchObject({ rows: 2000 });
      expect(results.get(variant)!.bytes).toBeGreaterThan(0);
      expect(stdout).toMatch(new RegExp(`^${variant}\\s+[\\d,]+\\s`, 'm'));
    }
    expect(stdout).toMatch(/XLSX vs exceljs WorkbookWriter \(rows\/s\)\s+[\d.]+x/);
  });
});
