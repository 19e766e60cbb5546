// The Docker image without a Docker engine: the Dockerfile's build stage runs
// docker/build-artifact.sh, and so does this test, on a copy of what `COPY . .` sends (the files
// git tracks or would track, plus the dist folders the build stage's `npm run build` makes). The
// tree is then started exactly as the image's CMD, in its WORKDIR, with its ENV (only HOST and
// PORT moved to a free loopback port), and probed with the image's own HEALTHCHECK command.
// The production install compiles better-sqlite3 when no prebuilt binary is available: slow.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { cleanEnv, removeDir, requireBuild, run, SIDECAR_DIR, tempDir, waitForJob } from './helpers.js';
import { freePort, pollUntil, postJob } from './programs.js';

const REPO_ROOT = join(SIDECAR_DIR, '..', '..');
const DOCKERFILE = readFileSync(join(SIDECAR_DIR, 'Dockerfile'), 'utf8');
/** The workspaces whose dist/ the runtime stage ships. */
const RUNTIME_WORKSPACES = [
  'packages/core',
  'packages/fastify-plugin',
  'packages/bullmq',
  'packages/s3',
  'examples/sidecar',
];

interface Instruction {
  keyword: string;
  args: string;
  stage: number;
}

/** Dockerfile instructions (continuation lines joined, comments dropped), with their stage. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ');
  const result: Instruction[] = [];
  let stage = -1;
  for (const line of joined.split('\n')) {
    const match = /^\s*([A-Z]+)\s+(.*\S)\s*$/.exec(line);
    if (!match) continue;
    if (match[1] === 'FROM') stage++;
    result.push({ keyword: match[1]!, args: match[2]!, stage });
  }
  return result;
}

const steps = instructions(DOCKERFILE);
const runtimeStage = Math.max(...steps.map((step) => step.stage));
const runtime = steps.filter((step) => step.stage === runtimeStage);
const one = (keyword: string) => {
  const found = runtime.filter((step) => step.keyword === keyword);
  expect(found, `exactly one ${keyword} in the runtime stage`).toHaveLength(1);
  return found[0]!.args;
};
/** `ENV A=1 B=2` lines of the runtime stage (values without spaces or quotes). */
const imageEnv = (): Record<string, string> =>
  Object.fromEntries(
    runtime
      .filter((step) => step.keyword === 'ENV')
      .flatMap((step) => step.args.split(/\s+/).map((pair) => pair.split('=') as [string, string])),
  );
/** The JSON (exec) form of HEALTHCHECK ... CMD [...] or CMD [...]. */
const execForm = (args: string): string[] => JSON.parse(args.slice(args.indexOf('['))) as string[];

describe('the Dockerfile', () => {
  it('builds on node:24-slim in two stages and runs as a non-root user with the documented env', () => {
    const froms = steps.filter((step) => step.keyword === 'FROM').map((step) => step.args);
    expect(froms).toEqual(['node:24-slim AS build', 'node:24-slim AS runtime']);
    const build = steps.filter((step) => step.stage === 0 && step.keyword === 'RUN').map((step) => step.args);
    expect(build).toContain('npm ci --no-audit --no-fund');
    expect(build).toContain('sh examples/sidecar/docker/build-artifact.sh /src /out');
    expect(one('COPY')).toBe('--from=build /out/ /app/');
    expect(one('WORKDIR')).toBe('/app');
    expect(one('USER')).toBe('node');
    expect(imageEnv()).toMatchObject({ HOST: '0.0.0.0', PORT: '4001' });
    expect(one('EXPOSE')).toBe('4001');
    // The default EXPORT_DIR, ./exports, is the volume.
    expect(one('VOLUME')).toBe('/app/exports');
    expect(execForm(one('HEALTHCHECK'))[0]).toBe('node');
    expect(execForm(one('CMD'))).toEqual(['node', 'examples/sidecar/dist/server.js']);
  });

  it('has a .dockerignore at the repository root that keeps local builds and data out', () => {
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const pattern of ['**/node_modules', '**/dist', '**/exports', 'evidence', '.git']) {
      expect(ignored).toContain(pattern);
    }
  });

  it('has a compose file whose services mount files that exist', () => {
    const compose = parse(readFileSync(join(SIDECAR_DIR, 'docker-compose.yml'), 'utf8')) as {
      services: Record<
        string,
        { build?: { context: string; dockerfile: string }; volumes?: string[]; restart?: string }
      >;
    };
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'nginx', 'prometheus', 'sidecar']);
    const { sidecar, nginx } = compose.services;
    expect(sidecar!.restart).toBe('unless-stopped');
    expect(sidecar!.volumes).toContain('./exports:/app/exports');
    expect(nginx!.volumes).toContain('./exports:/app/exports:ro');
    const context = join(SIDECAR_DIR, sidecar!.build!.context);
    expect(existsSync(join(context, sidecar!.build!.dockerfile))).toBe(true);
    for (const service of Object.values(compose.services)) {
      for (const volume of service.volumes ?? []) {
        const host = volume.split(':')[0]!;
        if (host.startsWith('./') && host !== './exports')
          expect(existsSync(join(SIDECAR_DIR, host)), host).toBe(true);
      }
    }
    // compose points the shipped upstream.conf at the sidecar service with sed: the same
    // expression, run here, must rewrite its one server line.
    const command = (compose.services.nginx as { command: string[] }).command.join(' ');
    const expression = /sed '([^']+)'/.exec(command)![1]!;
    const upstreamFile = join(SIDECAR_DIR, 'nginx', 'upstream.conf');
    const rewritten = execFileSync('sed', [expression, upstreamFile], { encoding: 'utf8' });
    expect(rewritten.match(/^\s*server .*;$/gm)).toEqual(['    server sidecar:4001;']);
    expect(readFileSync(upstreamFile, 'utf8').replace('server 127.0.0.1:4001;', 'server sidecar:4001;')).toBe(
      rewritten,
    );
  });
});

describe('the image contents, built and started without Docker', () => {
  let dir: string;
  let out: string;
  let server: ChildProcess | undefined;
  let origin: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    requireBuild();
    for (const workspace of RUNTIME_WORKSPACES) {
      if (!existsSync(join(REPO_ROOT, workspace, 'dist'))) {
        throw new Error(`${workspace}/dist is missing: run \`npm run build\` at the repository root first`);
      }
    }
    dir = tempDir('spark-docker-');
    const context = join(dir, 'src');
    out = join(dir, 'app');
    // What `COPY . .` sends: the repository's files (.dockerignore keeps out what git ignores
    // anyway), then the dist folders that the build stage's `npm run build` would make.
    const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    })
      .split('\0')
      .filter((file) => file !== '' && existsSync(join(REPO_ROOT, file)));
    for (const file of files) {
      mkdirSync(dirname(join(context, file)), { recursive: true });
      cpSync(join(REPO_ROOT, file), join(context, file));
    }
    for (const workspace of RUNTIME_WORKSPACES) {
      cpSync(join(REPO_ROOT, workspace, 'dist'), join(context, workspace, 'dist'), { recursive: true });
    }
    const built = await run(
      'sh',
      [join(context, 'examples/sidecar/docker/build-artifact.sh'), context, out],
      {
        cwd: context,
        env: cleanEnv(),
      },
    );
    if (built.code !== 0)
      throw new Error(`build-artifact.sh failed (${built.code}):\n${built.stdout}\n${built.stderr}`);
  }, 420_000);

  afterAll(async () => {
    if (server && server.exitCode === null) {
      server.kill('SIGKILL');
      await new Promise((resolve) => server!.once('exit', resolve));
    }
    if (dir) removeDir(dir);
  });

  it('holds the built workspaces and production dependencies only', () => {
    expect(readdirSync(out).sort()).toEqual([
      'data',
      'examples',
      'node_modules',
      'package-lock.json',
      'package.json',
      'packages',
    ]);
    expect(readdirSync(join(out, 'packages')).sort()).toEqual(['bullmq', 'core', 'fastify-plugin', 's3']);
    for (const workspace of RUNTIME_WORKSPACES) {
      // node_modules only where npm nests a second version of a dependency.
      const entries = readdirSync(join(out, workspace)).filter((entry) => entry !== 'node_modules');
      expect(entries.sort()).toEqual(
        workspace === 'examples/sidecar'
          ? ['bin', 'data', 'dist', 'package.json', 'ui']
          : ['dist', 'package.json'],
      );
    }
    // The built-in demo's data directory is the one the image makes writable (/app/data).
    expect(lstatSync(join(out, 'examples/sidecar/data')).isSymbolicLink()).toBe(true);
    expect(realpathSync(join(out, 'examples/sidecar/data'))).toBe(realpathSync(join(out, 'data')));
    expect(DOCKERFILE).toMatch(/chown node:node [^\n]*\/app\/data/);
    // The bin is linked, so `npx spark-export` works inside the image.
    expect(realpathSync(join(out, 'node_modules/.bin/spark-export'))).toBe(
      realpathSync(join(out, 'examples/sidecar/bin/spark-export.js')),
    );
    // Workspace packages are links to the built folders.
    for (const [name, workspace] of [
      ['core', 'packages/core'],
      ['fastify', 'packages/fastify-plugin'],
      ['bullmq', 'packages/bullmq'],
      ['s3', 'packages/s3'],
    ] as const) {
      const link = join(out, 'node_modules', '@spark-export', name);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(realpathSync(link)).toBe(realpathSync(join(out, workspace)));
    }
    for (const runtimeDependency of [
      'better-sqlite3',
      'fastify',
      'pg',
      'pino',
      'prom-client',
      'stream-json',
    ]) {
      expect(
        existsSync(join(out, 'node_modules', runtimeDependency, 'package.json')),
        runtimeDependency,
      ).toBe(true);
    }
    for (const devDependency of [
      'vitest',
      'typescript',
      'tsup',
      '@biomejs',
      '@types',
      'express',
      'koa',
      'yaml',
    ]) {
      expect(existsSync(join(out, 'node_modules', devDependency)), devDependency).toBe(false);
    }
    expect(
      existsSync(join(out, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')),
    ).toBe(true);
  });

  it('starts as the image CMD does, answers /export/status and its HEALTHCHECK, exports, and drains', async () => {
    const port = await freePort();
    // The image's ENV, with only the listen address moved to a free loopback port.
    env = cleanEnv({ ...imageEnv(), HOST: '127.0.0.1', PORT: String(port) });
    const [command, ...args] = execForm(one('CMD'));
    expect(command).toBe('node');
    server = spawn(process.execPath, args, { cwd: out, env, stdio: ['ignore', 'ignore', 'pipe'] });
    origin = `http://127.0.0.1:${port}`;
    const status = await pollUntil(
      'the built sidecar to answer /export/status',
      async () => {
        if (server!.exitCode !== null) throw new Error(`the sidecar exited ${server!.exitCode}`);
        const response = await fetch(`${origin}/export/status`);
        return response.ok ? ((await response.json()) as { status: string; limit: number }) : undefined;
      },
      { attempts: 600, intervalMs: 100 },
    );
    expect(status).toMatchObject({ status: 'ok', limit: 5 });

    const [healthCommand, ...healthArgs] = execForm(one('HEALTHCHECK'));
    expect(healthCommand).toBe('node');
    const health = await run(process.execPath, healthArgs, { cwd: out, env });
    expect(health.code).toBe(0);

    // The demo database (better-sqlite3, compiled for this tree) and the exports volume work.
    const created = await postJob(origin, { dataset: 'customers', format: 'csv' });
    expect(created.status).toBe(202);
    const job = (await waitForJob(`${origin}${created.location}`)) as unknown as {
      status: string;
      file: { name: string };
    };
    expect(job.status).toBe('succeeded');
    expect(existsSync(join(out, 'exports', job.file.name))).toBe(true);
    expect(existsSync(join(out, 'data', 'demo.sqlite'))).toBe(true);

    const exited = new Promise<number | null>((resolve) => server!.once('exit', (code) => resolve(code)));
    server.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Down: the HEALTHCHECK command now fails.
    expect((await run(process.execPath, healthArgs, { cwd: out, env })).code).toBe(1);
  });
});
