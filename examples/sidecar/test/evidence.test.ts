// `npm run evidence` against the built dist: a sidecar on a free port with the demo data, more
// concurrent jobs than the limit, and the four evidence files with every check passing.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, removeDir, requireBuild, run, SIDECAR_DIR, tempDir } from './helpers.js';

describe('npm run evidence', () => {
  let dir: string;
  beforeAll(() => {
    requireBuild();
    dir = tempDir('spark-evidence-test-');
  });
  afterAll(() => removeDir(dir));

  it('writes metrics, export metrics, the exports listing and passing assertions, and exits 0', async () => {
    const out = join(dir, 'evidence', 'export');
    const exportDir = join(dir, 'exports');
    const result = await run(
      'npm',
      ['run', '--silent', 'evidence', '--', '--out', out, '--export-dir', exportDir],
      {
        cwd: SIDECAR_DIR,
        env: cleanEnv({ EXPORT_MAX_CONCURRENT: '2' }),
      },
    );
    expect(result.stderr).toContain(`PASS, written to ${out}`);
    expect(result.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'assert.txt',
      'export_metrics.txt',
      'exports_ls.txt',
      'metrics.txt',
    ]);

    const asserts = readFileSync(join(out, 'assert.txt'), 'utf8').trim().split('\n');
    const verdicts = asserts.filter((line) => /^(PASS|FAIL) /.test(line));
    expect(verdicts.length).toBeGreaterThanOrEqual(8);
    expect(verdicts.filter((line) => line.startsWith('FAIL'))).toEqual([]);
    expect(asserts.at(-1)).toBe(`RESULT: PASS (${verdicts.length} of ${verdicts.length} passed)`);
    expect(asserts).toContain(
      'PASS  load beyond the limit: 5 jobs sent at once, 2 accepted (202), 3 rejected (429), limit 2',
    );
    expect(asserts).toContain(
      'PASS  jobs started equals accepted requests: export_jobs_started_total 2, 202 responses 2',
    );
    expect(asserts).toContain(
      'PASS  rejections equal 429s seen: export_jobs_rejected_total 3, 429 responses 3',
    );

    const metrics = readFileSync(join(out, 'metrics.txt'), 'utf8');
    expect(metrics).toMatch(/^process_cpu_seconds_total /m);
    const exportMetrics = readFileSync(join(out, 'export_metrics.txt'), 'utf8').trim().split('\n');
    expect(exportMetrics.every((line) => /^(# (HELP|TYPE) )?export_/.test(line))).toBe(true);
    expect(exportMetrics).toContain('export_jobs_rejected_total{reason="concurrency_limit"} 3');

    // The listing matches the exports directory, which --export-dir kept.
    const listing = readFileSync(join(out, 'exports_ls.txt'), 'utf8')
      .split('\n')
      .filter((line) => line.trim() && !line.startsWith('#'))
      .map((line) => line.trim().split(/\s+/));
    expect(listing.map((fields) => fields[2]).sort()).toEqual(readdirSync(exportDir).sort());
    expect(listing).toHaveLength(4); // two files, two manifests
    for (const [bytes, sha256, name] of listing) {
      if (!name!.endsWith('.csv')) continue;
      const manifest = JSON.parse(readFileSync(join(exportDir, name!.replace(/\.csv$/, '.json')), 'utf8'));
      expect(manifest.file).toMatchObject({ name, sha256, bytes: Number(bytes) });
    }
  });

  it('refuses a load that would not exceed the limit', async () => {
    const result = await run(
      'node',
      [join(SIDECAR_DIR, 'dist', 'evidence.js'), '--jobs', '5', '--out', join(dir, 'refused')],
      {
        cwd: dir,
        env: cleanEnv({ EXPORT_MAX_CONCURRENT: '5' }),
      },
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--jobs must be an integer above the limit (5)');
    expect(existsSync(join(dir, 'refused'))).toBe(false);
  });
});
