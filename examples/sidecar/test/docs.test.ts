// The docs against the code they describe: the environment tables are generated from
// src/env.ts (UPDATE_DOCS=1 rewrites them), the names and versions they quote exist, and the
// files they point to are there.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_FILE } from '../src/config.js';
import { ENV_VARIABLES, parseEnv } from '../src/env.js';
import { SIDECAR_DIR } from './helpers.js';

const ROOT = resolve(SIDECAR_DIR, '..', '..');
const START = '<!-- env table: generated from examples/sidecar/src/env.ts, see docs.test.ts -->';
const END = '<!-- end of env table -->';
const ENV_TABLE_FILES = ['docs/sidecar.md', 'docs/operations.md', 'examples/sidecar/README.md'];

/** The Markdown table of ENV_VARIABLES, padded as Prettier pads tables. */
export function envTable(): string {
  const rows = [
    ['variable', 'default', 'meaning'],
    ...ENV_VARIABLES.map((variable) => [`\`${variable.name}\``, variable.default, variable.meaning]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(rows[0]!), line(widths.map((width) => '-'.repeat(width))), ...rows.slice(1).map(line)].join(
    '\n',
  );
}

const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

describe('the environment tables', () => {
  it.each(ENV_TABLE_FILES)('%s holds the table generated from env.ts', (file) => {
    const text = read(file);
    const start = text.indexOf(START);
    const end = text.indexOf(END);
    expect(start, `${file} has the env table markers`).toBeGreaterThanOrEqual(0);
    expect(end).toBeGreaterThan(start);
    const current = text.slice(start + START.length, end);
    // Blank lines around the table: GFM would read the closing comment as one more row.
    const expected = `\n\n${envTable()}\n\n`;
    if (process.env.UPDATE_DOCS && current !== expected) {
      writeFileSync(join(ROOT, file), text.slice(0, start + START.length) + expected + text.slice(end));
      return;
    }
    expect(current).toBe(expected);
  });

  it('lists every variable parseEnv reads, with the default it applies', () => {
    const source = readFileSync(join(SIDECAR_DIR, 'src', 'env.ts'), 'utf8');
    const body = source.slice(source.indexOf('export function parseEnv'));
    const names = new Set(
      [...body.matchAll(/(?:get|integer|optionalInteger|number)\('([A-Z0-9_]+)'/g)].map((m) => m[1]),
    );
    expect(ENV_VARIABLES.map((variable) => variable.name).sort()).toEqual([...names].sort());

    const settings = parseEnv({}, '/srv/app');
    for (const variable of ENV_VARIABLES) {
      const value = settings[variable.setting];
      if (variable.name === 'EXPORT_CONFIG') {
        // Not a setting: loadConfig looks for this file, then falls back to the demo.
        expect(value).toBeUndefined();
        expect(variable.default.startsWith(`\`./${DEFAULT_CONFIG_FILE}\``)).toBe(true);
      } else if (variable.default === 'none') {
        expect(value, variable.name).toBeUndefined();
      } else {
        const shown = /^`([^`]+)`$/.exec(variable.default)![1]!;
        const expected = variable.name === 'EXPORT_DIR' ? resolve('/srv/app', shown) : shown;
        expect(String(value), variable.name).toBe(expected);
      }
    }
  });
});

describe('names, versions and files the docs quote', () => {
  const docs = [
    'README.md',
    ...['sidecar', 'operations', 'jobs', 'http-api', 'adapters', 'runbooks', 'benchmarks', 'scaling'].map(
      (name) => `docs/${name}.md`,
    ),
    'examples/sidecar/README.md',
  ].filter((file) => existsSync(join(ROOT, file)));

  it('names only environment variables the sidecar reads', () => {
    const known = new Set(ENV_VARIABLES.map((variable) => variable.name));
    // The library's error codes (EXPORT_TIMEOUT) share the prefix; they are not variables.
    const codes = new Set(
      [...read('packages/core/src/errors.ts').matchAll(/'(EXPORT_[A-Z_]+)'/g)].map((match) => match[1]),
    );
    for (const file of docs) {
      for (const [name] of read(file).matchAll(/\bEXPORT_[A-Z0-9_]+\b/g)) {
        if (codes.has(name)) continue;
        expect(known.has(name), `${name} in ${file}`).toBe(true);
      }
    }
  });

  it("shows @spark-export/core's version in the /status example", () => {
    const { version } = JSON.parse(read('packages/core/package.json')) as { version: string };
    const example = /"status":"ok","version":"([^"]+)"/.exec(read('docs/http-api.md'));
    expect(example?.[1]).toBe(version);
  });

  it.each([
    'docs/sidecar.md',
    'docs/operations.md',
    'docs/jobs.md',
    'docs/scaling.md',
    'examples/sidecar/README.md',
  ])('%s points only to files that exist', (file) => {
    const text = read(file);
    const targets = [
      ...[...text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)]
        .map((m) => m[1]!)
        .filter((t) => !/^[a-z]+:/.test(t)),
      // Bare mentions such as "see DESIGN.md".
      ...[...text.matchAll(/(?<![\w./-])([A-Z][A-Za-z-]*\.md)\b/g)].map((m) => m[1]!),
    ];
    for (const target of targets) {
      const candidates = [join(ROOT, dirname(file), target), join(ROOT, target), join(ROOT, 'docs', target)];
      expect(
        candidates.some((candidate) => existsSync(candidate)),
        `${target} in ${file}`,
      ).toBe(true);
    }
  });
});
