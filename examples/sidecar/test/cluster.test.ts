// Three sidecar replicas (child processes of the built server) sharing one redis-server and one
// S3 bucket (s3rver, in this process), behind real nginx with the shipped nginx/replicas.conf:
// round robin over the three, EXPORT_MAX_CONCURRENT=5 meaning five in the whole cluster.
// 200 job creations and 50 streamed exports go through nginx at once; every replica's
// /export/status is sampled meanwhile. Loopback only, temp dirs, every process stopped by PID.
// What needs the BullMQ job backend (a replica killed mid-job, a DELETE answered by another
// replica than the runner) is in cluster.kill.test.ts.
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cluster, counterSum, startCluster } from './cluster-support.js';
import { pollUntil, requireProgram } from './programs.js';

const nginx = await requireProgram('nginx', 'nginx', ['/usr/sbin', '/usr/local/sbin']);
const redisServer = await requireProgram('redis-server', 'redis-server', ['/usr/bin', '/usr/local/bin']);

const LIMIT = 5;
const ROWS = 2_000;
const JOBS = 200;
const STREAMS = 50;
/** Clients sending at once: enough to keep the cluster full, so that admission is contended. */
const CLIENTS = 24;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A fixed shuffle (a seeded LCG), so that a failure can be replayed in the same order. */
function shuffled<T>(items: T[], seed = 11): T[] {
  const result = [...items];
  let state = seed;
  for (let i = result.length - 1; i > 0; i--) {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    const j = state % (i + 1);
    [result[i], result[j]] = [result[j]!, result[i]!];
  }
  return result;
}

interface JobView {
  id: string;
  status: string;
  error: { code: string } | null;
  file: { name: string; bytes: number; sha256: string } | null;
}

describe.skipIf(nginx.skip || redisServer.skip)('three replicas behind nginx, one Redis, one bucket', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({
      nginx: nginx.path!,
      redisServer: redisServer.path!,
      limit: LIMIT,
      rows: ROWS,
    });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('reports the shared backends on every replica', async () => {
    for (const replica of cluster.replicas) {
      const body = await cluster.status(replica);
      expect(body).toMatchObject({ status: 'ok', limit: LIMIT });
      expect(body.backends).toMatchObject({ redis: { status: 'up' }, s3: { status: 'up' } });
    }
  });

  it('never runs more than five exports in the cluster; every refusal a 429 with a whole Retry-After; every file downloads from any replica', async () => {
    const { replicas, proxy, s3, status } = cluster;
    const plan = shuffled([
      ...Array.from({ length: JOBS }, () => 'job' as const),
      ...Array.from({ length: STREAMS }, () => 'stream' as const),
    ]);
    const acceptedJobs: string[] = [];
    let acceptedStreams = 0;
    let refused = 0;
    const unexpected: string[] = [];
    const retryAfters = new Set<string>();

    // Every replica's inFlight and the cluster's leases in Redis (ZCARD), asked at once. A
    // replica counts an export from the moment its lease is in Redis until it starts to give it
    // back, so at any one instant the three counts add up to at most the leases. Three answers
    // are never quite one instant, though: a slot given back on one replica and taken on another
    // between two of them is counted twice. That needs a release, two Redis round trips and a
    // new request, so it never lasts into the next round; an export running beyond the limit
    // would (each runs for many rounds). So a sum over the limit counts when the next round
    // confirms it.
    let sending = true;
    const sums: number[] = [];
    const leases: number[] = [];
    const redis = new Redis(cluster.redis.url);
    const sampler = (async () => {
      while (sending) {
        const [held, ...counts] = await Promise.all([
          redis.zcard('spark-export:limiter'),
          ...replicas.map(async (replica) => (await status(replica)).inFlight),
        ]);
        sums.push(counts.reduce((a, b) => a + b, 0));
        leases.push(held);
      }
    })();

    let next = 0;
    const client = async () => {
      while (next < plan.length) {
        const kind = plan[next++]!;
        if (kind === 'job') {
          const response = await fetch(`${proxy.origin}/export/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ dataset: 'items', format: 'csv' }),
          });
          const body = (await response.json()) as { id?: string; code?: string };
          if (response.status === 202) acceptedJobs.push(body.id!);
          else if (response.status === 429) {
            refused++;
            retryAfters.add(response.headers.get('retry-after') ?? 'missing');
            if (body.code !== 'BACKPRESSURE') unexpected.push(`job 429 with code ${body.code}`);
          } else unexpected.push(`job ${response.status} ${JSON.stringify(body)}`);
        } else {
          const response = await fetch(`${proxy.origin}/export/stream/items?format=csv`);
          const body = Buffer.from(await response.arrayBuffer());
          if (response.status === 200) {
            acceptedStreams++;
            const lines = body.toString('utf8').trimEnd().split('\n').length;
            if (lines !== ROWS + 1) unexpected.push(`stream of ${lines} lines, expected ${ROWS + 1}`);
          } else if (response.status === 429) {
            refused++;
            retryAfters.add(response.headers.get('retry-after') ?? 'missing');
          } else unexpected.push(`stream ${response.status} ${body.toString('utf8')}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));

    // The jobs accepted last are still running: wait for every one through nginx.
    const jobs = await Promise.all(
      acceptedJobs.map((id) =>
        pollUntil(
          `job ${id} to finish`,
          async () => {
            const job = (await (await fetch(`${proxy.origin}/export/jobs/${id}`)).json()) as JobView;
            return job.status === 'queued' || job.status === 'running' ? undefined : job;
          },
          { attempts: 1_200, intervalMs: 50 },
        ),
      ),
    );
    sending = false;
    await sampler;
    redis.disconnect();

    expect(unexpected).toEqual([]);
    expect(acceptedJobs.length + acceptedStreams + refused).toBe(JOBS + STREAMS);
    expect(acceptedJobs.length).toBeGreaterThan(0);
    expect(acceptedStreams).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    for (const value of retryAfters) expect(value).toMatch(/^[1-9][0-9]*$/);
    expect(sums.length).toBeGreaterThan(10);
    expect(Math.max(...leases)).toBeLessThanOrEqual(LIMIT);
    const overLimit = sums.filter((sum, round) => sum > LIMIT && (sums[round + 1] ?? 0) > LIMIT);
    expect(overLimit, `inFlight sums: ${sums.join(' ')}`).toEqual([]);
    // The cluster was full at some point, or the test proved nothing about the limit.
    expect(Math.max(...sums)).toBeGreaterThanOrEqual(LIMIT);

    expect(jobs.filter((job) => job.status !== 'succeeded')).toEqual([]);
    for (const job of jobs) {
      for (const replica of replicas) {
        const response = await fetch(`${replica.origin}/export/jobs/${job.id}/download`, {
          redirect: 'manual',
        });
        expect(response.status, `download of ${job.id} from ${replica.name}`).toBe(302);
        const location = response.headers.get('location')!;
        expect(location.startsWith(`${s3.endpoint}/${s3.bucket}/${cluster.prefix}`)).toBe(true);
        const file = Buffer.from(await (await fetch(location)).arrayBuffer());
        expect(file.length).toBe(job.file!.bytes);
        expect(sha256(file)).toBe(job.file!.sha256);
      }
    }

    const metrics = await Promise.all(
      replicas.map(async (replica) => (await fetch(`${replica.origin}/export/metrics`)).text()),
    );
    const sum = (name: string, labels?: Record<string, string>) =>
      metrics.reduce((total, text) => total + counterSum(text, name, labels), 0);
    expect(sum('export_jobs_started_total')).toBe(acceptedJobs.length + acceptedStreams);
    expect(sum('export_jobs_completed_total', { outcome: 'succeeded' })).toBe(
      acceptedJobs.length + acceptedStreams,
    );
    expect(sum('export_jobs_rejected_total')).toBe(refused);
    // Round robin: every replica answered its share (whether it found a free slot is chance).
    for (const text of metrics) {
      const answered =
        counterSum(text, 'export_jobs_started_total') + counterSum(text, 'export_jobs_rejected_total');
      expect(answered).toBeGreaterThan((JOBS + STREAMS) / 6);
    }

    // Nothing left behind in the bucket: one object per job, no partial upload.
    expect(await s3.openUploads()).toEqual([]);
  }, 240_000);
});
