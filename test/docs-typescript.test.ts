// Every ```ts block of the READMEs and docs/ compiles, as a reader would paste it into a
// TypeScript project of their own: each block becomes a module of a temporary project with the
// repository's compiler options and @spark-export/* mapped to the package sources (as the root
// tsconfig.json does), and tsc (the compiler API) type-checks them all at once.
//
// What a block names but does not define (your database client `db`, your auth, a `manager`
// built in an earlier block) comes from PRELUDE below: add a stand-in there rather than a
// fragment marker. A block that is deliberately not code on its own is marked with a
// `<!-- ts-fragment -->` line right above it (or a ```ts fragment info string) and skipped.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FRAGMENT_MARKER = '<!-- ts-fragment -->';

/** Stand-ins for what the documented code takes from the reader's own application. */
const PRELUDE = `
import type { DatasetDefinition, ExportHttpRequest, ExportManager, ExportRoutesHandler, Job } from '@spark-export/core';
import type { FastifyPluginAsync } from 'fastify';
import type { Middleware } from 'koa';
import type { Handler } from 'express';

declare global {
  /** Your database client: a cursor is an async iterable of rows. */
  const db: {
    cursor(sql: string, options?: { signal?: AbortSignal }): AsyncIterable<Record<string, unknown>>;
    cursor(sql: string, params: unknown[], options?: { signal?: AbortSignal }): AsyncIterable<Record<string, unknown>>;
  };
  /** A dataset defined elsewhere, and the manager and handler built in an earlier block. */
  const orders: DatasetDefinition;
  const manager: ExportManager;
  const handler: ExportRoutesHandler;
  const job: Job;
  /** Your signed-in user and your secrets. */
  const user: { id: string };
  const secret: string;
  /** Your logger (pino-like). */
  const logger: { error(details: object, message: string): void };
  /** Your auth. */
  function userIdFromCookie(cookie: ExportHttpRequest['headers'][string]): string | undefined;
  function userIdFromSession(cookie: ExportHttpRequest['headers'][string]): string | undefined;
  const passport: { session(): Handler };
  const auth: Middleware;
  /** @fastify/jwt: the plugin, and what it adds to Fastify's request. */
  const fastifyJwt: FastifyPluginAsync<{ secret: string }>;
}

declare module 'fastify' {
  interface FastifyRequest {
    jwtVerify(): Promise<void>;
    user: { sub: string };
  }
}
`;

interface Block {
  /** Repository-relative path of the Markdown file. */
  file: string;
  /** 1-based line of the block's first code line. */
  line: number;
  code: string;
  fragment: boolean;
}

/** The Markdown files whose code a reader sees: READMEs and docs/, as git tracks them. */
function markdownFiles(): string[] {
  return execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '*.md'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((file) => /(^|\/)README\.md$/.test(file) || file.startsWith('docs/'));
}

/** The ```ts / ```typescript blocks of one Markdown text. */
function typescriptBlocks(file: string, text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)\b(.*)$/.exec(lines[i]!);
    if (!open) {
      // Skip other fenced blocks whole, so a ```ts inside a ```md block is not taken for code.
      const other = /^\s*(`{3,}|~{3,})/.exec(lines[i]!);
      if (other) {
        const fence = other[1]!;
        for (i++; i < lines.length && !lines[i]!.trim().startsWith(fence); i++);
      }
      continue;
    }
    const [, indent, fence, , info] = open as unknown as [string, string, string, string, string];
    const code: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !lines[j]!.trim().startsWith(fence); j++)
      code.push(lines[j]!.slice(indent.length));
    let previous = i - 1;
    while (previous >= 0 && lines[previous]!.trim() === '') previous--;
    const fragment = /\bfragment\b/.test(info) || lines[previous]?.trim() === FRAGMENT_MARKER;
    blocks.push({ file, line: i + 2, code: `${code.join('\n')}\n`, fragment });
    i = j;
  }
  return blocks;
}

const blocks = markdownFiles().flatMap((file) =>
  typescriptBlocks(file, readFileSync(join(ROOT, file), 'utf8')),
);

// Inside the repository (in node_modules, which git and Biome ignore) so that the documented
// imports of express, koa, fastify and prom-client resolve as in a reader's project.
const projectDir = join(ROOT, 'node_modules', '.cache', `docs-typescript-${process.pid}`);

afterAll(() => {
  rmSync(projectDir, { recursive: true, force: true });
});

/** Type-checks the blocks as modules of one project; returns the diagnostics per block. */
function compile(selected: Block[]): Map<Block, string[]> {
  rmSync(projectDir, { recursive: true, force: true });
  mkdirSync(projectDir, { recursive: true });
  writeFileSync(join(projectDir, 'package.json'), JSON.stringify({ type: 'module' }));
  writeFileSync(join(projectDir, 'prelude.d.ts'), PRELUDE);
  const fileOf = new Map<string, Block>();
  selected.forEach((block, index) => {
    const name = join(projectDir, `block-${index}.ts`);
    // `export {}` makes every block a module (top-level await, no clash with the prelude's names).
    writeFileSync(name, `${block.code}export {};\n`);
    fileOf.set(name, block);
  });

  const rootConfig = ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(
    { ...rootConfig.config, include: [], files: [] },
    ts.sys,
    ROOT,
  );
  const options: ts.CompilerOptions = { ...parsed.options, noEmit: true, noUnusedLocals: false };
  const program = ts.createProgram(
    [join(projectDir, 'prelude.d.ts'), join(ROOT, 'packages/core/src/globals.d.ts'), ...fileOf.keys()],
    options,
  );
  const result = new Map<Block, string[]>(selected.map((block) => [block, []]));
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    const block = diagnostic.file && fileOf.get(diagnostic.file.fileName);
    if (!block || !diagnostic.file || diagnostic.start === undefined) {
      const where = diagnostic.file ? relative(ROOT, diagnostic.file.fileName) : 'the project';
      throw new Error(`tsc: ${where}: ${message}`);
    }
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    result.get(block)!.push(`${block.file}:${block.line + line}: TS${diagnostic.code}: ${message}`);
  }
  return result;
}

describe('TypeScript code blocks of the READMEs and docs', () => {
  it('finds the blocks, and marks few of them as fragments', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    expect(new Set(blocks.map((block) => block.file))).toContain('README.md');
    expect(blocks.filter((block) => block.fragment).length).toBeLessThanOrEqual(2);
  });

  it('compile with tsc', () => {
    const diagnostics = compile(blocks.filter((block) => !block.fragment));
    expect([...diagnostics.values()].flat()).toEqual([]);
  }, 120_000);

  it('skips only blocks marked as fragments, and no ts block inside another fence', () => {
    const found = typescriptBlocks(
      'sample.md',
      [
        '```ts',
        'const a = 1;',
        '```',
        '<!-- ts-fragment -->',
        '',
        '```ts',
        'partial(',
        '```',
        '```ts fragment',
        'also partial(',
        '```',
        '````md',
        '```ts',
        'quoted(',
        '```',
        '````',
      ].join('\n'),
    );
    expect(found.map(({ line, fragment }) => ({ line, fragment }))).toEqual([
      { line: 2, fragment: false },
      { line: 7, fragment: true },
      { line: 10, fragment: true },
    ]);
  });

  it('reports an error at its Markdown line (the check can fail)', () => {
    const [broken] = typescriptBlocks(
      'broken.md',
      "# t\n\n```ts\nimport { ExportManager } from '@spark-export/core';\nnew ExportManager({ maxConcurrent: 'five' });\n```\n",
    );
    const diagnostics = compile([broken!]).get(broken!)!;
    expect(diagnostics).toHaveLength(1);
    expect(diagnostics[0]).toMatch(/^broken\.md:5: TS2322: /);
  }, 120_000);
});
