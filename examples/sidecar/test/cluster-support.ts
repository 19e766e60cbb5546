// What the cluster tests share: a redis-server that can be stopped and started again on its
// port, sidecar replicas as child processes of the built server (`dist/server.js`, as
// `npm start` runs it), and nginx in front of them with the shipped nginx/replicas.conf.
// Everything listens on 127.0.0.1 and lives in temp dirs; every process is stopped by its PID.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type FakeS3, startFakeS3 } from '../../../packages/s3/test/support/fake-s3.js';
import { cleanEnv, DIST, removeDir, requireBuild, SIDECAR_DIR, tempDir } from './helpers.js';
import {
  createItemsDatabase,
  freePort,
  type HeldUpstream,
  opsConfig,
  pollUntil,
  startHeldUpstream,
} from './programs.js';

/** A redis-server without persistence on a fixed loopback port, restartable on that port. */
export interface RedisProcess {
  port: number;
  url: string;
  /** Stops it (SIGTERM, by PID) and waits for the exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (after `stop()`). */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  destroy(): Promise<void>;
}

export async function startRedisProcess(bin: string): Promise<RedisProcess> {
  const dir = tempDir('spark-cluster-redis-');
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const start = async () => {
    let output = '';
    const server = spawn(
      bin,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        // What BullMQ and the limiter need (docs/scaling.md): never evict a key.
        '--maxmemory-policy',
        'noeviction',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    server.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    server.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child = server;
    exited = new Promise((resolve) => server.once('exit', () => resolve()));
    await pollUntil(
      'redis-server to accept connections',
      async () => {
        if (server.exitCode !== null) throw new Error(`redis-server exited at start:\n${output}`);
        return output.includes('Ready to accept connections') ? true : undefined;
      },
      { attempts: 400, intervalMs: 25 },
    );
  };
  const stop = async () => {
    if (child?.pid !== undefined && child.exitCode === null) {
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    async destroy() {
      await stop();
      removeDir(dir);
    },
  };
}

/** One sidecar process of the built server. */
export interface Replica {
  name: string;
  origin: string;
  port: number;
  pid: number;
  /** Its JSON log lines so far. */
  readonly logs: Record<string, unknown>[];
  /** Resolves once a log line with `event` has been written (`count` of them). */
  logged(event: string, count?: number): Promise<Record<string, unknown>>;
  /** SIGKILL by PID: the replica dies mid-work, as on a host crash or an OOM kill. */
  kill(): Promise<void>;
  /** SIGTERM by PID and wait (a drain); SIGKILL after 20 s. */
  stop(): Promise<void>;
}

export async function startReplica(name: string, env: Record<string, string>, cwd: string): Promise<Replica> {
  const child = spawn(process.execPath, [join(DIST, 'server.js')], {
    cwd,
    env: cleanEnv({ PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters: { event: string; count: number; resolve: (line: Record<string, unknown>) => void }[] = [];
  let buffered = '';
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const text of lines) {
      if (!text.trim()) continue;
      const line = JSON.parse(text) as Record<string, unknown>;
      logs.push(line);
      for (const waiter of [...waiters]) {
        if (logs.filter((seen) => seen.event === waiter.event).length >= waiter.count) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const logged = (event: string, count = 1) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const seen = logs.filter((line) => line.event === event);
      if (seen.length >= count) return resolve(seen[count - 1]!);
      waiters.push({ event, count, resolve });
      void exited.then(() => reject(new Error(`replica ${name} exited before logging ${event}:\n${stderr}`)));
    });
  const listening = await logged('listening');
  const origin = String(listening.url).replace(/\/export$/, '');
  return {
    name,
    origin,
    port: Number(new URL(origin).port),
    pid: child.pid!,
    logs,
    logged,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(child.pid!, 'SIGTERM');
      const timer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      }, 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface RunningNginx {
  origin: string;
  stop(): Promise<void>;
}

/** Replaces exactly one occurrence: the shipped file must still have the line this relies on. */
function substituteOnce(text: string, search: string, replacement: string): string {
  const count = text.split(search).length - 1;
  if (count !== 1) throw new Error(`Expected exactly one "${search}" in the nginx file, found ${count}`);
  return text.replace(search, replacement);
}

/**
 * nginx in the foreground with the shipped nginx/replicas.conf (its three `server` lines
 * pointed at `ports`) and export.conf as they are, everything it writes in a temp prefix.
 */
export async function startNginxCluster(nginx: string, ports: readonly number[]): Promise<RunningNginx> {
  let upstream = readFileSync(join(SIDECAR_DIR, 'nginx', 'replicas.conf'), 'utf8');
  const shipped = [4001, 4002, 4003];
  if (ports.length !== shipped.length) throw new Error(`Expected ${shipped.length} replica ports`);
  ports.forEach((port, index) => {
    upstream = substituteOnce(upstream, `server 127.0.0.1:${shipped[index]} `, `server 127.0.0.1:${port} `);
  });
  const prefix = tempDir('spark-cluster-nginx-');
  for (const sub of ['conf', 'logs', 'tmp']) mkdirSync(join(prefix, sub));
  writeFileSync(join(prefix, 'conf', 'upstream.conf'), upstream);
  writeFileSync(
    join(prefix, 'conf', 'export.conf'),
    readFileSync(join(SIDECAR_DIR, 'nginx', 'export.conf'), 'utf8'),
  );
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    writeFileSync(
      join(prefix, 'conf', 'nginx.conf'),
      [
        'daemon off;',
        'master_process off;',
        'worker_processes 1;',
        `pid ${prefix}/logs/nginx.pid;`,
        `error_log ${prefix}/logs/error.log warn;`,
        'events { worker_connections 1024; }',
        'http {',
        '    default_type application/octet-stream;',
        `    access_log ${prefix}/logs/access.log;`,
        `    client_body_temp_path ${prefix}/tmp/body;`,
        `    proxy_temp_path ${prefix}/tmp/proxy;`,
        `    fastcgi_temp_path ${prefix}/tmp/fastcgi;`,
        `    uwsgi_temp_path ${prefix}/tmp/uwsgi;`,
        `    scgi_temp_path ${prefix}/tmp/scgi;`,
        `    include ${prefix}/conf/upstream.conf;`,
        '    server {',
        `        listen 127.0.0.1:${port};`,
        '        server_name localhost;',
        `        include ${prefix}/conf/export.conf;`,
        '    }',
        '}',
        '',
      ].join('\n'),
    );
    const child = spawn(
      nginx,
      ['-p', `${prefix}/`, '-c', `${prefix}/conf/nginx.conf`, '-e', `${prefix}/logs/error.log`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const origin = `http://127.0.0.1:${port}`;
    const up = await pollUntil(
      'nginx to answer',
      async () => {
        if (child.exitCode !== null) return false;
        const response = await fetch(`${origin}/export/status`);
        return response.status === 200 ? true : undefined;
      },
      { attempts: 100, intervalMs: 50 },
    ).catch(() => false);
    if (up) {
      return {
        origin,
        async stop() {
          if (child.exitCode === null) process.kill(child.pid!, 'SIGTERM');
          await exited;
          removeDir(prefix);
        },
      };
    }
    lastError = stderr;
    if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
    await exited;
  }
  removeDir(prefix);
  throw new Error(`nginx did not start: ${lastError}`);
}

/** Sums a counter of a Prometheus text exposition over the series whose labels match. */
export function counterSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match || !match[1]!.endsWith(name)) continue;
    const series = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    if (Object.entries(labels).every(([key, value]) => series[key] === value)) sum += Number(match[3]);
  }
  return sum;
}

export interface Cluster {
  dir: string;
  redis: RedisProcess;
  s3: FakeS3;
  /** The upstream of the `held` dataset: its exports run until the test releases them. */
  held: HeldUpstream;
  replicas: Replica[];
  proxy: RunningNginx;
  /** The key prefix of the job files in `s3.bucket`. */
  prefix: string;
  /** Every replica's `/export/status`. */
  status(replica: Replica): Promise<ClusterStatus>;
  stop(): Promise<void>;
}

export interface ClusterStatus {
  status: string;
  inFlight: number;
  queued: number;
  limit: number;
  backends: Record<string, { status: string; error?: string }>;
}

/**
 * Three replicas of the built server on one redis-server and one bucket, with the datasets of
 * `opsConfig` (`items` of `rows` rows, `broken`, `held`), behind nginx (replicas.conf).
 */
export async function startCluster(options: {
  nginx: string;
  redisServer: string;
  limit: number;
  rows: number;
  held?: Parameters<typeof startHeldUpstream>[0];
  /** `EXPORT_JOB_QUEUE` of every replica. @default 'local' */
  jobQueue?: 'local' | 'bullmq';
}): Promise<Cluster> {
  requireBuild();
  const dir = tempDir('spark-cluster-');
  const stops: (() => Promise<void>)[] = [async () => removeDir(dir)];
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch(() => {});
  };
  try {
    createItemsDatabase(join(dir, 'items.sqlite'), options.rows);
    const held = await startHeldUpstream(options.held);
    stops.push(async () => {
      held.release();
      await held.close();
    });
    writeFileSync(
      join(dir, 'spark-export.config.json'),
      JSON.stringify(opsConfig(join(dir, 'items.sqlite'), held.url)),
    );
    const redis = await startRedisProcess(options.redisServer);
    stops.push(() => redis.destroy());
    const s3 = await startFakeS3();
    stops.push(() => s3.stop());
    const prefix = 'cluster/';
    const env = {
      EXPORT_CONFIG: join(dir, 'spark-export.config.json'),
      EXPORT_MAX_CONCURRENT: String(options.limit),
      EXPORT_REDIS_URL: redis.url,
      EXPORT_JOB_QUEUE: options.jobQueue ?? 'local',
      EXPORT_S3_BUCKET: s3.bucket,
      EXPORT_S3_ENDPOINT: s3.endpoint,
      EXPORT_S3_PREFIX: prefix,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      EXPORT_PROCESS_METRICS: 'false',
      EXPORT_DRAIN_TIMEOUT_MS: '2000',
    };
    const replicas: Replica[] = [];
    stops.push(async () => {
      await Promise.all(replicas.map((replica) => replica.stop()));
    });
    // One after another: each start removes orphans under the prefix, before any work exists.
    for (const name of ['a', 'b', 'c']) {
      replicas.push(await startReplica(name, { ...env, EXPORT_DIR: join(dir, name) }, dir));
    }
    const proxy = await startNginxCluster(
      options.nginx,
      replicas.map((replica) => replica.port),
    );
    stops.push(() => proxy.stop());
    return {
      dir,
      redis,
      s3,
      held,
      replicas,
      proxy,
      prefix,
      status: async (replica) =>
        (await (await fetch(`${replica.origin}/export/status`)).json()) as ClusterStatus,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * The replica that started job `id` most recently (its `job:started` log line), once one has:
 * with a shared queue any replica may run a job, whichever one answered its POST.
 */
export async function runnerOf(cluster: Cluster, id: string): Promise<Replica> {
  return pollUntil(
    `a replica to start job ${id}`,
    async () => {
      let runner: Replica | undefined;
      let latest = '';
      for (const replica of cluster.replicas) {
        for (const line of replica.logs) {
          if (line.event === 'job:started' && line.jobId === id && String(line.time) >= latest) {
            latest = String(line.time);
            runner = replica;
          }
        }
      }
      return runner;
    },
    { attempts: 200, intervalMs: 25 },
  );
}
