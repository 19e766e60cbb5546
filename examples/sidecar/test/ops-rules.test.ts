// The static operations kit of the sidecar: Prometheus config, alert rules and their promtool unit
// tests, the Grafana dashboard and the runbooks the alerts link to. promtool is the real one from
// PATH (Debian package `prometheus`); without it these tests skip locally and fail in CI.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';

const execFileAsync = promisify(execFile);

const sidecarDir = fileURLToPath(new URL('..', import.meta.url));
const prometheusDir = join(sidecarDir, 'prometheus');
const dashboardPath = join(sidecarDir, 'grafana', 'export-dashboard.json');
const runbooksPath = fileURLToPath(new URL('../../../docs/runbooks.md', import.meta.url));
const RUNBOOKS_URL = 'https://github.com/spark-export/spark-export/blob/main/docs/runbooks.md';
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
const DATASOURCE_VARIABLE = '${datasource}';

const ALERT_NAMES = [
  'SparkExportBackendDown',
  'SparkExportBackpressureHigh',
  'SparkExportConcurrencySaturated',
  'SparkExportDown',
  'SparkExportDurationHigh',
  'SparkExportJobErrorsHigh',
  'SparkExportStalled',
  'SparkExportWebhooksFailing',
];

const histogram = (name: string) => [`${name}_bucket`, `${name}_sum`, `${name}_count`];
/** What the sidecar exposes (plus Prometheus' own `up`); nothing else may appear in a query. */
const KNOWN_METRICS = new Set([
  'export_jobs_started_total',
  'export_jobs_completed_total',
  'export_jobs_rejected_total',
  ...histogram('export_job_duration_seconds'),
  ...histogram('export_queue_wait_seconds'),
  'export_jobs_in_flight',
  'export_jobs_queued',
  'export_concurrency_limit',
  'export_rows_total',
  'export_bytes_total',
  'export_storage_bytes',
  'export_retention_deletions_total',
  'export_webhook_deliveries_total',
  ...histogram('export_webhook_delivery_latency_seconds'),
  'export_backend_up',
  'up',
]);
const isKnownMetric = (name: string) => KNOWN_METRICS.has(name) || /^(process|nodejs)_/.test(name);

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/**
 * Metric names in a PromQL expression: identifiers that are not function calls, keywords,
 * label names (inside `{}` or a `by (...)`-style list) or parts of numbers and durations.
 */
function metricNames(expr: string): string[] {
  if (expr.includes('__name__')) {
    throw new Error(`Expected plain metric names, got a __name__ matcher in: ${expr}`);
  }
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = match[0];
    const isCall = /^\s*\(/.test(stripped.slice(match.index + word.length));
    if (!isCall && !PROMQL_KEYWORDS.has(word.toLowerCase())) names.add(word);
  }
  return [...names];
}

const unknownMetrics = (expr: string) => metricNames(expr).filter((name) => !isKnownMetric(name));

/** Anchors GitHub generates for the headings of a Markdown document. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  for (const match of markdown.matchAll(/^#{1,6}[ \t]+(.+?)[ \t#]*$/gm)) {
    const text = (match[1] ?? '').trim();
    anchors.add(
      text
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    );
  }
  return anchors;
}

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: { name: string; rules: AlertRule[] }[];
}
interface RuleTestFile {
  tests: {
    name: string;
    alert_rule_test?: {
      alertname: string;
      exp_alerts?: { exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }[];
    }[];
  }[];
}

const alertsSource = await readFile(join(prometheusDir, 'alerts.yml'), 'utf8');
const rulesFile = parse(alertsSource) as RuleFile;
const alerts = rulesFile.groups.flatMap((group) => group.rules);
const ruleTests = parse(await readFile(join(prometheusDir, 'alerts.test.yml'), 'utf8')) as RuleTestFile;

async function findOnPath(command: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, command);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const promtool = await findOnPath('promtool');
// CI must prove the rules against the real promtool, so there a missing binary fails every test
// below; a developer without it may skip them.
const skipPromtool = promtool === undefined && !process.env.CI;

interface RunResult {
  code: number;
  output: string;
}

async function runPromtool(args: string[], cwd: string): Promise<RunResult> {
  if (promtool === undefined) {
    throw new Error('promtool is not on PATH: install it with `apt-get install -y prometheus` (Debian 12)');
  }
  try {
    const { stdout, stderr } = await execFileAsync(promtool, args, { cwd, timeout: 30_000 });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failure = error as { code?: unknown; stdout?: unknown; stderr?: unknown };
    // A non-numeric code is a spawn failure or a timeout (killed by signal): not a promtool verdict.
    if (typeof failure.code !== 'number') throw error;
    return { code: failure.code, output: `${failure.stdout ?? ''}${failure.stderr ?? ''}` };
  }
}

describe('metric name extraction used by these checks', () => {
  it('finds metric names and ignores functions, labels, ranges, numbers and keywords', () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (le, job) (rate(a_bucket{job="x", le!="1e3"}[5m]))) > 1e3 and on (job) b > bool 0',
      ),
    ).toEqual(['a_bucket', 'b']);
    expect(unknownMetrics('sum(rate(export_job_total[$__rate_interval]))')).toEqual(['export_job_total']);
    expect(unknownMetrics('sum(rate(export_jobs_started_total[5m])) + process_cpu_seconds_total')).toEqual(
      [],
    );
  });
});

describe('alerts.yml', () => {
  it('defines the seven SparkExport alerts in one group', () => {
    expect(rulesFile.groups).toHaveLength(1);
    expect(alerts.map((rule) => rule.alert).sort()).toEqual(ALERT_NAMES);
  });

  it('gives every alert a severity, a for duration, a summary, a templated description and its runbook', () => {
    for (const rule of alerts) {
      const where = `alert ${rule.alert}`;
      expect(['warning', 'critical'], where).toContain(rule.labels?.severity);
      expect(rule.for, where).toMatch(/^\d+[smh]$/);
      expect(rule.annotations?.summary, where).toMatch(/\S/);
      expect(rule.annotations?.description, where).toMatch(/\{\{.*\$(value|labels)/);
      expect(rule.annotations?.runbook_url, where).toBe(`${RUNBOOKS_URL}#${rule.alert.toLowerCase()}`);
    }
  });

  it('only queries metrics the sidecar exposes', () => {
    for (const rule of alerts) {
      expect(unknownMetrics(rule.expr), `alert ${rule.alert}`).toEqual([]);
    }
  });

  it('links every alert to a heading of docs/runbooks.md', async () => {
    const anchors = headingAnchors(await readFile(runbooksPath, 'utf8'));
    for (const rule of alerts) {
      const anchor = new URL(rule.annotations?.runbook_url ?? '').hash.slice(1);
      expect(anchors, `runbook section for ${rule.alert}`).toContain(anchor);
    }
  });

  it('has a firing case (with summary) and a silent case in alerts.test.yml for every alert', () => {
    const cases = ruleTests.tests.flatMap((test) => test.alert_rule_test ?? []);
    for (const name of ALERT_NAMES) {
      const own = cases.filter((c) => c.alertname === name);
      const firing = own.filter((c) => (c.exp_alerts ?? []).length > 0);
      expect(firing.length, `firing case for ${name}`).toBeGreaterThan(0);
      for (const c of firing) {
        for (const expected of c.exp_alerts ?? []) {
          expect(expected.exp_labels?.severity, `exp_labels of ${name}`).toMatch(/^(warning|critical)$/);
          expect(expected.exp_annotations?.summary, `exp_annotations of ${name}`).toMatch(/\S/);
        }
      }
      expect(
        own.filter((c) => (c.exp_alerts ?? []).length === 0).length,
        `silent case for ${name}`,
      ).toBeGreaterThan(0);
    }
  });
});

describe.skipIf(skipPromtool)('promtool', () => {
  it('accepts the rule file', async () => {
    const result = await runPromtool(['check', 'rules', 'alerts.yml'], prometheusDir);
    expect(result.output).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(result.code, result.output).toBe(0);
  });

  it('accepts prometheus.yml together with the rule file it loads', async () => {
    // rule_files are resolved relative to prometheus.yml, so checking in place also checks alerts.yml.
    const result = await runPromtool(['check', 'config', 'prometheus.yml'], prometheusDir);
    expect(result.output).toContain('SUCCESS: 1 rule files found');
    expect(result.code, result.output).toBe(0);
  });

  it('passes the alert unit tests', async () => {
    const result = await runPromtool(['test', 'rules', 'alerts.test.yml'], prometheusDir);
    expect(result.output).toContain('SUCCESS');
    expect(result.output).not.toContain('FAILED');
    expect(result.code, result.output).toBe(0);
  });

  it('fails the unit tests of an alert whose rule never fires or always fires', {
    timeout: 120_000,
  }, async () => {
    // Proves each alert's cases have teeth: the firing case catches a dead rule, the silent
    // case a rule that fires regardless of the data.
    const dir = await mkdtemp(join(tmpdir(), 'spark-export-rules-'));
    try {
      await copyFile(join(prometheusDir, 'alerts.test.yml'), join(dir, 'alerts.test.yml'));
      for (const name of ALERT_NAMES) {
        for (const expr of ['vector(0) > 1', 'vector(1)']) {
          const mutated = parse(alertsSource) as RuleFile;
          for (const rule of mutated.groups.flatMap((group) => group.rules)) {
            if (rule.alert === name) rule.expr = expr;
          }
          await writeFile(join(dir, 'alerts.yml'), stringify(mutated));
          const result = await runPromtool(['test', 'rules', 'alerts.test.yml'], dir);
          expect(result.code, `${name} with expr ${expr}`).not.toBe(0);
          expect(result.output, `${name} with expr ${expr}`).toContain(`alertname: ${name},`);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  timezone: string;
  schemaVersion: number;
  templating: { list: { name: string; type: string; query?: string }[] };
  panels: Panel[];
}

const dashboard = JSON.parse(await readFile(dashboardPath, 'utf8')) as Dashboard;
const targets = dashboard.panels.flatMap((panel) => panel.targets ?? []);

describe('grafana/export-dashboard.json', () => {
  it('is the spark-export dashboard in UTC with a Prometheus data source variable', () => {
    expect(dashboard.uid).toBe('spark-export');
    expect(dashboard.timezone).toBe('utc');
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
  });

  it('has exactly five time series panels, all on the datasource variable', () => {
    expect(dashboard.panels).toHaveLength(5);
    for (const panel of dashboard.panels) {
      expect(panel.type, panel.title).toBe('timeseries');
      expect(panel.datasource?.uid, panel.title).toBe(DATASOURCE_VARIABLE);
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) {
        expect(target.datasource?.uid, `${panel.title} ${target.refId}`).toBe(DATASOURCE_VARIABLE);
      }
    }
  });

  it('only queries metrics the sidecar exposes, and shows each of the export metrics it charts', () => {
    for (const target of targets) {
      expect(unknownMetrics(target.expr), target.expr).toEqual([]);
    }
    const used = new Set(targets.flatMap((target) => metricNames(target.expr)));
    for (const name of [
      'export_jobs_completed_total',
      'export_jobs_rejected_total',
      'export_jobs_started_total',
      'export_jobs_in_flight',
      'export_concurrency_limit',
      'export_jobs_queued',
      'export_job_duration_seconds_bucket',
      'export_rows_total',
      'export_bytes_total',
    ]) {
      expect(used, name).toContain(name);
    }
  });

  it('uses $__rate_interval for every rate() and increase()', () => {
    for (const { expr } of targets) {
      const functions = expr.match(/\b(?:rate|irate|increase)\s*\(/g) ?? [];
      const ranges = expr.match(/\[[^\]]*\]/g) ?? [];
      expect(ranges.length, expr).toBe(functions.length);
      for (const range of ranges) expect(range, expr).toBe('[$__rate_interval]');
    }
  });

  it('charts p50, p95 and p99 of the export duration', () => {
    const quantiles = targets
      .filter((target) => target.expr.includes('export_job_duration_seconds_bucket'))
      .map((target) => /histogram_quantile\(\s*([\d.]+)/.exec(target.expr)?.[1]);
    expect(quantiles.map(Number).sort()).toEqual([0.5, 0.95, 0.99]);
  });
});
