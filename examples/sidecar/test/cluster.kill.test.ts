// The cluster of cluster.test.ts (three replicas, one redis-server, one bucket, nginx) when work
// has to cross replicas: a DELETE answered by another replica than the one running the job,
// and a replica killed (SIGKILL) in the middle of a job. Both rely on the BullMQ job backend
// (cancellation through Redis, stalled-job recovery by BullMQ's locks); the expectations are
// the documented ones (docs/scaling.md, "Failure modes").
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type Cluster, type Replica, runnerOf, startCluster } from './cluster-support.js';
import { pollUntil, requireProgram } from './programs.js';

const nginx = await requireProgram('nginx', 'nginx', ['/usr/sbin', '/usr/local/sbin']);
const redisServer = await requireProgram('redis-server', 'redis-server', ['/usr/bin', '/usr/local/bin']);

interface JobView {
  id: string;
  status: string;
  error: { code: string } | null;
  file: { bytes: number; sha256: string } | null;
}

describe.skipIf(nginx.skip || redisServer.skip)('three replicas: work that crosses replicas', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({
      nginx: nginx.path!,
      redisServer: redisServer.path!,
      limit: 5,
      rows: 1_000,
      // Taking over a dead replica's job and cancelling across replicas are the BullMQ backend's.
      jobQueue: 'bullmq',
      // 10 MB before the hold: more than one 8 MiB part, so a multipart upload is open when the
      // export stops to wait.
      held: { before: 10_000, after: 10, padding: 1_000 },
    });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  /** The published objects (not `.partial/`) of job `id`. */
  const objectsOf = async (id: string): Promise<string[]> => {
    const listed = await cluster.s3.client.send(
      new ListObjectsV2Command({ Bucket: cluster.s3.bucket, Prefix: `${cluster.prefix}${id}.` }),
    );
    return (listed.Contents ?? []).map((object) => object.Key!);
  };

  const createHeldJob = async (): Promise<string> => {
    const response = await fetch(`${cluster.proxy.origin}/export/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ dataset: 'held', format: 'ndjson' }),
    });
    expect(response.status).toBe(202);
    return ((await response.json()) as { id: string }).id;
  };

  const finished = (origin: string, id: string, attempts: number) =>
    pollUntil(
      `job ${id} to finish`,
      async () => {
        const job = (await (await fetch(`${origin}/export/jobs/${id}`)).json()) as JobView;
        return job.status === 'queued' || job.status === 'running' ? undefined : job;
      },
      { attempts, intervalMs: 50 },
    );

  it('cancels a job through a different replica than the one running it, within about a second', async () => {
    const before = cluster.held.requests;
    const id = await createHeldJob();
    await cluster.held.waitForRequests(before + 1);
    const runner = await runnerOf(cluster, id);
    const other = cluster.replicas.find((replica) => replica !== runner)!;

    const cancelled = await fetch(`${other.origin}/export/jobs/${id}`, { method: 'DELETE' });
    // Whatever happens next, the held export must not outlive this test.
    onTestFinished(() => cluster.held.release());
    expect([200, 202, 204]).toContain(cancelled.status);
    await pollUntil(
      'the runner to stop the export and give its slot back',
      async () => ((await cluster.status(runner)).inFlight === 0 ? true : undefined),
      { attempts: 30, intervalMs: 50 },
    );
    cluster.held.release();
    // DELETE cancels and forgets the job: every replica answers 404 for it from now on.
    for (const replica of cluster.replicas) {
      expect((await fetch(`${replica.origin}/export/jobs/${id}`)).status).toBe(404);
    }
    expect(await objectsOf(id)).toEqual([]);
    await pollUntil(
      'no multipart upload left open',
      async () => ((await cluster.s3.openUploads()).length === 0 ? true : undefined),
      { attempts: 100, intervalMs: 50 },
    );
  });

  it('a replica killed mid-job: the job ends succeeded (with one object) or failed (with none), no upload stays open, the survivors serve', async () => {
    // Starts from an idle cluster, whatever the test before left running.
    cluster.held.release();
    for (const replica of cluster.replicas) {
      await pollUntil(
        `${replica.name} to be idle`,
        async () => ((await cluster.status(replica)).inFlight === 0 ? true : undefined),
        { attempts: 200, intervalMs: 50 },
      );
    }
    const id = await createHeldJob();
    await cluster.s3.partsStored(1, `${cluster.prefix}.partial/`);
    const runner: Replica = await runnerOf(cluster, id);
    await runner.kill();
    // From now on every run of the held dataset may finish: a re-run by a survivor completes.
    const releaser = setInterval(() => cluster.held.release(), 50);
    try {
      const survivors = cluster.replicas.filter((replica) => replica !== runner);
      for (const survivor of survivors) {
        expect((await fetch(`${survivor.origin}/export/status`)).status).toBe(200);
      }
      // Through nginx, several times so that round robin reaches the dead replica's turn.
      for (let attempt = 0; attempt < 6; attempt++) {
        const response = await fetch(`${cluster.proxy.origin}/export/stream/items?format=csv`);
        expect(response.status).toBe(200);
        expect((await response.text()).trimEnd().split('\n')).toHaveLength(1_001);
      }

      const job = await finished(survivors[0]!.origin, id, 1_200);
      expect(['succeeded', 'failed']).toContain(job.status);
      const objects = await objectsOf(id);
      if (job.status === 'succeeded') {
        expect(objects).toHaveLength(1);
        const download = await fetch(`${survivors[1]!.origin}/export/jobs/${id}/download`);
        expect(download.status).toBe(200);
        expect(Buffer.from(await download.arrayBuffer()).length).toBe(job.file!.bytes);
      } else {
        expect(objects).toEqual([]);
      }
      await pollUntil(
        'no multipart upload left open',
        async () => ((await cluster.s3.openUploads()).length === 0 ? true : undefined),
        { attempts: 600, intervalMs: 50 },
      );
    } finally {
      clearInterval(releaser);
    }
  }, 120_000);
});
