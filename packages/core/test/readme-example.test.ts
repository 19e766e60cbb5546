import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../examples/stream-to-file.js';

const packageDir = fileURLToPath(new URL('..', import.meta.url));

/** The code between the README's example markers, without the fences. */
function readmeExample(readme: string): { file: string; code: string } {
  const match = readme.match(/<!-- example:start (\S+) -->\n```ts\n([\s\S]*?)```\n<!-- example:end -->/);
  if (!match?.[1] || match[2] === undefined)
    throw new Error('the README has no example block between markers');
  return { file: match[1], code: match[2] };
}

describe('README example', () => {
  let directory: string;

  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'spark-export-readme-'));
  });

  afterEach(async () => {
    vi.restoreAllMocks();
    await rm(directory, { recursive: true, force: true });
  });

  it('quotes examples/stream-to-file.ts verbatim', async () => {
    const readme = await readFile(join(packageDir, 'README.md'), 'utf8');
    const { file, code } = readmeExample(readme);

    expect(file).toBe('examples/stream-to-file.ts');
    expect(code).toBe(await readFile(join(packageDir, file), 'utf8'));
  });

  it('runs and writes the CSV file the README describes', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const output = join(directory, 'orders.csv');

    await main(output);

    const csv = await readFile(output, 'utf8');
    expect(csv).toBe('id,Total (EUR)\n1,9.5\n2,19\n3,28.5\n4,38\n5,47.5\n');
    expect(log).toHaveBeenCalledWith(`Wrote 5 rows (${Buffer.byteLength(csv)} bytes) to ${output}`);
  });
});
