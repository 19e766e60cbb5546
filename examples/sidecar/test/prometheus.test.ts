// Prometheus itself (Debian package `prometheus`) scraping a running sidecar every second, with
// the real prometheus/alerts.yml as its rule file, while the test drives more exports than the
// limit: successes, 429 rejections and failures. Then every query of the Grafana dashboard and
// every alert expression is evaluated through Prometheus' HTTP API: no errors, and each panel
// query returns data. The scrape goes through the `authorization` block that docs/operations.md
// tells operators to add when EXPORT_API_TOKEN is set.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import {
  removeDir,
  SIDECAR_DIR,
  startTestSidecar,
  type TestSidecar,
  tempDir,
  waitForJob,
} from './helpers.js';
import {
  createItemsDatabase,
  freePort,
  type HeldUpstream,
  opsConfig,
  pollUntil,
  postJob,
  requireProgram,
  startHeldUpstream,
  waitForIdle,
} from './programs.js';

const prometheus = await requireProgram('prometheus', 'prometheus');
const ALERTS_FILE = join(SIDECAR_DIR, 'prometheus', 'alerts.yml');
const TOKEN = 'prometheus-test-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const LIMIT = 2;

interface Panel {
  title: string;
  targets: { refId: string; expr: string }[];
}
const dashboard = JSON.parse(readFileSync(join(SIDECAR_DIR, 'grafana', 'export-dashboard.json'), 'utf8')) as {
  panels: Panel[];
};
const alertRules = (
  parse(readFileSync(ALERTS_FILE, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] }
).groups.flatMap((group) => group.rules);

interface QueryResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

describe.skipIf(prometheus.skip)(
  'Prometheus scraping a loaded sidecar, with the dashboard and alert queries',
  () => {
    let dir: string;
    let upstream: HeldUpstream;
    let sidecar: TestSidecar;
    let child: ChildProcess | undefined;
    let exited: Promise<void> = Promise.resolve();
    let api = '';
    let log = '';

    const query = async (expr: string): Promise<QueryResult> => {
      const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
      return (await response.json()) as QueryResult;
    };
    /** The single value of an instant query, once Prometheus has it. */
    const scalar = async (expr: string): Promise<number | undefined> => {
      const result = await query(expr);
      const sample = result.data?.result[0];
      return sample === undefined ? undefined : Number(sample.value[1]);
    };
    /** Waits (bounded) until Prometheus has scraped at least the given totals. */
    const waitForScraped = (expected: Record<string, number>) =>
      pollUntil(
        `Prometheus to scrape ${JSON.stringify(expected)}`,
        async () => {
          for (const [expr, value] of Object.entries(expected)) {
            if ((await scalar(expr)) !== value) return undefined;
          }
          return true;
        },
        { attempts: 200, intervalMs: 100 },
      );

    /**
     * One round of load: LIMIT held exports fill every slot, three more requests get 429, then
     * the held ones finish, one export fails (SQL error at run time) and two succeed.
     */
    const driveRound = async () => {
      const before = upstream.requests;
      const held = await Promise.all(
        Array.from({ length: LIMIT }, () =>
          postJob(sidecar.origin, { dataset: 'held', format: 'ndjson' }, AUTH),
        ),
      );
      expect(held.map((r) => r.status)).toEqual(Array(LIMIT).fill(202));
      await upstream.waitForRequests(before + LIMIT);
      const rejected = await Promise.all(
        Array.from({ length: 3 }, (_, i) =>
          postJob(sidecar.origin, { dataset: 'items', format: i % 2 ? 'csv' : 'json' }, AUTH),
        ),
      );
      expect(rejected.map((r) => r.status)).toEqual([429, 429, 429]);
      upstream.release();
      for (const job of held)
        expect((await waitForJob(sidecar.url(job.location!), AUTH)).status).toBe('succeeded');
      await waitForIdle(sidecar.origin);
      const broken = await postJob(sidecar.origin, { dataset: 'broken', format: 'csv' }, AUTH);
      expect((await waitForJob(sidecar.url(broken.location!), AUTH)).status).toBe('failed');
      await waitForIdle(sidecar.origin);
      const ok = await Promise.all([
        postJob(sidecar.origin, { dataset: 'items', format: 'csv' }, AUTH),
        postJob(sidecar.origin, { dataset: 'items', format: 'ndjson' }, AUTH),
      ]);
      for (const job of ok)
        expect((await waitForJob(sidecar.url(job.location!), AUTH)).status).toBe('succeeded');
      await waitForIdle(sidecar.origin);
    };

    beforeAll(async () => {
      dir = tempDir('spark-prometheus-');
      createItemsDatabase(join(dir, 'items.sqlite'), 2_000);
      upstream = await startHeldUpstream();
      sidecar = await startTestSidecar(opsConfig(join(dir, 'items.sqlite'), upstream.url), {
        baseDir: dir,
        env: { EXPORT_MAX_CONCURRENT: String(LIMIT), EXPORT_API_TOKEN: TOKEN, LOG_LEVEL: 'silent' },
      });
      const target = new URL(sidecar.origin).host;
      writeFileSync(
        join(dir, 'prometheus.yml'),
        stringify({
          global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '1s' },
          rule_files: [ALERTS_FILE],
          scrape_configs: [
            {
              job_name: 'export-sidecar',
              metrics_path: '/export/metrics',
              authorization: { type: 'Bearer', credentials_file: join(dir, 'token') },
              static_configs: [{ targets: [target] }],
            },
          ],
        }),
      );
      writeFileSync(join(dir, 'token'), `${TOKEN}\n`);

      for (let attempt = 0; attempt < 5 && api === ''; attempt++) {
        const port = await freePort();
        const started = spawn(
          prometheus.path!,
          [
            `--config.file=${join(dir, 'prometheus.yml')}`,
            `--storage.tsdb.path=${join(dir, `tsdb-${attempt}`)}`,
            `--web.listen-address=127.0.0.1:${port}`,
            '--log.level=warn',
          ],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        started.stderr!.on('data', (chunk: Buffer) => {
          log += chunk.toString('utf8');
        });
        const done = new Promise<void>((resolve) => started.once('exit', () => resolve()));
        const ready = await pollUntil(
          'Prometheus to be ready',
          async () => {
            if (started.exitCode !== null) return false;
            return (await fetch(`http://127.0.0.1:${port}/-/ready`)).ok ? true : undefined;
          },
          { attempts: 200, intervalMs: 100 },
        ).catch(() => false);
        if (ready) {
          child = started;
          exited = done;
          api = `http://127.0.0.1:${port}`;
        } else {
          if (started.exitCode === null) started.kill('SIGKILL');
          await done;
        }
      }
      if (api === '') throw new Error(`Prometheus did not start:\n${log}`);
    }, 60_000);

    afterAll(async () => {
      if (child && child.exitCode === null) child.kill('SIGTERM');
      await exited;
      upstream?.release();
      await sidecar?.close();
      await upstream?.close();
      if (dir) removeDir(dir);
    });

    it('scrapes the sidecar through the bearer token and loads the seven alert rules', async () => {
      const target = await pollUntil(
        'the export-sidecar target to be up',
        async () => {
          const body = (await (await fetch(`${api}/api/v1/targets`)).json()) as {
            data: { activeTargets: { labels: { job: string }; health: string; lastError: string }[] };
          };
          const found = body.data.activeTargets.find((t) => t.labels.job === 'export-sidecar');
          return found?.health === 'up' ? found : undefined;
        },
        { attempts: 200, intervalMs: 100 },
      );
      expect(target.lastError).toBe('');
      const rules = (await (await fetch(`${api}/api/v1/rules`)).json()) as {
        data: { groups: { rules: { name: string; health: string }[] }[] };
      };
      const loaded = rules.data.groups.flatMap((group) => group.rules);
      expect(loaded.map((rule) => rule.name).sort()).toEqual(alertRules.map((rule) => rule.alert).sort());
    });

    it('sees successes, rejections and failures, and every dashboard and alert query evaluates', async () => {
      await driveRound();
      // Counters appear with their first increment; a second round after Prometheus has seen the
      // first makes every rate() over the window non-zero.
      await waitForScraped({
        'sum(export_jobs_started_total)': LIMIT + 3,
        'sum(export_jobs_rejected_total)': 3,
        'sum(export_jobs_completed_total{outcome="failed"})': 1,
      });
      await driveRound();
      await waitForScraped({
        'sum(export_jobs_started_total)': 2 * (LIMIT + 3),
        'sum(export_jobs_rejected_total)': 6,
        'sum(export_jobs_completed_total{outcome="succeeded"})': 2 * (LIMIT + 2),
        'sum(export_jobs_completed_total{outcome="failed"})': 2,
        'sum(export_rows_total)': 2 * (2 * 2_000 + LIMIT * 6),
        'sum(export_jobs_in_flight)': 0,
      });

      const problems: string[] = [];
      for (const panel of dashboard.panels) {
        for (const target of panel.targets) {
          const expr = target.expr.replaceAll('$__rate_interval', '1m');
          const result = await query(expr);
          if (result.status !== 'success') problems.push(`${panel.title} ${target.refId}: ${result.error}`);
          else if ((result.data?.result.length ?? 0) === 0)
            problems.push(`${panel.title} ${target.refId}: no data for ${expr}`);
        }
      }
      for (const rule of alertRules) {
        const result = await query(rule.expr);
        if (result.status !== 'success') problems.push(`${rule.alert}: ${result.error}`);
      }
      expect(problems).toEqual([]);

      // The values behind the panels are the ones the load produced.
      expect(await scalar('sum(export_concurrency_limit)')).toBe(LIMIT);
      expect(await scalar('sum by (reason) (export_jobs_rejected_total{reason="concurrency_limit"})')).toBe(
        6,
      );
      const share = await scalar(
        'sum(rate(export_jobs_rejected_total[1m])) / (sum(rate(export_jobs_rejected_total[1m]) or rate(export_jobs_started_total[1m])) > 0)',
      );
      expect(share).toBeGreaterThan(0);
      expect(share).toBeLessThan(1);
      // The load was far too short for any alert's `for:`; SparkExportDown must not even be pending.
      const alerts = (await (await fetch(`${api}/api/v1/alerts`)).json()) as {
        data: { alerts: { labels: { alertname: string } }[] };
      };
      expect(alerts.data.alerts.map((alert) => alert.labels.alertname)).not.toContain('SparkExportDown');
    });
  },
);
