import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebhookReceiver } from '../../../packages/core/test/webhook-receiver.js';
import type { SidecarConfig } from '../src/config.js';
import { demoConfig } from '../src/demo.js';
import {
  cleanEnv,
  DIST,
  removeDir,
  requireBuild,
  startTestSidecar,
  tempDir,
  waitForOutput,
} from './helpers.js';

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
const SERVER = join(DIST, 'server.js');

/** The demo with a small database of its own in `dir` (seeded at start in a moment). */
function smallDemo(): SidecarConfig {
  const config = demoConfig();
  config.demo = { database: './data/demo.sqlite', orders: 2_000, customers: 100 };
  return config;
}

interface Delivery {
  id: string;
  type: string;
  status: string;
  attempts: number;
  lastStatusCode: number | null;
}

interface JobView {
  id: string;
  status: string;
  notifications?: Delivery[];
}

/** Polls `GET /export/jobs/:id` until `done` holds for it. */
async function pollJob(url: string, done: (job: JobView) => boolean): Promise<JobView> {
  for (;;) {
    const job = (await (await fetch(url)).json()) as JobView;
    if (done(job)) return job;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('sidecar webhooks', () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  beforeAll(() => requireBuild());

  function startServer(dir: string, env: Record<string, string>): ChildProcess {
    const child = spawn(process.execPath, [SERVER], {
      cwd: dir,
      env: cleanEnv({ PORT: '0', EXPORT_DIR: join(dir, 'exports'), ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanup.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return child;
  }

  async function originOf(child: ChildProcess): Promise<string> {
    const banner = await waitForOutput(child, 'stderr', (text) => /Health: curl/.test(text));
    return /spark-export sidecar: (http:\/\/[^\s/]+)\/export/.exec(banner)![1]!;
  }

  it('fails twice (500, then no answer), is killed between attempts, and still delivers once after the restart', async () => {
    const dir = tempDir();
    cleanup.push(() => removeDir(dir));
    const receiver = await WebhookReceiver.start([SECRET]);
    cleanup.push(() => receiver.close());
    receiver.script.push(500, 'hang');
    const env = {
      EXPORT_WEBHOOK_URL: receiver.url,
      EXPORT_WEBHOOK_SECRET: SECRET,
      EXPORT_WEBHOOK_TIMEOUT_MS: '500',
      // The first retry comes 0.5 to 1 s after the 500: time enough to kill the sidecar before it.
      EXPORT_WEBHOOK_BACKOFF_MS: '1000',
    };

    writeFileSync(join(dir, 'spark-export.config.json'), JSON.stringify(smallDemo()));
    const first = startServer(dir, env);
    const origin = await originOf(first);
    const created = await fetch(`${origin}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'customers', format: 'csv' }),
    });
    expect(created.status).toBe(202);
    const { id } = (await created.json()) as { id: string };
    // Between attempts: the 500 is stored, the retry not yet made.
    const failedOnce = await pollJob(
      `${origin}/export/jobs/${id}`,
      (job) => job.notifications?.[0]?.attempts === 1,
    );
    expect(failedOnce.notifications?.[0]).toMatchObject({ status: 'pending', lastStatusCode: 500 });
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));

    const second = startServer(dir, env);
    const restarted = await originOf(second);
    const delivered = await pollJob(
      `${restarted}/export/jobs/${id}`,
      (job) => job.notifications?.[0]?.status === 'delivered',
    );
    // 500, no answer, 204. (Had the kill landed during the second attempt, that attempt would
    // not count, and the receiver would see it once more: at least once, never lost.)
    expect(delivered.notifications?.[0]?.attempts).toBeGreaterThanOrEqual(2);
    expect(receiver.rejected).toBe(0);
    expect(receiver.received.length).toBeGreaterThanOrEqual(3);
    expect(new Set(receiver.received.map((webhook) => webhook.id)).size).toBe(1);
    const succeeded = [...receiver.processed.values()].filter(
      (payload) => payload.type === 'export.succeeded',
    );
    expect(succeeded).toHaveLength(1);
    expect(succeeded[0]?.data.job).toMatchObject({
      id,
      status: 'succeeded',
      links: { self: `/export/jobs/${id}`, download: `/export/jobs/${id}/download` },
    });
  });

  it('stops sending to an endpoint that answers 410 Gone', async () => {
    const dir = tempDir();
    cleanup.push(() => removeDir(dir));
    const receiver = await WebhookReceiver.start([SECRET]);
    cleanup.push(() => receiver.close());
    receiver.fallback = 410;
    const sidecar = await startTestSidecar(smallDemo(), {
      baseDir: dir,
      env: { EXPORT_WEBHOOK_URL: receiver.url, EXPORT_WEBHOOK_SECRET: SECRET },
    });
    cleanup.push(() => sidecar.close());
    const start = async () => {
      const response = await fetch(sidecar.url('/export/jobs'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ dataset: 'customers', format: 'csv' }),
      });
      return ((await response.json()) as { id: string }).id;
    };
    const first = await start();
    await pollJob(
      sidecar.url(`/export/jobs/${first}`),
      (job) => job.notifications?.[0]?.status === 'disabled',
    );
    const second = await start();
    const job = await pollJob(
      sidecar.url(`/export/jobs/${second}`),
      (job) => job.notifications?.length === 1,
    );
    expect(job.notifications?.[0]).toMatchObject({ status: 'disabled', attempts: 0 });
    expect(receiver.received).toHaveLength(1);
    expect(sidecar.logs.lines.some((line) => String(line.msg).includes('410 Gone'))).toBe(true);
  });
});
