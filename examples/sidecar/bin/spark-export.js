#!/usr/bin/env node
// The `spark-export` bin. A committed file rather than dist/cli.js itself: npm links a bin at
// `npm ci` only when its file exists, and without the link `npx spark-export` asks the public
// registry for a package of that name. In a clone that was never built it builds first, with
// the build's output on stderr, so that stdout stays the export's.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cli = new URL('../dist/cli.js', import.meta.url);
// What the CLI runs on: its own build and those of the workspace packages it imports.
const built = [
  cli,
  new URL('../../../packages/core/dist/index.js', import.meta.url),
  new URL('../../../packages/fastify-plugin/dist/index.js', import.meta.url),
];

if (!built.every((file) => existsSync(file))) {
  if (!existsSync(new URL('../src/cli.ts', import.meta.url))) {
    process.stderr.write('spark-export: this installation has no dist/ and no sources to build it from\n');
    process.exit(1);
  }
  process.stderr.write('spark-export: building the workspaces first (npm run build)...\n');
  const build = spawnSync('npm', ['run', 'build', '--silent'], {
    cwd: root,
    stdio: ['ignore', 2, 2],
    shell: process.platform === 'win32',
  });
  if (build.status !== 0) {
    process.stderr.write('spark-export: the build failed; run `npm run build` at the repository root\n');
    process.exit(1);
  }
}
await import(cli.href);
