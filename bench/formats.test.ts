import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Keeps bench/formats.mjs from rotting: it must run end to end and report every variant.
// No assertion looks at timings; the benchmark itself reports PASS/FAIL against its targets.

const run = promisify(execFile);
const script = fileURLToPath(new URL('./formats.mjs', import.meta.url));
const variants = [
  'csv:manager',
  'csv:manager-async',
  'csv:baseline',
  'csv:csv-stringify-pipeline',
  'json:manager',
  'json:baseline',
  'ndjson:manager',
  'ndjson:baseline',
  'rows:generate-only',
];

interface ChildResult {
  variant: string;
  rows: number;
  bytes: number;
  ms: number;
  maxRssMB: number;
}

// Needs packages/core/dist (`npm test` builds first); without it the script exits 2 with
// "run npm run build first", which this test then shows.
describe('bench/formats.mjs', () => {
  it('exports with every variant and prints a line for each', { timeout: 120_000 }, async () => {
    const { stdout } = await run(process.execPath, [script, '--quick', '--rows', '20000'], {
      maxBuffer: 1024 * 1024,
    });

    const results = new Map<string, ChildResult>();
    for (const match of stdout.matchAll(/^ {2}round 1: (\{.*\})$/gm)) {
      const result = JSON.parse(match[1]!) as ChildResult;
      results.set(result.variant, result);
    }
    expect([...results.keys()].sort()).toEqual([...variants].sort());
    for (const variant of variants) {
      expect(results.get(variant)).toMatchObject({ rows: 20_000 });
      expect(stdout).toMatch(new RegExp(`^${variant}\\s+[\\d,]+\\s`, 'm'));
    }
    for (const format of ['csv', 'json', 'ndjson']) {
      expect(results.get(`${format}:manager`)!.bytes).toBeGreaterThan(0);
    }
    // The baselines write exactly the manager's bytes, so the ratios compare equal work.
    for (const format of ['csv', 'json', 'ndjson']) {
      expect(results.get(`${format}:baseline`)!.bytes).toBe(results.get(`${format}:manager`)!.bytes);
    }
    expect(results.get('csv:manager-async')!.bytes).toBe(results.get('csv:manager')!.bytes);
    expect(stdout).toMatch(/PASS|FAIL/);
  });
});
