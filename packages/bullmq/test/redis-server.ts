// A real redis-server for the tests: started on a free loopback port in a temp dir, stopped by
// its PID. As with the sidecar's PostgreSQL and nginx tests, a missing redis-server fails the
// tests in CI (CI set) and skips them locally.
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';

/** The path of redis-server, or `undefined` (skip) locally; in CI a missing one throws. */
export async function requireRedisServer(): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) {
    const candidate = join(dir, 'redis-server');
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  if (process.env.CI) {
    throw new Error('redis-server is not installed: apt-get install -y redis-server (.ci/run must)');
  }
  return undefined;
}

/** A port that was free on 127.0.0.1 a moment ago (redis-server cannot listen on port 0 and tell). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  port: number;
  /** A new client of this server; closed by `stop()` if the test did not close it. */
  client(options?: RedisOptions): Redis;
  /** Deletes every key, between tests. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts redis-server without persistence and waits until it answers PING. */
export async function startRedis(bin: string): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'spark-redis-'));
  const port = await freePort();
  const child: ChildProcess = spawn(
    bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const clients = new Set<Redis>();
  const client = (options: RedisOptions = {}) => {
    const redis = new Redis({ host: '127.0.0.1', port, ...options });
    clients.add(redis);
    return redis;
  };
  const stop = async () => {
    for (const redis of clients) redis.disconnect();
    if (child.exitCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    for (let attempt = 0; !(await answersPing(port)); attempt++) {
      if (child.exitCode !== null) throw new Error(`redis-server exited at start:\n${output}`);
      if (attempt >= 400) throw new Error(`redis-server did not answer PING:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const admin = client();

  return {
    port,
    client,
    flush: async () => {
      await admin.flushall();
    },
    stop,
  };
}

/** One PING over a plain socket: true once the server answers +PONG. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (answered: boolean) => {
      socket.destroy();
      resolve(answered);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

let prefixes = 0;
/** A key prefix of its own for each limiter or store under test, so tests share one server. */
export function uniquePrefix(): string {
  prefixes++;
  return `test-${process.pid}-${prefixes}:`;
}
