import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Keeps bench/peers.mjs from rotting: every variant must run end to end, and the variants that
// promise the library's bytes must write them. No assertion looks at timings.

const run = promisify(execFile);
const script = fileURLToPath(new URL('./peers.mjs', import.meta.url));

interface ChildResult {
  variant: string;
  rows: number;
  bytes: number;
  p99Ms?: number;
}

// Needs packages/core/dist (`npm test` builds first).
describe('bench/peers.mjs', () => {
  it('runs every variant and reports the targets', { timeout: 240_000 }, async () => {
    const { stdout } = await run(process.execPath, [script, '--quick', '--rows', '3000'], {
      maxBuffer: 1024 * 1024,
    });
    const results = new Map<string, ChildResult>();
    for (const match of stdout.matchAll(/^ {2}round 1: (\{.*\})$/gm)) {
      const result = JSON.parse(match[1]!) as ChildResult;
      results.set(result.variant, result);
    }
    expect(results.size).toBe(20);
    const bytes = (variant: string) => results.get(variant)!.bytes;
    // The hand-written baselines write exactly the library's bytes: the ratios compare equal work.
    expect(bytes('csv:hand-async')).toBe(bytes('csv:spark-async'));
    expect(bytes('csv:hand-sync')).toBe(bytes('csv:spark-sync'));
    expect(bytes('csv:spark-sync')).toBe(bytes('csv:spark-async'));
    expect(bytes('ndjson:hand-row')).toBe(bytes('ndjson:spark'));
    expect(bytes('ndjson:fast-json-stringify')).toBe(bytes('ndjson:spark'));
    expect(bytes('ndjson:spark-no-columns')).toBe(bytes('ndjson:spark'));
    expect(bytes('json:hand-batch')).toBe(bytes('json:spark'));
    expect(bytes('eventloop:hand')).toBe(bytes('eventloop:spark'));
    // A quick run may end before the delay histogram's first 10 ms sample: a number, maybe 0.
    expect(Number.isFinite(results.get('eventloop:spark')!.p99Ms)).toBe(true);
    for (const target of ['CSV async vs hand-written', 'event-loop p99', 'gzip CSV']) {
      expect(stdout).toMatch(new RegExp(`^${target}.*(PASS|FAIL)$`, 'm'));
    }
  });
});
