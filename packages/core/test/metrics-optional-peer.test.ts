// prom-client is an optional peer dependency: the built package (ESM and CJS) must load and
// export without it when metrics are off, and name it when metrics are asked for. Each case runs
// the built dist in a child process from a temp project whose node_modules holds the core and
// its dependencies but no prom-client (`npm test` builds first).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const CORE = fileURLToPath(new URL('..', import.meta.url));
const ROOT = join(CORE, '..', '..');

/** A temp project with `@spark-export/core` (the built dist) and its dependencies, `prom-client` only if asked. */
async function project(withPromClient: boolean): Promise<string> {
  if (!existsSync(join(CORE, 'dist', 'index.js')) || !existsSync(join(CORE, 'dist', 'index.cjs'))) {
    throw new Error('packages/core/dist is missing: run `npm run build` at the repository root first');
  }
  const dir = await mkdtemp(join(tmpdir(), 'spark-export-peer-'));
  const target = join(dir, 'node_modules', '@spark-export', 'core');
  await mkdir(target, { recursive: true });
  // Copied, not linked: a link would resolve to packages/core, whose parents hold prom-client.
  await cp(join(CORE, 'dist'), join(target, 'dist'), { recursive: true });
  await cp(join(CORE, 'package.json'), join(target, 'package.json'));
  const manifest = JSON.parse(await readFile(join(CORE, 'package.json'), 'utf8')) as {
    dependencies: Record<string, string>;
  };
  const names = [...Object.keys(manifest.dependencies), ...(withPromClient ? ['prom-client'] : [])];
  for (const name of names) {
    // The core's own copy first (content-disposition 1.x), else the hoisted one.
    const source = [join(CORE, 'node_modules', name), join(ROOT, 'node_modules', name)].find((path) =>
      existsSync(path),
    );
    if (!source) throw new Error(`${name} is not installed`);
    await mkdir(dirname(join(dir, 'node_modules', name)), { recursive: true });
    await symlink(source, join(dir, 'node_modules', name), 'dir');
  }
  await writeFile(join(dir, 'package.json'), '{"name":"peer-test","private":true}');
  return dir;
}

/** Runs `code` as an ES module (`.mjs`) or CommonJS (`.cjs`) in `dir`; resolves with stdout and stderr. */
async function node(dir: string, file: string, code: string): Promise<{ stdout: string; stderr: string }> {
  await writeFile(join(dir, file), code);
  return run(process.execPath, [join(dir, file)], { cwd: dir, env: { PATH: process.env.PATH ?? '' } });
}

const USE_WITHOUT_METRICS = `
  const manager = new ExportManager({ metrics: false, datasets: { a: { source: () => [{ x: 1 }, { x: 2 }] } } });
  const { Writable } = await import('node:stream');
  let text = '';
  await manager.stream({ dataset: 'a', format: 'csv' }, new Writable({ write(chunk, _e, done) { text += chunk; done(); } }));
  const handler = createExportHandler(manager, { metrics: true });
  const metrics = await handler({ method: 'GET', path: '/export/metrics', query: new URLSearchParams(), headers: {}, signal: new AbortController().signal });
  console.log(JSON.stringify({ text, metrics: metrics.status }));
`;

const ASK_FOR_METRICS = `
  const failures = [];
  for (const attempt of [() => new ExportManager(), () => new ExportManager({ metrics: {} }), () => registerExportMetrics()]) {
    try { attempt(); failures.push('no error'); } catch (error) { failures.push(error.message); }
  }
  console.log(JSON.stringify(failures));
`;

describe('prom-client as an optional peer dependency (built package)', () => {
  let without: string;
  let withPromClient: string;

  beforeAll(async () => {
    without = await project(false);
    withPromClient = await project(true);
  });
  afterAll(async () => {
    for (const dir of [without, withPromClient]) if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('cannot resolve prom-client in the temp project', async () => {
    await expect(node(without, 'probe.cjs', "require.resolve('prom-client');")).rejects.toThrow(
      /Cannot find module 'prom-client'/,
    );
  });

  for (const [kind, file, load] of [
    ['ESM', 'app.mjs', "import { createExportHandler, ExportManager } from '@spark-export/core';"],
    ['CJS', 'app.cjs', "const { createExportHandler, ExportManager } = require('@spark-export/core');"],
  ] as const) {
    it(`loads and exports without prom-client when metrics are off (${kind})`, async () => {
      const body = kind === 'ESM' ? USE_WITHOUT_METRICS : `(async () => {${USE_WITHOUT_METRICS}})();`;
      const { stdout } = await node(without, file, `${load}\n${body}`);
      expect(JSON.parse(stdout)).toEqual({ text: 'x\n1\n2\n', metrics: 404 });
    });
  }

  for (const [kind, file, load] of [
    ['ESM', 'ask.mjs', "import { ExportManager, registerExportMetrics } from '@spark-export/core';"],
    ['CJS', 'ask.cjs', "const { ExportManager, registerExportMetrics } = require('@spark-export/core');"],
  ] as const) {
    it(`names prom-client when metrics are asked for and it is missing (${kind})`, async () => {
      const { stdout } = await node(without, file, `${load}\n${ASK_FOR_METRICS}`);
      const failures = JSON.parse(stdout) as string[];
      expect(failures).toHaveLength(3);
      for (const message of failures) {
        expect(message).toMatch(/prom-client/);
        expect(message).toMatch(/metrics: false/);
      }
    });

    it(`registers metrics with prom-client installed (${kind})`, async () => {
      const code = `${load}
        const manager = new ExportManager();
        const text = await manager.metrics.registry.metrics();
        console.log(JSON.stringify({ limit: /^export_concurrency_limit 5$/m.test(text) }));`;
      const { stdout } = await node(
        withPromClient,
        file,
        kind === 'ESM' ? code : code.replace(/^(.*\n)([\s\S]*)$/, '$1(async () => {$2})();'),
      );
      expect(JSON.parse(stdout)).toEqual({ limit: true });
    });
  }
});
