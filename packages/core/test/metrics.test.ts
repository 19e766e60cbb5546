import { Writable } from 'node:stream';
import { register as globalRegister, Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { ExportManager } from '../src/export-manager.js';
import { DURATION_BUCKETS, registerExportMetrics } from '../src/metrics.js';
import { type Deferred, deferred } from '../src/testing/deferred.js';

const METRIC_NAMES = [
  'export_jobs_started_total',
  'export_jobs_completed_total',
  'export_jobs_rejected_total',
  'export_job_duration_seconds',
  'export_queue_wait_seconds',
  'export_jobs_in_flight',
  'export_jobs_queued',
  'export_concurrency_limit',
  'export_rows_total',
  'export_bytes_total',
  'export_webhook_deliveries_total',
  'export_webhook_delivery_latency_seconds',
];

async function turns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

interface Sample {
  metricName?: string;
  labels: Record<string, string | number | undefined>;
  value: number;
}

/** Every sample of a metric; histograms have one per bucket plus `_sum` and `_count`. */
async function samples(registry: Registry, name: string): Promise<Sample[]> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  return (await metric.get()).values as Sample[];
}

async function gauge(registry: Registry, name: string): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  return (await metric.get()).values[0]?.value;
}

describe('registerExportMetrics', () => {
  it('registers the documented metrics on the given registry', async () => {
    const registry = new Registry();
    registerExportMetrics({ registry });

    const names = (await registry.getMetricsAsJSON()).map((metric) => metric.name);
    expect(names).toEqual(expect.arrayContaining(METRIC_NAMES));
  });

  it('is get-or-create: a second registration, or two managers, on one registry never throw', () => {
    const registry = new Registry();
    const first = registerExportMetrics({ registry });
    const second = registerExportMetrics({ registry });
    expect(second.jobsStarted).toBe(first.jobsStarted);
    expect(second.rows).toBe(first.rows);

    const managerA = new ExportManager({ metrics: { registry } });
    const managerB = new ExportManager({ metrics: { registry } });
    expect(managerA.metrics?.jobDuration).toBe(first.jobDuration);
    expect(managerB.metrics?.jobDuration).toBe(first.jobDuration);
    expect(
      registry.getMetricsAsArray().filter((metric) => metric.name === 'export_jobs_started_total'),
    ).toHaveLength(1);
  });

  it('counts the exports of two managers that share a registry in the same series', async () => {
    const registry = new Registry();
    const datasets = { people: { source: () => [{ id: 1 }, { id: 2 }] } };
    const managerA = new ExportManager({ datasets, metrics: { registry } });
    const managerB = new ExportManager({ datasets, metrics: { registry } });

    await managerA.stream({ dataset: 'people', format: 'csv' }, discard());
    await managerB.stream({ dataset: 'people', format: 'csv' }, discard());

    const text = await registry.metrics();
    expect(text).toContain(
      'export_jobs_completed_total{dataset="people",format="csv",outcome="succeeded"} 2',
    );
    expect(text).toContain('export_rows_total{dataset="people",format="csv"} 4');
  });

  it('applies a name prefix', async () => {
    const registry = new Registry();
    const manager = new ExportManager({
      datasets: { people: { source: () => [{ id: 1 }] } },
      metrics: { registry, prefix: 'myapp_' },
    });
    await manager.stream({ dataset: 'people', format: 'ndjson' }, discard());

    const text = await registry.metrics();
    expect(text).toContain('myapp_export_jobs_started_total{dataset="people",format="ndjson"} 1');
    const names = (await registry.getMetricsAsJSON()).map((metric) => metric.name);
    expect(names.every((name) => name.startsWith('myapp_export_'))).toBe(true);
    // A prefixed and an unprefixed set live side by side on one registry.
    registerExportMetrics({ registry });
    expect(registry.getSingleMetric('export_jobs_started_total')).toBeDefined();
  });

  it.each(['my-app_', '1app_', 'my app'])(
    'rejects the invalid prefix %j with a message naming the rule',
    (prefix) => {
      expect(() => registerExportMetrics({ prefix })).toThrow(
        new TypeError(
          `Expected metrics prefix to match [a-zA-Z_:][a-zA-Z0-9_:]*, got ${JSON.stringify(prefix)}`,
        ),
      );
    },
  );

  it("uses a fresh private registry by default, never prom-client's global one", async () => {
    const before = (await globalRegister.getMetricsAsJSON()).map((metric) => metric.name);
    const manager = new ExportManager();
    const other = new ExportManager();

    expect(manager.metrics?.registry).toBeInstanceOf(Registry);
    expect(manager.metrics?.registry).not.toBe(globalRegister);
    expect(manager.metrics?.registry).not.toBe(other.metrics?.registry);
    expect((await globalRegister.getMetricsAsJSON()).map((metric) => metric.name)).toEqual(before);
    expect(globalRegister.getSingleMetric('export_jobs_started_total')).toBeUndefined();
  });

  it('never collects default process metrics by itself', async () => {
    const manager = new ExportManager();
    const text = await manager.metrics!.registry.metrics();
    expect(text).not.toContain('process_cpu_seconds_total');
    expect(text).not.toContain('nodejs_');
    expect(await globalRegister.metrics()).not.toContain('process_cpu_seconds_total');
  });

  it('can be turned off', () => {
    expect(new ExportManager({ metrics: false }).metrics).toBeUndefined();
  });

  it('takes ready-made metrics', () => {
    const metrics = registerExportMetrics();
    expect(new ExportManager({ metrics }).metrics).toBe(metrics);
  });

  it('gives the duration histogram the documented buckets, 0.1 s to 1 h', async () => {
    const registry = new Registry();
    const manager = new ExportManager({
      datasets: { people: { source: () => [{ id: 1 }] } },
      metrics: { registry },
    });
    await manager.stream({ dataset: 'people', format: 'csv' }, discard());

    expect(DURATION_BUCKETS[0]).toBe(0.1);
    expect(DURATION_BUCKETS.at(-1)).toBe(3600);
    const values = await samples(registry, 'export_job_duration_seconds');
    const buckets = values
      .filter(
        (value) => value.metricName === 'export_job_duration_seconds_bucket' && value.labels.le !== '+Inf',
      )
      .map((value) => value.labels.le);
    expect(buckets).toEqual(DURATION_BUCKETS);
    const count = values.find((value) => value.metricName === 'export_job_duration_seconds_count');
    expect(count).toMatchObject({
      labels: { dataset: 'people', format: 'csv', outcome: 'succeeded' },
      value: 1,
    });
  });
});

describe('ExportManager metrics', () => {
  it('updates the rows and bytes counters per batch, not per row', async () => {
    const total = 10_000;
    const batchSize = 100;
    const manager = new ExportManager({
      batchSize,
      datasets: {
        people: {
          source: function* () {
            for (let id = 1; id <= total; id++) yield { id, name: `person ${id}` };
          },
        },
      },
    });
    const rowsInc = vi.spyOn(manager.metrics!.rows, 'inc');
    const bytesInc = vi.spyOn(manager.metrics!.bytes, 'inc');

    const result = await manager.stream({ dataset: 'people', format: 'ndjson' }, discard());

    expect(result.rows).toBe(total);
    expect(rowsInc.mock.calls.length).toBeGreaterThan(0);
    expect(rowsInc.mock.calls.length).toBeLessThanOrEqual(total / batchSize + 2);
    expect(bytesInc.mock.calls.length).toBeLessThanOrEqual(total / batchSize + 2);
    const rowsCounted = rowsInc.mock.calls.reduce(
      (sum, call) => sum + Number((call as unknown[])[1] ?? 1),
      0,
    );
    expect(rowsCounted).toBe(total);
    const registry = manager.metrics!.registry;
    expect(await registry.metrics()).toContain(
      `export_bytes_total{dataset="people",format="ndjson"} ${result.bytes}`,
    );
  });

  it('shows running and queued exports and the limit in the gauges', async () => {
    const gates: Deferred[] = [];
    const manager = new ExportManager({
      maxConcurrent: 1,
      maxQueued: 1,
      datasets: {
        slow: {
          source: async function* () {
            const gate = deferred();
            gates.push(gate);
            await gate.promise;
            yield { id: gates.length };
          },
        },
      },
    });
    const registry = manager.metrics!.registry;
    expect(await gauge(registry, 'export_concurrency_limit')).toBe(1);
    expect(await gauge(registry, 'export_jobs_in_flight')).toBe(0);

    const first = manager.stream({ dataset: 'slow', format: 'ndjson' }, discard());
    const second = manager.stream({ dataset: 'slow', format: 'ndjson' }, discard());
    await turns(3);
    expect(await gauge(registry, 'export_jobs_in_flight')).toBe(1);
    expect(await gauge(registry, 'export_jobs_queued')).toBe(1);

    manager.limit = 3;
    expect(await gauge(registry, 'export_concurrency_limit')).toBe(3);
    await turns(3);
    // Raising the limit started the queued export at once.
    expect(await gauge(registry, 'export_jobs_in_flight')).toBe(2);
    expect(await gauge(registry, 'export_jobs_queued')).toBe(0);
    manager.limit = 2;
    expect(await gauge(registry, 'export_concurrency_limit')).toBe(2);

    for (const gate of gates) gate.resolve();
    await Promise.all([first, second]);
    expect(await gauge(registry, 'export_jobs_in_flight')).toBe(0);
    const waits = (await samples(registry, 'export_queue_wait_seconds')).find(
      (value) => value.metricName === 'export_queue_wait_seconds_count',
    );
    expect(waits?.value).toBe(1);
  });

  it('creates no series for a request for an unknown dataset or format', async () => {
    const manager = new ExportManager({ datasets: { people: { source: () => [{ id: 1 }] } } });

    await expect(manager.stream({ dataset: 'nope', format: 'csv' }, discard())).rejects.toMatchObject({
      code: 'UNKNOWN_DATASET',
    });
    await expect(
      manager.stream({ dataset: 'people', format: 'xml' as 'csv' }, discard()),
    ).rejects.toMatchObject({
      code: 'UNKNOWN_FORMAT',
    });

    const text = await manager.metrics!.registry.metrics();
    expect(text).not.toContain('dataset="nope"');
    expect(text).not.toContain('format="xml"');
    expect(text).not.toMatch(/export_jobs_(started|completed)_total\{/);
  });
});
