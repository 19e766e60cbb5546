import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { ExportManager, type ExportManagerOptions } from '../src/export-manager.js';
import { createExportHandler, toNodeHandler } from '../src/http/index.js';
import { verifyDownloadSignature } from '../src/http/signing.js';
import type { Job } from '../src/jobs/job.js';
import { LocalWebhookDeliveryQueue, type Timers } from '../src/notifications/delivery-queue.js';
import { FileWebhookDeliveryStore, type WebhookDelivery } from '../src/notifications/delivery-store.js';
import type { WebhookDeliveryView } from '../src/notifications/webhook-notifier.js';
import type { WebhookEndpoint } from '../src/notifications/webhook-options.js';
import { listen } from '../src/testing/index.js';
import { Gates, nextJobEvent, plainDataset, removeDir, tempDir } from './jobs.helpers.js';
import { assertMatchesSchema } from './openapi.helpers.js';
import { WebhookReceiver } from './webhook-receiver.js';

// whsec_ and base64 of 24 bytes or more, as Standard Webhooks secrets are.
const SECRET = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
const NEW_SECRET = `whsec_${Buffer.alloc(32, 2).toString('base64')}`;
const LINK_SECRET = 'a-download-link-secret-of-32-bytes!';

/**
 * Timers the test fires by hand: retries and attempt timeouts happen when the test says so,
 * never after a real wait. Each pending timer is known by the delay it was set for.
 */
class ManualTimers implements Timers {
  readonly pending = new Map<number, { callback: () => void; ms: number }>();
  #next = 1;
  readonly #waiters: { ms: number; resolve: () => void }[] = [];

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#next++;
    this.pending.set(id, { callback, ms });
    for (const waiter of [...this.#waiters]) {
      if (waiter.ms !== ms) continue;
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  delays(): number[] {
    return [...this.pending.values()].map((timer) => timer.ms).sort((a, b) => a - b);
  }

  /** Resolves once a timer of `ms` is pending. */
  set(ms: number): Promise<void> {
    if (this.delays().includes(ms)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ ms, resolve }));
  }

  /** Fires the pending timer of `ms` (there must be exactly one). */
  fire(ms: number): void {
    const matches = [...this.pending].filter(([, timer]) => timer.ms === ms);
    if (matches.length !== 1)
      throw new Error(`Expected one timer of ${ms} ms, got ${this.delays().join(', ')}`);
    const [id, timer] = matches[0] as [number, { callback: () => void }];
    this.pending.delete(id);
    timer.callback();
  }
}

/** A clock near the real time (receivers check the signed timestamp against theirs), moved by hand. */
class Clock {
  time = Date.now();
  readonly now = (): number => this.time;
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function setup(
  options: {
    webhooks?: Partial<NonNullable<ExportManagerOptions['webhooks']>>;
    endpoints?: (receiver: WebhookReceiver) => WebhookEndpoint[];
    manager?: Partial<ExportManagerOptions>;
    directory?: string;
    secrets?: string[];
  } = {},
) {
  const directory = options.directory ?? (await tempDir('spark-webhooks-'));
  if (!options.directory) cleanup.push(() => removeDir(directory));
  const receiver = await WebhookReceiver.start(options.secrets ?? [SECRET]);
  cleanup.push(() => receiver.close());
  const timers = new ManualTimers();
  const clock = new Clock();
  const registry = new Registry();
  const gates = new Gates();
  const manager = new ExportManager({
    directory,
    batchSize: 50,
    metrics: { registry },
    now: clock.now,
    random: () => 0.5,
    datasets: { plain: plainDataset, gated: gates.dataset() },
    ...options.manager,
    webhooks: {
      endpoints: options.endpoints?.(receiver) ?? [{ url: receiver.url, secret: SECRET }],
      timeoutMs: 60_000,
      initialBackoffMs: 1_000,
      timers,
      ...options.webhooks,
    },
  });
  cleanup.push(() => manager.close({ drainTimeoutMs: 0 }));
  await manager.ready;
  return { directory, receiver, timers, clock, registry, manager, gates };
}

async function deliveries(
  manager: ExportManager,
  id: string,
  owner?: string,
): Promise<WebhookDeliveryView[]> {
  return (await manager.get(id, owner === undefined ? {} : { owner })).notifications ?? [];
}

/** Polls the job's notifications after each settled turn until `done` holds (no timers involved). */
async function until(
  manager: ExportManager,
  id: string,
  done: (views: WebhookDeliveryView[]) => boolean,
  owner?: string,
): Promise<WebhookDeliveryView[]> {
  for (let turn = 0; turn < 2000; turn++) {
    const views = await deliveries(manager, id, owner);
    if (done(views)) return views;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(
    `The deliveries of ${id} never got there: ${JSON.stringify(await deliveries(manager, id))}`,
  );
}

async function counter(registry: Registry, outcome: string): Promise<number> {
  const metric = await registry.getSingleMetric('export_webhook_deliveries_total')?.get();
  return metric?.values.find((value) => value.labels.outcome === outcome)?.value ?? 0;
}

async function succeededJob(manager: ExportManager, request: Record<string, unknown> = {}): Promise<Job> {
  const succeeded = nextJobEvent(manager, 'job:succeeded');
  await manager.start({ dataset: 'plain', format: 'csv', ...request } as never);
  return succeeded;
}

describe('webhooks', () => {
  it('signs each delivery with every secret, so that standardwebhooks verifies it with the old or the new one', async () => {
    const { manager, receiver, registry } = await setup({
      secrets: [SECRET, NEW_SECRET],
      endpoints: (receiver) => [{ url: receiver.url, secrets: [SECRET, NEW_SECRET] }],
      webhooks: {
        links: { origin: 'https://exports.example.com/', signing: { secret: LINK_SECRET, ttlSeconds: 600 } },
      },
    });
    const job = await succeededJob(manager, { owner: 'user-1' });
    await receiver.requests(1);
    expect(receiver.rejected).toBe(0);
    const [webhook] = receiver.received;
    expect(webhook?.signature.split(' ')).toHaveLength(2);
    expect(webhook?.id).toMatch(/^msg_[A-Za-z0-9_-]{22}$/);
    const payload = webhook?.payload;
    expect(payload).toMatchObject({
      type: 'export.succeeded',
      data: { owner: 'user-1', notify: null, job: { id: job.id, status: 'succeeded', file: job.file } },
    });
    // The download link is absolute, signed for the job's owner and expiring in ttlSeconds.
    const download = new URL(payload?.data.job.links.download ?? '');
    expect(`${download.origin}${download.pathname}`).toBe(
      `https://exports.example.com/export/jobs/${job.id}/download`,
    );
    expect(payload?.data.job.links.self).toBe(`https://exports.example.com/export/jobs/${job.id}`);
    const expires = Number(download.searchParams.get('expires'));
    expect(expires).toBe(Math.floor(Date.parse(payload?.timestamp ?? '') / 1000) + 600);
    expect(
      verifyDownloadSignature(
        LINK_SECRET,
        {
          jobId: job.id,
          owner: download.searchParams.get('owner'),
          expires: download.searchParams.get('expires'),
          signature: download.searchParams.get('sig'),
        },
        Date.now(),
      ),
    ).toBe('valid');
    const [view] = await until(manager, job.id, (views) => views[0]?.status === 'delivered', 'user-1');
    expect(view).toMatchObject({
      id: webhook?.id,
      type: 'export.succeeded',
      endpoint: 'default',
      status: 'delivered',
      attempts: 1,
      lastStatusCode: 204,
      lastError: null,
      nextAttemptAt: null,
    });
    expect(await counter(registry, 'delivered')).toBe(1);
    const latency = await registry.getSingleMetric('export_webhook_delivery_latency_seconds')?.get();
    expect(
      latency?.values.find((value) => (value as { metricName?: string }).metricName?.endsWith('_count'))
        ?.value,
    ).toBe(1);
  });

  it('retries after a 500 and a timeout with growing, jittered delays; the receiver processes the event once', async () => {
    const { manager, receiver, timers, clock, registry } = await setup();
    // The first attempt fails, the second is acted on but never answered, the third is a 2xx.
    receiver.script.push(500, 'hang');
    const job = await succeededJob(manager);
    await receiver.requests(1);
    // random() is 0.5: half of 1000 ms fixed plus a quarter of it from the jitter.
    await timers.set(750);
    expect(timers.delays()).toEqual([750]);
    let [view] = await deliveries(manager, job.id);
    expect(view).toMatchObject({
      status: 'pending',
      attempts: 1,
      lastStatusCode: 500,
      lastError: 'answered HTTP 500',
    });
    expect(view?.nextAttemptAt).toBe(new Date(clock.time + 750).toISOString());

    clock.time += 750;
    timers.fire(750);
    await receiver.requests(2);
    // The attempt waits for its answer until its own timeout fires.
    await timers.set(60_000);
    clock.time += 60_000;
    timers.fire(60_000);
    // Doubled: 2000 ms, of which 1500 with this jitter.
    await timers.set(1_500);
    [view] = await deliveries(manager, job.id);
    expect(view).toMatchObject({
      status: 'pending',
      attempts: 2,
      lastStatusCode: null,
      lastError: 'no answer within 60000 ms',
    });

    clock.time += 1_500;
    timers.fire(1_500);
    await receiver.requests(3);
    [view] = await until(manager, job.id, (views) => views[0]?.status === 'delivered');
    expect(view?.attempts).toBe(3);
    // The same webhook-id and body on every attempt; a fresh timestamp (and so signature) on each.
    const ids = new Set(receiver.received.map((webhook) => webhook.id));
    expect(ids.size).toBe(1);
    expect(new Set(receiver.received.map((webhook) => webhook.body)).size).toBe(1);
    expect(receiver.received.map((webhook) => Number(webhook.timestamp))).toEqual([
      Math.floor((clock.time - 62_250) / 1000),
      Math.floor((clock.time - 61_500) / 1000),
      Math.floor(clock.time / 1000),
    ]);
    expect(
      [...receiver.processed.values()].filter((payload) => payload.type === 'export.succeeded'),
    ).toHaveLength(1);
    expect(await counter(registry, 'retry')).toBe(2);
    expect(await counter(registry, 'delivered')).toBe(1);
    expect(timers.delays()).toEqual([]);
  });

  it('gives up after maxAttempts and says why', async () => {
    const { manager, receiver, timers, registry } = await setup({ webhooks: { maxAttempts: 2 } });
    receiver.fallback = 503;
    const job = await succeededJob(manager);
    await timers.set(750);
    timers.fire(750);
    const [view] = await until(manager, job.id, (views) => views[0]?.status === 'failed');
    expect(view).toMatchObject({ attempts: 2, lastStatusCode: 503, nextAttemptAt: null });
    expect(await counter(registry, 'retry')).toBe(1);
    expect(await counter(registry, 'failed')).toBe(1);
    expect(timers.delays()).toEqual([]);
  });

  it('a 410 disables the endpoint, also after a restart, until its URL changes', async () => {
    const first = await setup();
    first.receiver.fallback = 410;
    const job = await succeededJob(first.manager);
    await until(first.manager, job.id, (views) => views[0]?.status === 'disabled');
    expect(await counter(first.registry, 'disabled')).toBe(1);
    // The next event is recorded as disabled and never sent.
    const second = await succeededJob(first.manager);
    const [skipped] = await until(first.manager, second.id, (views) => views.length === 1);
    expect(skipped).toMatchObject({ status: 'disabled', attempts: 0 });
    expect(first.receiver.received).toHaveLength(1);
    await first.manager.close();

    const again = new ExportManager({
      directory: first.directory,
      metrics: false,
      datasets: { plain: plainDataset },
      webhooks: { endpoints: [{ url: first.receiver.url, secret: SECRET }] },
    });
    cleanup.push(() => again.close({ drainTimeoutMs: 0 }));
    const third = await succeededJob(again);
    const [view] = await until(again, third.id, (views) => views.length === 1);
    expect(view?.status).toBe('disabled');
    await again.close();

    // Another URL for the endpoint: enabled again.
    const other = await WebhookReceiver.start([SECRET]);
    cleanup.push(() => other.close());
    const moved = new ExportManager({
      directory: first.directory,
      metrics: false,
      datasets: { plain: plainDataset },
      webhooks: { endpoints: [{ url: other.url, secret: SECRET }] },
    });
    cleanup.push(() => moved.close({ drainTimeoutMs: 0 }));
    const fourth = await succeededJob(moved);
    await other.requests(1);
    await until(moved, fourth.id, (views) => views[0]?.status === 'delivered');
    expect(first.receiver.received).toHaveLength(1);
  });

  it('sends pending deliveries again after a restart, from the files in the jobs directory', async () => {
    const first = await setup();
    first.receiver.fallback = 500;
    const job = await succeededJob(first.manager);
    await first.timers.set(750);
    await first.manager.close();
    const files = await readdir(join(first.directory, 'webhooks'));
    expect(files.filter((name) => name.endsWith('.tmp'))).toEqual([]);
    const [file] = files.filter((name) => /^whd_.*\.json$/.test(name));
    const stored = JSON.parse(await readFile(join(first.directory, 'webhooks', file ?? ''), 'utf8'));
    expect(stored).toMatchObject({ status: 'pending', attempts: 1, jobId: job.id, type: 'export.succeeded' });

    first.receiver.fallback = 204;
    const timers = new ManualTimers();
    const restarted = new ExportManager({
      directory: first.directory,
      metrics: false,
      now: () => first.clock.time + 750,
      datasets: { plain: plainDataset },
      webhooks: { endpoints: [{ url: first.receiver.url, secret: SECRET }], timers },
    });
    cleanup.push(() => restarted.close({ drainTimeoutMs: 0 }));
    await restarted.ready;
    // Due already: sent at once, with the same webhook-id.
    await first.receiver.requests(2);
    await until(restarted, job.id, (views) => views[0]?.status === 'delivered');
    expect(first.receiver.received[1]?.id).toBe(first.receiver.received[0]?.id);
    expect(first.receiver.processed.size).toBe(1);
  });

  it('a receiver that never answers holds neither an export slot nor the deliveries to other endpoints', async () => {
    const slow = await WebhookReceiver.start([SECRET]);
    cleanup.push(() => slow.close());
    slow.fallback = 'hang';
    const { manager, receiver, timers } = await setup({
      manager: { maxConcurrent: 1 },
      webhooks: { maxConcurrentPerEndpoint: 1 },
      endpoints: (fast) => [
        { name: 'slow', url: slow.url, secret: SECRET },
        { name: 'fast', url: fast.url, secret: SECRET },
      ],
    });
    const first = await succeededJob(manager);
    await slow.requests(1);
    // One slot, and the slow endpoint's attempt still in flight: jobs still run and the fast
    // endpoint gets every event.
    const second = await succeededJob(manager);
    const third = await succeededJob(manager);
    await receiver.requests(3);
    expect(receiver.received.map((webhook) => webhook.payload.data.job.id)).toEqual([
      first.id,
      second.id,
      third.id,
    ]);
    expect(slow.received).toHaveLength(1);
    const views = await until(manager, third.id, (views) => views[1]?.status === 'delivered');
    expect(views.map((view) => [view.endpoint, view.status])).toEqual([
      ['slow', 'pending'],
      ['fast', 'delivered'],
    ]);
    // Only the one attempt of the slow endpoint is in flight; its timeout ends it.
    expect(timers.delays()).toEqual([60_000]);
  });

  it('sends failed, cancelled, expired and (when asked) started events', async () => {
    const clockStart = Date.now();
    let now = clockStart;
    const { manager, receiver, gates } = await setup({
      manager: { now: () => now, retention: { maxAgeMs: 60_000 } },
      endpoints: (receiver) => [
        {
          url: receiver.url,
          secret: SECRET,
          events: [
            'export.started',
            'export.succeeded',
            'export.failed',
            'export.cancelled',
            'export.expired',
          ],
        },
      ],
    });
    manager.defineDataset('broken', {
      source: () => {
        throw new Error('the database is down');
      },
    });
    const failedJob = await manager.start({ dataset: 'broken', format: 'csv' });
    await manager.wait(failedJob.id);
    const cancelledJob = await manager.start({ dataset: 'gated', format: 'csv', params: { key: 'c' } });
    await gates.waiting('c');
    await manager.cancel(cancelledJob.id);
    const succeeded = await succeededJob(manager);
    now += 60_000;
    await manager.sweep();
    await receiver.requests(7);
    const types = receiver.received.map(
      (webhook) => `${webhook.payload.type} ${webhook.payload.data.job.id}`,
    );
    expect(types.sort()).toEqual(
      [
        `export.started ${cancelledJob.id}`,
        `export.cancelled ${cancelledJob.id}`,
        `export.started ${succeeded.id}`,
        `export.succeeded ${succeeded.id}`,
        `export.expired ${succeeded.id}`,
        `export.started ${failedJob.id}`,
        `export.failed ${failedJob.id}`,
      ].sort(),
    );
    const expired = receiver.received.find((webhook) => webhook.payload.type === 'export.expired');
    expect(expired?.payload.data.job).toMatchObject({ status: 'expired', links: { download: null } });
    const failure = receiver.received.find((webhook) => webhook.payload.type === 'export.failed');
    expect(failure?.payload.data.job).toMatchObject({ status: 'failed', error: { code: 'SOURCE_FAILED' } });
  });

  it('routes a job by its notify tag through endpointsFor, and never to an unknown endpoint', async () => {
    const tenant = await WebhookReceiver.start([NEW_SECRET]);
    cleanup.push(() => tenant.close());
    const warnings: string[] = [];
    const { manager, receiver, directory } = await setup({
      endpoints: (ops) => [
        { name: 'ops', url: ops.url, secret: SECRET },
        { name: 'tenant-a', url: tenant.url, secret: NEW_SECRET },
      ],
      webhooks: {
        endpointsFor: ({ notify }) => (notify === 'tenant-a' ? ['ops', 'tenant-a', 'nope'] : ['ops']),
      },
    });
    manager.on('warning', (message) => warnings.push(message));
    const tagged = await succeededJob(manager, { notify: 'tenant-a' });
    await tenant.requests(1);
    await receiver.requests(1);
    expect(tenant.received[0]?.payload.data).toMatchObject({ notify: 'tenant-a', job: { id: tagged.id } });
    expect(warnings).toEqual([expect.stringContaining('unknown endpoint "nope"')]);
    const plain = await succeededJob(manager);
    await receiver.requests(2);
    expect(receiver.received[1]?.payload.data.job.id).toBe(plain.id);
    expect(tenant.received).toHaveLength(1);
    // The tag is stored with the job, so that a later event (expired) still carries it.
    const manifest = JSON.parse(await readFile(join(directory, `${tagged.id}.json`), 'utf8'));
    expect(manifest.notify).toBe('tenant-a');
  });

  it('shows the deliveries on GET /export/jobs/:id as the OpenAPI document describes, and takes a notify tag but no URL', async () => {
    const { manager, receiver } = await setup();
    const server = await listen(createServer(toNodeHandler(createExportHandler(manager))));
    cleanup.push(() => server.close());
    const post = (body: unknown) =>
      fetch(`${server.url}/export/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const refused = await post({ dataset: 'plain', format: 'csv', notify: 'https://169.254.169.254/latest' });
    expect(refused.status).toBe(422);
    expect(await refused.json()).toMatchObject({ code: 'VALIDATION_FAILED', field: 'notify' });
    const unknown = await post({ dataset: 'plain', format: 'csv', webhookUrl: 'https://evil.example' });
    expect(unknown.status).toBe(400);

    const created = await post({ dataset: 'plain', format: 'csv', notify: 'ops' });
    expect(created.status).toBe(202);
    const { id } = (await created.json()) as { id: string };
    await receiver.requests(1);
    await until(manager, id, (views) => views[0]?.status === 'delivered');
    const response = await fetch(`${server.url}/export/jobs/${id}`);
    const job = (await response.json()) as Record<string, unknown>;
    assertMatchesSchema('Job', job);
    expect(job.notifications).toEqual([
      expect.objectContaining({
        type: 'export.succeeded',
        endpoint: 'default',
        status: 'delivered',
        attempts: 1,
      }),
    ]);
    // Never the endpoint's URL or secret.
    expect(JSON.stringify(job)).not.toContain(receiver.url);
    expect(JSON.stringify(job)).not.toContain('whsec_');
  });

  it('checks its options with a TypeError that names the bad one', () => {
    const make =
      (webhooks: unknown, extra: Partial<ExportManagerOptions> = { directory: '/tmp/unused' }) =>
      () =>
        new ExportManager({ metrics: false, ...extra, webhooks: webhooks as never });
    expect(make({ endpoints: [{ url: 'ftp://example.com', secret: SECRET }] })).toThrow(
      /webhooks\.endpoints\[0\]\.url to be an http: or https: URL/,
    );
    expect(make({ endpoints: [{ url: 'https://example.com', secret: 'not-a-secret' }] })).toThrow(
      /webhooks\.endpoints\[0\]\.secret to be "whsec_".*not shown/,
    );
    expect(make({ endpoints: [{ url: 'https://example.com', secret: 'whsec_c2hvcnQ=' }] })).toThrow(
      /at least 24 bytes/,
    );
    expect(make({ endpoints: [{ url: 'https://example.com' }] })).toThrow(/either secret or secrets/);
    expect(
      make({
        endpoints: [
          { url: 'https://a.example', secret: SECRET },
          { url: 'https://b.example', secret: SECRET },
        ],
      }),
    ).toThrow(/webhooks\.endpoints\[1\]\.name/);
    expect(
      make({ endpoints: [{ url: 'https://a.example', secret: SECRET, events: ['export.done'] }] }),
    ).toThrow(/events to be a non-empty array of export\.started/);
    expect(make({ endpoints: [], maxAttempts: 0 })).toThrow(
      /webhooks\.maxAttempts to be an integer from 1 to 100/,
    );
    expect(make({ endpoints: [] }, {})).toThrow(/Webhooks need jobs/);
  });

  it('has a local queue that runs due deliveries in order within the global and per-endpoint limits', async () => {
    const timers = new ManualTimers();
    let now = 0;
    const queue = new LocalWebhookDeliveryQueue({
      maxConcurrent: 2,
      maxConcurrentPerEndpoint: 1,
      now: () => now,
      timers,
    });
    const started: string[] = [];
    const finish = new Map<string, (next: number | undefined) => void>();
    queue.start(
      (id) =>
        new Promise((resolve) => {
          started.push(id);
          finish.set(id, resolve);
        }),
    );
    queue.schedule({ id: 'a1', endpoint: 'a' }, 0);
    queue.schedule({ id: 'a2', endpoint: 'a' }, 0);
    queue.schedule({ id: 'b1', endpoint: 'b' }, 0);
    queue.schedule({ id: 'c1', endpoint: 'c' }, 0);
    queue.schedule({ id: 'b1', endpoint: 'b' }, 0);
    expect(started).toEqual(['a1', 'b1']);
    expect(queue.waiting).toBe(2);
    finish.get('a1')?.(500);
    await new Promise((resolve) => setImmediate(resolve));
    // a2 is next in line and a's share is free again; a1 waits for its retry.
    expect(started).toEqual(['a1', 'b1', 'a2']);
    expect(timers.delays()).toEqual([500]);
    finish.get('b1')?.(undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual(['a1', 'b1', 'a2', 'c1']);
    now = 500;
    timers.fire(500);
    expect(started).toHaveLength(4);
    finish.get('a2')?.(undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual(['a1', 'b1', 'a2', 'c1', 'a1']);
    finish.get('c1')?.(undefined);
    finish.get('a1')?.(undefined);
    await queue.close();
    expect(queue.running).toBe(0);
  });

  it('keeps delivery records in files that a new store reads back, moving an unreadable one aside', async () => {
    const directory = await tempDir('spark-deliveries-');
    cleanup.push(() => removeDir(directory));
    const warnings: string[] = [];
    const store = new FileWebhookDeliveryStore(directory, { onWarning: (message) => warnings.push(message) });
    await store.open();
    const delivery: WebhookDelivery = {
      version: 1,
      id: 'whd_AAAAAAAAAAAAAAAAAAAAAA',
      eventId: 'msg_AAAAAAAAAAAAAAAAAAAAAA',
      type: 'export.succeeded',
      jobId: 'exp_AAAAAAAAAAAAAAAAAAAAAA',
      endpoint: 'default',
      payload: '{"type":"export.succeeded"}',
      status: 'pending',
      attempts: 0,
      createdAt: '2026-01-01T00:00:00.000Z',
      nextAttemptAt: '2026-01-01T00:00:00.000Z',
      lastAttemptAt: null,
      deliveredAt: null,
      lastStatusCode: null,
      lastError: null,
    };
    // Writes of one record land in call order: the last one wins on disk.
    void store.save(delivery);
    await store.save({ ...delivery, status: 'delivered', attempts: 1 });
    await store.setDisabled('gone', { url: 'https://gone.example/', at: '2026-01-01T00:00:00.000Z' });
    await writeFile(join(directory, 'whd_BBBBBBBBBBBBBBBBBBBBBB.json'), '{"version":1,');
    await writeFile(join(directory, 'whd_CCCCCCCCCCCCCCCCCCCCCC.json.0badc0de.tmp'), '{}');
    await store.close();

    const reopened = new FileWebhookDeliveryStore(directory, {
      onWarning: (message) => warnings.push(message),
    });
    await reopened.open();
    expect(await reopened.get(delivery.id)).toEqual({ ...delivery, status: 'delivered', attempts: 1 });
    expect(await reopened.pending()).toEqual([]);
    expect(await reopened.forJob(delivery.jobId)).toHaveLength(1);
    expect(await reopened.finishedBefore(Date.parse('2026-01-02T00:00:00.000Z'))).toHaveLength(1);
    expect(await reopened.disabledEndpoints()).toEqual(
      new Map([['gone', { url: 'https://gone.example/', at: '2026-01-01T00:00:00.000Z' }]]),
    );
    expect(warnings).toEqual([
      'Moved the unreadable webhook state whd_BBBBBBBBBBBBBBBBBBBBBB.json aside to whd_BBBBBBBBBBBBBBBBBBBBBB.json.corrupt',
    ]);
    expect((await readdir(directory)).sort()).toEqual([
      'endpoints.json',
      'whd_AAAAAAAAAAAAAAAAAAAAAA.json',
      'whd_BBBBBBBBBBBBBBBBBBBBBB.json.corrupt',
    ]);
    await reopened.remove(delivery.id);
    await reopened.close();
    expect(await readdir(directory)).not.toContain('whd_AAAAAAAAAAAAAAAAAAAAAA.json');
  });
});
