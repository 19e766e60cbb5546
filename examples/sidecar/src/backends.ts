// Where the sidecar keeps its shared state: the export limit, the job records and the job files.
// Everything that differs between one process and several replicas is decided here, in
// `createBackends`, so that a new backend (the BullMQ job runner) plugs in at one place.
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { BullJobEventFeed, BullJobQueue, RedisJobStore, RedisLimiter } from '@spark-export/bullmq';
import {
  type ExportManagerOptions,
  type ExportStorage,
  FileJobStore,
  type JobEventFeed,
  type JobQueue,
  type JobStore,
  type Limiter,
  LocalExportStorage,
} from '@spark-export/core';
import { createS3Client, S3ExportStorage } from '@spark-export/s3';
import { Redis } from 'ioredis';
import { Gauge, type Registry } from 'prom-client';
import { ConfigError, type SidecarConfig } from './config.js';
import { redactUrl, type SidecarSettings } from './env.js';
import type { Logger } from './logging.js';

export type BackendName = 'redis' | 's3';

/** One shared backend as `/export/status` shows it. */
export interface BackendState {
  name: BackendName;
  /** What it is, without secrets: the Redis URL without its password, `s3://bucket/prefix`. */
  target: string;
  up: boolean;
  /** The last error while it is down. */
  error?: string;
  /** Epoch milliseconds of the last change between up and down. */
  since: number;
}

/** How the shared state is laid out, for the start-up log line and the docs. */
export interface BackendMode {
  /** `cluster`: one limit across every replica on the Redis; `process`: this process's own. */
  limit: 'process' | 'cluster';
  /** Where job records live. */
  jobs: 'directory' | 'redis';
  /** Where job files live. */
  files: 'directory' | 's3';
}

export interface Backends {
  mode: BackendMode;
  /** Spread into `new ExportManager({...})`. */
  managerOptions: Pick<
    ExportManagerOptions,
    'directory' | 'store' | 'storage' | 'limiter' | 'maxConcurrent' | 'jobQueue' | 'events'
  >;
  /** Every shared backend (none in directory mode), up or down. */
  states(): BackendState[];
  /** True when new jobs cannot be accepted: Redis or S3 is down. */
  jobsBlocked(): boolean;
  /** True when new streams cannot be admitted: the Redis of the limiter is down. */
  streamsBlocked(): boolean;
  /** After `manager.close()`: the last lease releases reach Redis, then the connections close. */
  close(): Promise<void>;
}

export interface CreateBackendsOptions {
  logger: Logger;
  /** For the `export_backend_up` gauge. */
  registry?: Registry;
  /** `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** How often S3 is probed (HeadBucket) while the sidecar runs. @default 5000 */
  healthIntervalMs?: number;
  /** Longest wait for Redis and the bucket at start-up. @default 5000 */
  connectTimeoutMs?: number;
}

const DEFAULT_REDIS_PREFIX = 'spark-export:';
const DEFAULT_S3_PREFIX = 'exports/';

interface S3Settings {
  bucket: string;
  endpoint: string | undefined;
  region: string | undefined;
  forcePathStyle: boolean | undefined;
  prefix: string;
}

/**
 * The shared backends the settings ask for, connected and checked: with `EXPORT_REDIS_URL` a
 * `RedisLimiter` and a `RedisJobStore` (files in `EXPORT_DIR`, which every replica must then
 * share, unless S3 is configured); with `EXPORT_S3_BUCKET` an `S3ExportStorage`. Neither: the
 * manager's own directory mode, exactly as before.
 *
 * @throws {ConfigError} when the settings contradict each other (an S3 field without a bucket, half a credential pair)
 * @throws {Error} naming the variable when Redis or the bucket cannot be reached
 */
export async function createBackends(
  settings: SidecarSettings,
  config: SidecarConfig,
  options: CreateBackendsOptions,
): Promise<Backends> {
  const { logger } = options;
  const env = options.env ?? process.env;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
  const redisUrl = settings.redisUrl ?? config.redis?.url;
  const redisPrefix = config.redis?.prefix ?? DEFAULT_REDIS_PREFIX;
  const s3 = resolveS3(settings, config);
  const credentials = resolveCredentials(env, s3);

  if (redisUrl === undefined && s3 === undefined) {
    return {
      mode: { limit: 'process', jobs: 'directory', files: 'directory' },
      managerOptions: { directory: settings.exportDir, maxConcurrent: settings.maxConcurrent },
      states: () => [],
      jobsBlocked: () => false,
      streamsBlocked: () => false,
      close: async () => {},
    };
  }

  const states = new Map<BackendName, BackendState>();
  const track = (name: BackendName, target: string) => {
    const state: BackendState = { name, target, up: true, since: Date.now() };
    states.set(name, state);
    return (up: boolean, error?: unknown) => {
      const message = error === undefined ? undefined : errorMessage(error);
      if (state.up === up) {
        if (!up && message !== undefined) state.error = message;
        return;
      }
      state.up = up;
      state.since = Date.now();
      if (up) {
        delete state.error;
        logger.info({ event: 'backend:up', backend: name, target }, `${name} is reachable again`);
      } else {
        if (message !== undefined) state.error = message;
        logger.error(
          { event: 'backend:down', backend: name, target, error: message },
          `${name} cannot be reached (${target}): ${jobsWord(name)}`,
        );
      }
    };
  };

  let redis: Redis | undefined;
  let limiter: RedisLimiter | undefined;
  let jobQueue: JobQueue | undefined;
  let events: JobEventFeed | undefined;
  let store: JobStore;
  let storage: ExportStorage;
  let s3Client: S3Client | undefined;
  let probe: NodeJS.Timeout | undefined;
  const closers: (() => Promise<void>)[] = [];

  try {
    if (redisUrl !== undefined) {
      const target = redactUrl(redisUrl);
      const variable = settings.redisUrl !== undefined ? 'EXPORT_REDIS_URL' : 'redis.url in the config file';
      redis = new Redis(redisUrl, {
        lazyConnect: true,
        connectTimeout: connectTimeoutMs,
        // While Redis is away commands fail at once instead of queueing: an export request is
        // answered (503 from the guard, or a failed admission) rather than left hanging.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
      });
      const connection = redis;
      const setRedis = track('redis', target);
      // Every connection error is an 'error' event; without a listener ioredis prints each.
      // connect() itself only rejects with "Connection is closed": the cause is the event's.
      let lastError: unknown;
      connection.on('error', (error: unknown) => {
        lastError = error;
        setRedis(false, error);
      });
      connection.on('close', () => setRedis(false));
      connection.on('ready', () => setRedis(true));
      try {
        await connection.connect();
        await connection.ping();
      } catch (error) {
        connection.disconnect();
        const cause = lastError ?? error;
        throw new Error(`Cannot reach Redis at ${variable} (${target}): ${errorMessage(cause)}`, { cause });
      }
      const warnings = rateLimitedLog(logger, 'limiter:error', 'the Redis limiter failed a round trip');
      limiter = new RedisLimiter({
        redis: connection,
        limit: settings.maxConcurrent,
        prefix: redisPrefix,
        onLeaseLost: (error) =>
          logger.error(
            { event: 'limiter:lease-lost', err: error },
            'an export lost its cluster-wide slot and is being ended',
          ),
        onError: warnings,
      });
      store = new RedisJobStore({
        redis: connection,
        prefix: redisPrefix,
        onWarning: (message, cause) => logger.warn({ event: 'store:warning', err: cause }, message),
      });
      let bullRedis: Redis | undefined;
      let feed: BullJobEventFeed | undefined;
      if (settings.jobQueue === 'bullmq') {
        // Jobs are BullMQ jobs: any replica's worker runs a stored job (taking its slot from the
        // same limiter), a job whose replica died is taken over, a cancel reaches the replica that
        // runs it, one retention sweep runs for the cluster. BullMQ's connections must queue
        // commands while Redis is away and retry forever (its blocking reads), unlike the
        // limiter's fail-fast one: they get a client of their own (the queue and the feed
        // duplicate it with `maxRetriesPerRequest: null`).
        bullRedis = new Redis(redisUrl, { maxRetriesPerRequest: null, connectTimeout: connectTimeoutMs });
        bullRedis.on('error', () => {});
        const bullErrors = rateLimitedLog(logger, 'jobs:error', 'the BullMQ job queue failed a Redis call');
        jobQueue = new BullJobQueue({
          redis: bullRedis,
          concurrency: settings.maxConcurrent,
          prefix: redisPrefix,
          onError: bullErrors,
        });
        feed = new BullJobEventFeed({
          redis: bullRedis,
          store,
          prefix: redisPrefix,
          onError: bullErrors,
        });
        events = feed;
      }
      const heldLimiter = limiter;
      const heldBull = bullRedis;
      const heldFeed = feed;
      closers.push(async () => {
        // After manager.close() (which closed the queue): the feed, then the limiter's last releases.
        await heldFeed?.close().catch(() => {});
        await Promise.race([heldLimiter.drained(), delay(5_000)]);
        await heldBull?.quit().catch(() => heldBull.disconnect());
        await connection.quit().catch(() => connection.disconnect());
      });
    } else {
      store = new FileJobStore(settings.exportDir);
    }

    if (s3 !== undefined) {
      const target = `s3://${s3.bucket}/${s3.prefix}`;
      const client =
        s3.endpoint === undefined
          ? new S3Client({
              ...(s3.region === undefined ? {} : { region: s3.region }),
              ...(s3.forcePathStyle === undefined ? {} : { forcePathStyle: s3.forcePathStyle }),
              ...(credentials === undefined ? {} : { credentials }),
            })
          : createS3Client({
              endpoint: s3.endpoint,
              ...(s3.region === undefined ? {} : { region: s3.region }),
              ...(s3.forcePathStyle === undefined ? {} : { forcePathStyle: s3.forcePathStyle }),
              ...(credentials === undefined ? {} : { credentials }),
            });
      s3Client = client;
      const headBucket = () =>
        client.send(new HeadBucketCommand({ Bucket: s3.bucket }), {
          abortSignal: AbortSignal.timeout(connectTimeoutMs),
        });
      try {
        await headBucket();
      } catch (error) {
        const where = s3.endpoint === undefined ? 'AWS S3' : redactUrl(s3.endpoint);
        throw new Error(
          `Cannot reach the bucket ${JSON.stringify(s3.bucket)} of EXPORT_S3_BUCKET at ${where}: ${s3ErrorMessage(error)}`,
          { cause: error },
        );
      }
      const setS3 = track('s3', target);
      // Nothing tells a client that S3 went away until a request fails: probe it.
      let probing = false;
      probe = setInterval(() => {
        if (probing) return;
        probing = true;
        headBucket()
          .then(
            () => setS3(true),
            (error: unknown) => setS3(false, s3ErrorMessage(error)),
          )
          .finally(() => {
            probing = false;
          });
      }, options.healthIntervalMs ?? 5_000);
      probe.unref();
      storage = new S3ExportStorage({ client, bucket: s3.bucket, prefix: s3.prefix });
      closers.push(async () => client.destroy());
    } else {
      storage = new LocalExportStorage(settings.exportDir);
    }
  } catch (error) {
    if (probe) clearInterval(probe);
    redis?.disconnect();
    s3Client?.destroy();
    throw error;
  }

  if (options.registry) {
    new Gauge({
      name: 'export_backend_up',
      help: 'Whether a shared backend (redis, s3) answered its last check: 1 up, 0 down.',
      labelNames: ['backend'],
      registers: [options.registry],
      collect() {
        for (const state of states.values()) this.set({ backend: state.name }, state.up ? 1 : 0);
      },
    });
  }

  const isDown = (name: BackendName) => states.get(name)?.up === false;
  const managerOptions: Backends['managerOptions'] = {
    store,
    storage,
    ...(limiter === undefined ? { maxConcurrent: settings.maxConcurrent } : { limiter: limiter as Limiter }),
    ...(jobQueue === undefined ? {} : { jobQueue }),
    ...(events === undefined ? {} : { events }),
  };
  return {
    mode: {
      limit: limiter === undefined ? 'process' : 'cluster',
      jobs: redis === undefined ? 'directory' : 'redis',
      files: s3 === undefined ? 'directory' : 's3',
    },
    managerOptions,
    states: () => [...states.values()].map((state) => ({ ...state })),
    jobsBlocked: () => isDown('redis') || isDown('s3'),
    streamsBlocked: () => isDown('redis'),
    async close() {
      if (probe) clearInterval(probe);
      for (const close of closers) await close();
    },
  };
}

function resolveS3(settings: SidecarSettings, config: SidecarConfig): S3Settings | undefined {
  const file = config.s3 ?? {};
  const bucket = settings.s3Bucket ?? file.bucket;
  const fields: [string, unknown][] = [
    ['EXPORT_S3_ENDPOINT', settings.s3Endpoint ?? file.endpoint],
    ['EXPORT_S3_REGION', settings.s3Region ?? file.region],
    ['EXPORT_S3_FORCE_PATH_STYLE', settings.s3ForcePathStyle ?? file.forcePathStyle],
    ['EXPORT_S3_PREFIX', settings.s3Prefix ?? file.prefix],
  ];
  if (bucket === undefined) {
    const set = fields.filter(([, value]) => value !== undefined).map(([name]) => name);
    if (set.length === 0) return undefined;
    throw new ConfigError('Invalid environment', [
      `Expected EXPORT_S3_BUCKET (or s3.bucket in the config file) to be set too: ${set.join(', ')} ${set.length === 1 ? 'does' : 'do'} nothing without a bucket`,
    ]);
  }
  return {
    bucket,
    endpoint: settings.s3Endpoint ?? file.endpoint,
    region: settings.s3Region ?? file.region,
    forcePathStyle: settings.s3ForcePathStyle ?? file.forcePathStyle,
    prefix: settings.s3Prefix ?? file.prefix ?? DEFAULT_S3_PREFIX,
  };
}

/**
 * The standard AWS variables. On AWS itself the SDK may find credentials elsewhere (an
 * instance role), so none is fine there; an S3-compatible endpoint has no such chain.
 */
function resolveCredentials(
  env: NodeJS.ProcessEnv,
  s3: S3Settings | undefined,
): { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined {
  if (s3 === undefined) return undefined;
  const accessKeyId = env.AWS_ACCESS_KEY_ID?.trim() || undefined;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY?.trim() || undefined;
  const sessionToken = env.AWS_SESSION_TOKEN?.trim() || undefined;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    const missing = accessKeyId === undefined ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY';
    throw new ConfigError('Invalid environment', [
      `Expected ${missing} to be set too: the S3 credentials are a pair (the values are not shown)`,
    ]);
  }
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    if (s3.endpoint === undefined) return undefined;
    throw new ConfigError('Invalid environment', [
      'Expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to be set: EXPORT_S3_ENDPOINT names an S3-compatible store, which needs them',
    ]);
  }
  return { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) };
}

function jobsWord(name: BackendName): string {
  return name === 'redis'
    ? 'new exports get 503, running ones fail when their slot lease runs out'
    : 'new jobs get 503, running ones fail and leave no object';
}

/** The SDK's errors carry their S3 code and HTTP status; a bare Error its message. */
function s3ErrorMessage(error: unknown): string {
  const detail = error as { name?: string; $metadata?: { httpStatusCode?: number }; message?: string };
  const status = detail.$metadata?.httpStatusCode;
  // HeadBucket has no body: a 403 or 404 arrives as a bare "UnknownError" / "NotFound".
  if (status === 404) return 'the bucket does not exist (404)';
  if (status === 403) return 'access denied (403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
  return status === undefined ? errorMessage(error) : `${errorMessage(error)} (HTTP ${status})`;
}

function errorMessage(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return errorMessage(error.errors[0]);
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return error.message || code || error.name;
  }
  return String(error);
}

/**
 * A warning logger that says the first failure at once and then at most one line per 10 s
 * with the count in between: during a Redis outage every waiting export retries ten times a
 * second, and one line per attempt would bury the rest of the log.
 */
function rateLimitedLog(logger: Logger, event: string, message: string): (error: unknown) => void {
  let last = 0;
  let suppressed = 0;
  return (error) => {
    const now = Date.now();
    if (now - last < 10_000) {
      suppressed++;
      return;
    }
    logger.warn({ event, error: errorMessage(error), suppressed }, message);
    last = now;
    suppressed = 0;
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
