// What npm shows for each published package: the links of its sidebar (repository, homepage,
// issues) and search keywords from package.json, and a README whose links work on the npm page.
// There a relative link resolves against the registry, not the repository: a README may only
// link to files its tarball holds (as `npm pack` lists them), or to the repository by absolute
// URL (which must name a file or folder that exists here).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPOSITORY = 'https://github.com/spark-export/spark-export';
const PUBLISHED = [
  'packages/core',
  'packages/bullmq',
  'packages/s3',
  'packages/express-adapter',
  'packages/koa-adapter',
  'packages/fastify-plugin',
];

interface Manifest {
  name: string;
  private?: boolean;
  keywords?: string[];
  homepage?: string;
  bugs?: { url?: string };
  repository?: { type?: string; url?: string; directory?: string };
}

const manifest = (dir: string): Manifest =>
  JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as Manifest;

/** The link targets of a Markdown text, outside code: inline links, images, definitions, HTML. */
function markdownLinks(text: string): string[] {
  const prose = text
    .replace(/^([ \t]*)(`{3,}|~{3,})[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, '')
    .replace(/`[^`\n]*`/g, '');
  const links: string[] = [];
  for (const match of prose.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g))
    links.push(match[1]!);
  for (const match of prose.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)) links.push(match[1]!);
  for (const match of prose.matchAll(/<(?:a|img)\s[^>]*?(?:href|src)="([^"]+)"/g)) links.push(match[1]!);
  return links;
}

/** The files `npm pack` puts in the package's tarball. */
function tarballFiles(dir: string): string[] {
  const output = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: join(ROOT, dir),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return (JSON.parse(output) as { files: { path: string }[] }[])[0]!.files.map((file) => file.path);
}

/** Why a README link would be broken on the npm page, or undefined when it works there. */
function brokenOnNpm(link: string, files: string[]): string | undefined {
  if (link.startsWith('#')) return undefined;
  if (link.startsWith(`${REPOSITORY}/`)) {
    const path = /^https:\/\/github\.com\/spark-export\/spark-export\/(?:blob|tree)\/main\/([^#?]+)/.exec(
      link,
    )?.[1];
    if (path === undefined)
      return /^https:\/\/github\.com\/spark-export\/spark-export\/issues\b/.test(link)
        ? undefined
        : 'a repository URL other than blob/main/... or tree/main/...';
    return existsSync(join(ROOT, decodeURIComponent(path))) ? undefined : `no ${path} in the repository`;
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(link)) return undefined;
  const target = normalize(decodeURIComponent(link.replace(/[#?].*$/, ''))).replace(/\/$/, '');
  if (files.includes(target) || files.some((file) => file.startsWith(`${target}/`))) return undefined;
  return `a relative link to ${target}, which is not in the tarball (${files.join(', ')}): link to ${REPOSITORY}/blob/main/...`;
}

describe.each(PUBLISHED)('the published package in %s', (dir) => {
  const pkg = manifest(dir);

  it('names its repository folder, homepage, issue tracker and keywords', () => {
    expect(pkg.private).not.toBe(true);
    expect(pkg.repository).toEqual({ type: 'git', url: `git+${REPOSITORY}.git`, directory: dir });
    expect(pkg.homepage).toBe(`${REPOSITORY}/tree/main/${dir}#readme`);
    expect(pkg.bugs).toEqual({ url: `${REPOSITORY}/issues` });
    expect(pkg.keywords).toEqual(expect.arrayContaining(['spark-export']));
    expect(new Set(pkg.keywords).size).toBe(pkg.keywords!.length);
  });

  it('has a README whose links work on the npm page', () => {
    const files = tarballFiles(dir);
    expect(files).toContain('README.md');
    const readme = readFileSync(join(ROOT, dir, 'README.md'), 'utf8');
    const links = markdownLinks(readme);
    expect(links.length).toBeGreaterThan(0);
    const broken = links.flatMap((link) => {
      const reason = brokenOnNpm(link, files);
      return reason ? [`${link}: ${reason}`] : [];
    });
    expect(broken).toEqual([]);
  });
});

describe('the README link check', () => {
  const files = ['README.md', 'package.json', 'dist/index.js'];

  it('refuses relative links out of the tarball and repository URLs to missing files', () => {
    const links = markdownLinks(
      [
        'See [the docs](../../docs/adapters.md), ![a logo](logo.png) and [dist](dist/index.js).',
        '[ok](https://github.com/spark-export/spark-export/blob/main/docs/adapters.md#options)',
        '[gone](https://github.com/spark-export/spark-export/blob/main/docs/nowhere.md)',
        '```md\n[in code](../ignored.md)\n```',
        '[ref]: ./README.md',
      ].join('\n'),
    );
    expect(links).toEqual([
      '../../docs/adapters.md',
      'logo.png',
      'dist/index.js',
      'https://github.com/spark-export/spark-export/blob/main/docs/adapters.md#options',
      'https://github.com/spark-export/spark-export/blob/main/docs/nowhere.md',
      './README.md',
    ]);
    expect(links.map((link) => brokenOnNpm(link, files) === undefined)).toEqual([
      false,
      false,
      true,
      true,
      false,
      true,
    ]);
  });

  it('every package that is not private is checked here', () => {
    const workspaces = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] }
    ).workspaces;
    expect(workspaces.filter((dir) => manifest(dir).private !== true).sort()).toEqual([...PUBLISHED].sort());
  });
});
