#!/usr/bin/env node
// What scaling out costs and gives (issue 11), in three parts, each a ratio within one run:
//
//  1. admission: the latency of a streamed export request (1 row, so admission and release
//     dominate) through core's HTTP handler, with the RedisLimiter against the local semaphore;
//     sequential requests, rounds interleaved, p50/p99 of all of them.
//  2. jobs/s: 240 jobs (2,000 SQLite rows each, CSV) through one sidecar replica, and through
//     three behind nginx (replicas.conf), on one redis-server (limit 5 in the cluster, a queue
//     so that nothing is refused), files in one shared directory; wall time and the replicas'
//     CPU time (from /proc).
//  3. a 1M-row CSV job into an S3 bucket (s3rver in its own process) against the same job into
//     the local directory; rounds interleaved, medians; CPU of this process (the exporter).
//
//   npm run build && node bench/scale-out.mjs [rounds]
//
// Needs redis-server and nginx (Debian packages), s3rver (a dev dependency). Everything on
// 127.0.0.1, temp dirs removed, every child stopped by its PID.
import { fork, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ROUNDS = Number(process.argv[2] ?? 3);

if (process.argv[2] === '--s3rver') {
  await runS3rver(process.argv[3]);
} else {
  await main();
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'spark-scale-bench-'));
  const stops = [];
  try {
    const redis = await startRedis(dir);
    stops.push(redis.stop);
    console.log(
      `node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${ROUNDS} rounds`,
    );
    await admission(redis);
    await jobsPerSecond(dir, redis);
    const s3 = await startS3rver(join(dir, 's3'));
    stops.push(s3.stop);
    await s3VersusDirectory(dir, s3);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

// 1. Admission latency ------------------------------------------------------------------------

async function admission(redisServer) {
  const { ExportManager } = await import('@spark-export/core');
  const { createExportHandler, toNodeHandler } = await import('@spark-export/core/http');
  const { RedisLimiter } = await import('@spark-export/bullmq');
  const { Redis } = await import('ioredis');
  const REQUESTS = 500;
  const redis = new Redis({ host: '127.0.0.1', port: redisServer.port });
  const variants = {
    'local semaphore': () => ({ maxConcurrent: 5 }),
    'Redis limiter': () => ({
      limiter: new RedisLimiter({ redis, limit: 5, prefix: `bench:${Date.now()}:` }),
    }),
  };
  const latencies = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    const names = Object.keys(variants);
    for (const name of round % 2 === 0 ? names : names.reverse()) {
      const manager = new ExportManager({ ...variants[name](), metrics: false });
      manager.defineDataset('one', {
        source: async function* () {
          yield { id: 1 };
        },
      });
      const server = createServer(toNodeHandler(createExportHandler(manager)));
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${server.address().port}/export/stream/one?format=csv`;
      for (let i = 0; i < 50; i++) await (await fetch(url)).text(); // warm-up
      for (let i = 0; i < REQUESTS; i++) {
        const started = performance.now();
        const response = await fetch(url);
        await response.text();
        if (response.status !== 200) throw new Error(`${name}: ${response.status}`);
        latencies[name].push(performance.now() - started);
      }
      await manager.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }
  redis.disconnect();
  console.log(`\n1. Stream request latency, 1-row CSV, ${REQUESTS} sequential requests x ${ROUNDS} rounds`);
  console.log('| limiter | p50 | p99 | p50 vs local |');
  console.log('| --- | ---: | ---: | ---: |');
  const base = percentile(latencies['local semaphore'], 50);
  for (const [name, values] of Object.entries(latencies)) {
    const p50 = percentile(values, 50);
    console.log(
      `| ${name} | ${p50.toFixed(2)} ms | ${percentile(values, 99).toFixed(2)} ms | +${(p50 - base).toFixed(2)} ms |`,
    );
  }
}

// 2. Jobs per second --------------------------------------------------------------------------

async function jobsPerSecond(dir, redis) {
  const JOBS = 240;
  const { default: Database } = await import('better-sqlite3');
  const database = join(dir, 'items.sqlite');
  const db = new Database(database);
  db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount REAL NOT NULL)');
  const insert = db.prepare('INSERT INTO items VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 1; i <= 2_000; i++) insert.run(i, `item ${i}`, i * 1.25);
  })();
  db.close();
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      datasets: { items: { source: { type: 'sqlite', database, query: 'SELECT * FROM items ORDER BY id' } } },
    }),
  );
  const results = { 'one replica': [], 'three replicas + nginx': [] };
  for (let round = 0; round < ROUNDS; round++) {
    const names = Object.keys(results);
    for (const name of round % 2 === 0 ? names : names.reverse()) {
      const count = name === 'one replica' ? 1 : 3;
      const shared = join(dir, `files-${round}-${count}`);
      mkdirSync(shared);
      // Each run starts on an empty Redis: no leases, no records of the run before.
      await redisCommand(redis.port, ['FLUSHALL']);
      const replicas = [];
      for (let i = 0; i < count; i++) {
        replicas.push(
          await startReplica(dir, {
            EXPORT_CONFIG: config,
            EXPORT_DIR: shared,
            EXPORT_REDIS_URL: redis.url,
            EXPORT_MAX_CONCURRENT: '5',
            EXPORT_MAX_QUEUED: '1000',
            EXPORT_RETENTION_HOURS: '0',
          }),
        );
      }
      const proxy =
        count === 1
          ? undefined
          : await startNginx(
              dir,
              replicas.map((replica) => replica.port),
            );
      const origin = proxy?.origin ?? replicas[0].origin;
      const cpuBefore = replicas.map((replica) => cpuSeconds(replica.pid));
      const started = performance.now();
      const ids = [];
      let sent = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (sent < JOBS) {
            sent++;
            const response = await fetch(`${origin}/export/jobs`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ dataset: 'items', format: 'csv' }),
            });
            const body = await response.json();
            if (response.status !== 202)
              throw new Error(`${name}: ${response.status} ${JSON.stringify(body)}`);
            ids.push(body.id);
          }
        }),
      );
      for (const id of ids) {
        for (;;) {
          const job = await (await fetch(`${origin}/export/jobs/${id}`)).json();
          if (job.status === 'succeeded') break;
          if (job.status !== 'queued' && job.status !== 'running')
            throw new Error(`${name}: job ${job.status}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      const seconds = (performance.now() - started) / 1000;
      const cpu = replicas.reduce(
        (sum, replica, index) => sum + cpuSeconds(replica.pid) - cpuBefore[index],
        0,
      );
      results[name].push({ jobsPerSecond: JOBS / seconds, cpuMsPerJob: (cpu * 1000) / JOBS });
      await proxy?.stop();
      for (const replica of replicas) await replica.stop();
    }
  }
  console.log(
    `\n2. Jobs/s: ${JOBS} jobs of 2,000 SQLite rows (CSV), limit 5 in the cluster, queue on, median of ${ROUNDS}`,
  );
  console.log('| through | jobs/s | replica CPU per job | vs one replica |');
  console.log('| --- | ---: | ---: | ---: |');
  const base = median(results['one replica'].map((run) => run.jobsPerSecond));
  for (const [name, runs] of Object.entries(results)) {
    const rate = median(runs.map((run) => run.jobsPerSecond));
    console.log(
      `| ${name} | ${rate.toFixed(1)} | ${median(runs.map((run) => run.cpuMsPerJob)).toFixed(1)} ms | ${(rate / base).toFixed(2)}x |`,
    );
  }
}

// 3. 1M rows to S3 against the local directory -------------------------------------------------

async function s3VersusDirectory(dir, s3) {
  const ROWS = 1_000_000;
  const { ExportManager } = await import('@spark-export/core');
  const { createS3Client, S3ExportStorage } = await import('@spark-export/s3');
  const client = createS3Client({
    endpoint: s3.endpoint,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  const s3Storage = (prefix) => {
    const storage = new S3ExportStorage({ client, bucket: 'exports', prefix });
    // s3rver has no ListMultipartUploads: skip the start-up orphan pass, which needs it.
    return new Proxy(storage, {
      get(target, property) {
        if (property === 'removeOrphans') return async () => [];
        const value = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  const rows = async function* () {
    for (let id = 1; id <= ROWS; id++) {
      yield {
        id,
        name: `customer ${id % 9973}`,
        email: `user${id}@example.com`,
        amount: (id % 100_000) / 100,
        active: id % 3 !== 0,
      };
    }
  };
  const results = { 'local directory': [], 'S3 (s3rver)': [] };
  for (let round = 0; round < ROUNDS; round++) {
    const names = Object.keys(results);
    for (const name of round % 2 === 0 ? names : names.reverse()) {
      const base = join(dir, `big-${round}-${name.startsWith('S3') ? 's3' : 'dir'}`);
      const manager = new ExportManager(
        name.startsWith('S3')
          ? { directory: base, storage: s3Storage(`r${round}/`), metrics: false }
          : { directory: base, metrics: false },
      );
      manager.defineDataset('big', { source: rows });
      await manager.ready;
      const cpu = process.cpuUsage();
      const started = performance.now();
      const job = await manager.start({ dataset: 'big', format: 'csv' });
      const done = await manager.wait(job.id);
      const ms = performance.now() - started;
      const used = process.cpuUsage(cpu);
      if (done.status !== 'succeeded')
        throw new Error(`${name}: ${done.status} ${JSON.stringify(done.error)}`);
      results[name].push({ ms, cpuMs: (used.user + used.system) / 1000, bytes: done.file.bytes });
      await manager.close();
    }
  }
  client.destroy();
  console.log(`\n3. A ${ROWS.toLocaleString('en')}-row CSV job, median of ${ROUNDS}`);
  console.log('| into | seconds | MB/s | exporter CPU s | vs local |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  const base = median(results['local directory'].map((run) => run.ms));
  for (const [name, runs] of Object.entries(results)) {
    const ms = median(runs.map((run) => run.ms));
    console.log(
      `| ${name} | ${(ms / 1000).toFixed(2)} | ${(runs[0].bytes / 1e6 / (ms / 1000)).toFixed(1)} | ${(median(runs.map((run) => run.cpuMs)) / 1000).toFixed(2)} | ${(base / ms).toFixed(2)}x |`,
    );
  }
}

// Helpers ------------------------------------------------------------------------------------

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function median(values) {
  return percentile(values, 50);
}

/** user + system CPU seconds of a process, from /proc/<pid>/stat (clock ticks of 1/100 s). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

async function startRedis(dir) {
  const port = await freePort();
  const child = spawn(
    'redis-server',
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
      '--maxmemory-policy',
      'noeviction',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (output.includes('Ready to accept connections')) resolve();
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code})`)));
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      process.kill(child.pid, 'SIGTERM');
      await exited(child);
    },
  };
}

/** One command over a plain socket (RESP), for FLUSHALL between runs. */
async function redisCommand(port, args) {
  const { connect } = await import('node:net');
  await new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () =>
      socket.write(
        `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`,
      ),
    );
    socket.once('data', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

async function startReplica(cwd, env) {
  const child = spawn(process.execPath, [join(ROOT, 'examples/sidecar/dist/server.js')], {
    cwd,
    env: {
      PATH: process.env.PATH,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      EXPORT_PROCESS_METRICS: 'false',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const origin = await new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk) => {
      buffered += chunk;
      const line = buffered.split('\n').find((text) => text.includes('"event":"listening"'));
      if (line) {
        child.stdout.off('data', onData);
        child.stdout.resume();
        resolve(JSON.parse(line).url.replace(/\/export$/, ''));
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => reject(new Error(`replica exited (${code})`)));
  });
  return {
    origin,
    port: Number(new URL(origin).port),
    pid: child.pid,
    async stop() {
      process.kill(child.pid, 'SIGTERM');
      await exited(child);
    },
  };
}

async function startNginx(dir, ports) {
  const prefix = mkdtempSync(join(dir, 'nginx-'));
  for (const sub of ['conf', 'logs', 'tmp']) mkdirSync(join(prefix, sub));
  let upstream = readFileSync(join(ROOT, 'examples/sidecar/nginx/replicas.conf'), 'utf8');
  ports.forEach((port, index) => {
    upstream = upstream.replace(`server 127.0.0.1:${4001 + index} `, `server 127.0.0.1:${port} `);
  });
  writeFileSync(join(prefix, 'conf', 'upstream.conf'), upstream);
  const port = await freePort();
  writeFileSync(
    join(prefix, 'conf', 'nginx.conf'),
    `daemon off; master_process off; worker_processes 1; pid ${prefix}/logs/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body; proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi; uwsgi_temp_path ${prefix}/tmp/uwsgi; scgi_temp_path ${prefix}/tmp/scgi;
  include ${prefix}/conf/upstream.conf;
  server { listen 127.0.0.1:${port}; include ${join(ROOT, 'examples/sidecar/nginx/export.conf')}; }
}
`,
  );
  const nginx = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
  const child = spawn(
    nginx,
    ['-p', `${prefix}/`, '-c', `${prefix}/conf/nginx.conf`, '-e', `${prefix}/logs/error.log`],
    {
      stdio: 'ignore',
    },
  );
  const origin = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    const ok = await fetch(`${origin}/export/status`).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) break;
    if (attempt > 100) throw new Error('nginx did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    origin,
    async stop() {
      process.kill(child.pid, 'SIGTERM');
      await exited(child);
    },
  };
}

async function startS3rver(directory) {
  mkdirSync(directory, { recursive: true });
  const child = fork(fileURLToPath(import.meta.url), ['--s3rver', directory], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const port = await new Promise((resolve, reject) => {
    child.once('message', (message) => resolve(message.port));
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
  });
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async stop() {
      process.kill(child.pid, 'SIGTERM');
      await exited(child);
    },
  };
}

/** The child of `startS3rver`: s3rver 3.7 with one bucket, in its own process (its CPU apart). */
async function runS3rver(directory) {
  const { default: S3rver } = await import('s3rver');
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: 'exports' }],
  });
  const { port } = await server.run();
  process.send({ port });
  process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
}
