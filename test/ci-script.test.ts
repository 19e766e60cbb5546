// .ci/run on a fresh machine: it installs the programs the integration tests drive, keeps
// Debian from starting their services (instead of killing them by name afterwards, which could
// hit any process of that name on the machine), and runs the README's test command.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCRIPT = join(ROOT, '.ci/run');
const script = readFileSync(SCRIPT, 'utf8');
const lines = script.split('\n');
const lineOf = (pattern: RegExp) => lines.findIndex((line) => pattern.test(line));

describe('.ci/run', () => {
  it('is valid bash', () => {
    execFileSync('bash', ['-n', SCRIPT]);
  });

  it('kills no process by name', () => {
    expect(script).not.toMatch(/\b(pkill|killall)\b/);
  });

  it('writes a policy-rc.d that refuses every service start before it installs packages', () => {
    const policy = lineOf(/>\s*\/usr\/sbin\/policy-rc\.d\b/);
    const install = lineOf(/apt-get install /);
    expect(policy).toBeGreaterThan(-1);
    expect(install).toBeGreaterThan(policy);
    // What it writes is a shell script that exits 101 ("action forbidden by policy").
    const written = execFileSync(
      'bash',
      ['-c', `${lines[policy]!.replace(/>\s*\/usr\/sbin\/policy-rc\.d.*$/, '')}`],
      {
        encoding: 'utf8',
      },
    );
    expect(written.startsWith('#!/bin/sh\n')).toBe(true);
    const status = (() => {
      try {
        execFileSync('sh', ['-c', written]);
        return 0;
      } catch (error) {
        return (error as { status: number }).status;
      }
    })();
    expect(status).toBe(101);
    expect(lines[policy + 1]).toMatch(/chmod 755 \/usr\/sbin\/policy-rc\.d/);
  });

  it('installs each program only when it is missing, Redis among them', () => {
    for (const [probe, pkg] of [
      ['command -v nginx', 'nginx'],
      ['command -v promtool', 'prometheus'],
      ['command -v redis-server', 'redis-server'],
      ['command -v curl', 'curl'],
      ['command -v soffice', 'libreoffice-calc-nogui'],
    ] as const) {
      const line = lines[lineOf(new RegExp(probe.replace(/ /g, '\\s+')))];
      expect(line, probe).toMatch(new RegExp(`\\|\\| missing\\+=\\(${pkg}\\)$`));
    }
    expect(script).toMatch(
      /if \[ \$\{#missing\[@\]\} -gt 0 \]; then\n(.*\n)*?\s+apt-get install -y --no-install-recommends "\$\{missing\[@\]\}"\n/,
    );
  });

  it("runs the README's test command", () => {
    expect(lines).toContain('npm ci');
    expect(lines).toContain('npm test');
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toMatch(/^npm test\s+#/m);
  });
});
