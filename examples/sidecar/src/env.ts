import { resolve } from 'node:path';
import { describeValue } from '@spark-export/core';
import { ConfigError } from './config.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The sidecar's settings, from the environment. */
export interface SidecarSettings {
  /** `PORT` @default 4001 */
  port: number;
  /** `HOST` @default '127.0.0.1' (the Docker image sets 0.0.0.0) */
  host: string;
  /** `EXPORT_CONFIG`: the config file. @default ./spark-export.config.json, else the built-in demo */
  configPath: string | undefined;
  /** `EXPORT_DIR` (absolute once parsed) @default ./exports */
  exportDir: string;
  /** `EXPORT_MAX_CONCURRENT` @default 5 */
  maxConcurrent: number;
  /** `EXPORT_MAX_QUEUED` @default 0 (reject with 429 when every slot is busy) */
  maxQueued: number;
  /** `EXPORT_QUEUE_TIMEOUT_MS` @default undefined (wait as long as it takes) */
  queueTimeoutMs: number | undefined;
  /** `EXPORT_RETENTION_HOURS`; `0` keeps files until `EXPORT_MAX_TOTAL_BYTES` removes them. @default 24 */
  retentionHours: number;
  /** `EXPORT_MAX_TOTAL_BYTES` @default undefined (no size cap) */
  maxTotalBytes: number | undefined;
  /** `EXPORT_DRAIN_TIMEOUT_MS` @default 30000 */
  drainTimeoutMs: number;
  /** `EXPORT_API_TOKEN`: bearer token for every route but `/export/status`. @default undefined (open) */
  apiToken: string | undefined;
  /** `EXPORT_OWNER_HEADER`: header carrying the job owner, set by a trusted proxy. @default undefined */
  ownerHeader: string | undefined;
  /** `EXPORT_SIGNING_SECRET`: signs download links (at least 16 characters). @default undefined */
  signingSecret: string | undefined;
  /** `DATABASE_URL`: the default connection of `postgres` sources. */
  databaseUrl: string | undefined;
  /** `LOG_LEVEL` @default 'info' */
  logLevel: LogLevel;
  /** `EXPORT_PROCESS_METRICS`: Node process metrics on `/export/metrics`. @default true */
  processMetrics: boolean;
  /**
   * `EXPORT_ACCEL_REDIRECT_PREFIX`: answer downloads with `X-Accel-Redirect: <prefix><file>` and
   * let nginx send the file from an `internal` location over the exports directory
   * (`/export-files/` in nginx/export.conf). @default undefined (the sidecar sends files itself)
   */
  accelRedirectPrefix: string | undefined;
  /** `EXPORT_WEBHOOK_URL`: where job events are POSTed (signed webhooks). @default undefined (none) */
  webhookUrl: string | undefined;
  /** `EXPORT_WEBHOOK_SECRET`: `whsec_` secrets, separated by spaces (rotation). Required with the URL. */
  webhookSecrets: string[] | undefined;
  /** `EXPORT_WEBHOOK_TIMEOUT_MS` @default 10000 */
  webhookTimeoutMs: number;
  /** `EXPORT_WEBHOOK_BACKOFF_MS`: the first retry delay, doubled per attempt. @default 5000 */
  webhookBackoffMs: number;
  /** `EXPORT_EVENT_STREAMS_PER_OWNER`: open `/jobs/:id/events` streams per owner (all anonymous callers together count as one). @default 10 */
  eventStreamsPerOwner: number;
  /** `EXPORT_UI`: the exports page at `/export/ui`. @default true */
  ui: boolean;
  /**
   * `EXPORT_TIME_ZONE`: the IANA time zone of dates in exports that do not ask for one
   * (`?timeZone=` or the job's `timeZone`). @default 'UTC'
   */
  timeZone: string;
  /**
   * `EXPORT_REDIS_URL`: one export limit and one job store for every replica on this Redis.
   * @default undefined (the limit and the jobs are this process's own)
   */
  redisUrl: string | undefined;
  /**
   * `EXPORT_JOB_QUEUE`: `bullmq` runs jobs as BullMQ jobs on the Redis of `EXPORT_REDIS_URL`
   * (any replica runs any job, takes over a dead replica's, cancels across replicas); `local`
   * runs each job in the process that accepted it. @default 'local'
   */
  jobQueue: 'local' | 'bullmq';
  /** `EXPORT_S3_BUCKET`: keep job files in this bucket. @default undefined (in `EXPORT_DIR`) */
  s3Bucket: string | undefined;
  /** `EXPORT_S3_ENDPOINT`: an S3-compatible store's URL. @default undefined (AWS) */
  s3Endpoint: string | undefined;
  /** `EXPORT_S3_REGION` @default undefined (`us-east-1` with an endpoint, else the SDK's own lookup) */
  s3Region: string | undefined;
  /** `EXPORT_S3_FORCE_PATH_STYLE` @default undefined (true with an endpoint, false on AWS) */
  s3ForcePathStyle: boolean | undefined;
  /** `EXPORT_S3_PREFIX`: key prefix of the job files. @default undefined (`exports/`) */
  s3Prefix: string | undefined;
}

/** One environment variable, as the docs describe it. */
export interface EnvVariable {
  name: string;
  /** The setting it fills. */
  setting: keyof SidecarSettings;
  /** The default as the docs show it (Markdown). */
  default: string;
  /** What it does (Markdown, one line). */
  meaning: string;
}

/**
 * Every variable `parseEnv` reads, in the docs' order: the one source of the tables in
 * docs/sidecar.md, docs/operations.md and examples/sidecar/README.md
 * (`UPDATE_DOCS=1 npx vitest run examples/sidecar/test/docs.test.ts` rewrites them; the test
 * fails while a copy differs, or while a default here is not the one `parseEnv` applies).
 */
export const ENV_VARIABLES: readonly EnvVariable[] = [
  {
    name: 'PORT',
    setting: 'port',
    default: '`4001`',
    meaning: 'port to listen on, 0-65535 (`0`: any free port)',
  },
  {
    name: 'HOST',
    setting: 'host',
    default: '`127.0.0.1`',
    meaning: 'address to listen on; the Docker image sets `0.0.0.0`',
  },
  {
    name: 'EXPORT_CONFIG',
    setting: 'configPath',
    default: '`./spark-export.config.json`, else the built-in demo',
    meaning: 'the config file; an explicit path that does not exist stops the start',
  },
  {
    name: 'EXPORT_DIR',
    setting: 'exportDir',
    default: '`./exports`',
    meaning:
      'job files and their manifests, relative to the working directory: `examples/sidecar/exports` with the root `npm start`, `/app/exports` in the image',
  },
  {
    name: 'EXPORT_MAX_CONCURRENT',
    setting: 'maxConcurrent',
    default: '`5`',
    meaning: 'exports running at once (jobs and streams together); beyond it 429 + `Retry-After`',
  },
  {
    name: 'EXPORT_MAX_QUEUED',
    setting: 'maxQueued',
    default: '`0`',
    meaning: 'exports that may wait for a slot; `0` answers 429 at once',
  },
  {
    name: 'EXPORT_QUEUE_TIMEOUT_MS',
    setting: 'queueTimeoutMs',
    default: 'none',
    meaning: 'a queued export fails with `QUEUE_TIMEOUT` after this; unset, it waits as long as it takes',
  },
  {
    name: 'EXPORT_RETENTION_HOURS',
    setting: 'retentionHours',
    default: '`24`',
    meaning:
      'finished files are deleted after this many hours (fractions allowed; their jobs become `expired`); `0` keeps them',
  },
  {
    name: 'EXPORT_MAX_TOTAL_BYTES',
    setting: 'maxTotalBytes',
    default: 'none',
    meaning: 'the oldest files are deleted while all together exceed this',
  },
  {
    name: 'EXPORT_DRAIN_TIMEOUT_MS',
    setting: 'drainTimeoutMs',
    default: '`30000`',
    meaning: 'how long a shutdown (SIGTERM) lets running exports finish',
  },
  {
    name: 'EXPORT_API_TOKEN',
    setting: 'apiToken',
    default: 'none',
    meaning:
      'at least 16 characters: `Authorization: Bearer <token>` on every route but `/export/status` and `/export`',
  },
  {
    name: 'EXPORT_OWNER_HEADER',
    setting: 'ownerHeader',
    default: 'none',
    meaning: 'header (e.g. `X-User-Id`) that names the job owner; **only behind a proxy that sets it**',
  },
  {
    name: 'EXPORT_SIGNING_SECRET',
    setting: 'signingSecret',
    default: 'none',
    meaning:
      'at least 16 bytes: enables signed download links, made by the host app with the same secret (`signDownloadPath`)',
  },
  {
    name: 'DATABASE_URL',
    setting: 'databaseUrl',
    default: 'none',
    meaning:
      'PostgreSQL connection string of the `postgres` sources that have no `connectionString`; nothing else (the built-in demo is SQLite)',
  },
  {
    name: 'LOG_LEVEL',
    setting: 'logLevel',
    default: '`info`',
    meaning: `level of the JSON logs: ${LOG_LEVELS.map((level) => `\`${level}\``).join(', ')}`,
  },
  {
    name: 'EXPORT_PROCESS_METRICS',
    setting: 'processMetrics',
    default: '`true`',
    meaning: 'Node process metrics (`process_*`, `nodejs_*`) on `/export/metrics`',
  },
  {
    name: 'EXPORT_ACCEL_REDIRECT_PREFIX',
    setting: 'accelRedirectPrefix',
    default: 'none',
    meaning:
      'a path such as `/export-files/`: downloads answer with `X-Accel-Redirect: <prefix><file>` and no body, for nginx to send the file (X-Accel-Redirect in docs/operations.md)',
  },
  {
    name: 'EXPORT_WEBHOOK_URL',
    setting: 'webhookUrl',
    default: 'none',
    meaning:
      'an `http(s)://` URL that gets signed webhooks (Standard Webhooks) when jobs succeed, fail, are cancelled or expire; retried, state in `EXPORT_DIR/webhooks`',
  },
  {
    name: 'EXPORT_WEBHOOK_SECRET',
    setting: 'webhookSecrets',
    default: 'none',
    meaning:
      'required with `EXPORT_WEBHOOK_URL`: a `whsec_...` secret, or several separated by spaces while rotating (each signs every delivery)',
  },
  {
    name: 'EXPORT_WEBHOOK_TIMEOUT_MS',
    setting: 'webhookTimeoutMs',
    default: '`10000`',
    meaning: 'time one webhook attempt may take before it counts as failed',
  },
  {
    name: 'EXPORT_WEBHOOK_BACKOFF_MS',
    setting: 'webhookBackoffMs',
    default: '`5000`',
    meaning:
      'delay before the first retry of a webhook; doubled per attempt (with jitter, at most 1 h), 8 attempts in all',
  },
  {
    name: 'EXPORT_EVENT_STREAMS_PER_OWNER',
    setting: 'eventStreamsPerOwner',
    default: '`10`',
    meaning:
      'open live-progress streams (`GET /export/jobs/:id/events`) per owner, all callers together without `EXPORT_OWNER_HEADER`; one more is a 429',
  },
  {
    name: 'EXPORT_UI',
    setting: 'ui',
    default: '`true`',
    meaning: 'the exports page at `/export/ui` (`false` to leave it out; the API is unchanged)',
  },
  {
    name: 'EXPORT_TIME_ZONE',
    setting: 'timeZone',
    default: '`UTC`',
    meaning:
      "IANA time zone (`Europe/Berlin`) of dates in exports that ask for none; a request's `timeZone` wins (docs/formats.md)",
  },
  {
    name: 'EXPORT_JOB_QUEUE',
    setting: 'jobQueue',
    default: '`local`',
    meaning:
      '`bullmq`: with `EXPORT_REDIS_URL`, jobs are BullMQ jobs that any replica runs, taken over when a replica dies, cancelled across replicas (docs/scaling.md); `local`: each job runs where it was accepted',
  },
  {
    name: 'EXPORT_REDIS_URL',
    setting: 'redisUrl',
    default: 'none',
    meaning:
      '`redis://` or `rediss://` URL: the export limit and the job records are shared by every replica on this Redis (docs/scaling.md); overrides `redis.url` of the config file',
  },
  {
    name: 'EXPORT_S3_BUCKET',
    setting: 's3Bucket',
    default: 'none',
    meaning:
      'job files go to this existing bucket instead of `EXPORT_DIR`; credentials from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; overrides `s3.bucket`',
  },
  {
    name: 'EXPORT_S3_ENDPOINT',
    setting: 's3Endpoint',
    default: 'none',
    meaning: 'URL of an S3-compatible store (MinIO, Ceph, R2); unset: AWS S3',
  },
  {
    name: 'EXPORT_S3_REGION',
    setting: 's3Region',
    default: 'none',
    meaning: "region to sign for; with an endpoint `us-east-1`, on AWS the SDK's own lookup (`AWS_REGION`)",
  },
  {
    name: 'EXPORT_S3_FORCE_PATH_STYLE',
    setting: 's3ForcePathStyle',
    default: 'none',
    meaning: '`true`: `<endpoint>/<bucket>/<key>` URLs; unset: `true` with an endpoint, `false` on AWS',
  },
  {
    name: 'EXPORT_S3_PREFIX',
    setting: 's3Prefix',
    default: 'none',
    meaning: 'key prefix of the job files, ending in `/`; unset: `exports/`. One prefix per cluster',
  },
];

/**
 * Reads the settings from the environment. Every bad value is reported at once, each naming
 * the variable, what was expected and what was given.
 *
 * @throws {ConfigError}
 */
export function parseEnv(env: NodeJS.ProcessEnv, cwd: string = process.cwd()): SidecarSettings {
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === '' ? undefined : value;
  };
  const integer = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const text = get(name);
    if (text === undefined) return fallback;
    const value = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      const range =
        max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
      problems.push(`Expected ${name} to be ${range}, got ${describeValue(text)}`);
      return fallback;
    }
    return value;
  };
  const optionalInteger = (name: string, min: number): number | undefined =>
    get(name) === undefined ? undefined : integer(name, 0, min);
  const number = (name: string, fallback: number): number => {
    const text = get(name);
    if (text === undefined) return fallback;
    const value = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isFinite(value) || value < 0) {
      problems.push(`Expected ${name} to be a number >= 0, got ${describeValue(text)}`);
      return fallback;
    }
    return value;
  };

  const host = get('HOST') ?? '127.0.0.1';
  if (/[\s/]/.test(host))
    problems.push(`Expected HOST to be a host name or IP address, got ${describeValue(host)}`);

  const apiToken = get('EXPORT_API_TOKEN');
  if (apiToken !== undefined && (apiToken.length < 16 || /\s/.test(apiToken))) {
    problems.push(
      'Expected EXPORT_API_TOKEN to be at least 16 characters without spaces (the value is not shown)',
    );
  }
  const ownerHeader = get('EXPORT_OWNER_HEADER')?.toLowerCase();
  if (ownerHeader !== undefined && !/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(ownerHeader)) {
    problems.push(
      `Expected EXPORT_OWNER_HEADER to be an HTTP header name such as X-User-Id, got ${describeValue(ownerHeader)}`,
    );
  }
  if (ownerHeader === 'authorization') {
    problems.push('Expected EXPORT_OWNER_HEADER to name a header set by your proxy, not Authorization');
  }
  const signingSecret = get('EXPORT_SIGNING_SECRET');
  if (signingSecret !== undefined && Buffer.byteLength(signingSecret) < 16) {
    problems.push('Expected EXPORT_SIGNING_SECRET to be at least 16 bytes (the value is not shown)');
  }
  const databaseUrl = get('DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push(
      'Expected DATABASE_URL to be a postgres:// or postgresql:// connection string (the value is not shown)',
    );
  }
  const logLevel = (get('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    problems.push(`Expected LOG_LEVEL to be one of ${LOG_LEVELS.join(', ')}, got ${describeValue(logLevel)}`);
  }
  const processMetricsText = (get('EXPORT_PROCESS_METRICS') ?? 'true').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(processMetricsText)) {
    problems.push(
      `Expected EXPORT_PROCESS_METRICS to be true or false, got ${describeValue(processMetricsText)}`,
    );
  }

  const uiText = (get('EXPORT_UI') ?? 'true').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(uiText)) {
    problems.push(`Expected EXPORT_UI to be true or false, got ${describeValue(uiText)}`);
  }

  const accelRedirectPrefix = get('EXPORT_ACCEL_REDIRECT_PREFIX');
  if (
    accelRedirectPrefix !== undefined &&
    (!/^\/(?:[A-Za-z0-9._~-]+\/)+$/.test(accelRedirectPrefix) ||
      accelRedirectPrefix.split('/').some((segment) => segment === '.' || segment === '..'))
  ) {
    problems.push(
      `Expected EXPORT_ACCEL_REDIRECT_PREFIX to be a URL path that starts and ends with "/", such as /export-files/, got ${describeValue(accelRedirectPrefix)}`,
    );
  }

  const webhookUrl = get('EXPORT_WEBHOOK_URL');
  if (webhookUrl !== undefined && !isHttpUrl(webhookUrl)) {
    problems.push(
      `Expected EXPORT_WEBHOOK_URL to be an http:// or https:// URL, got ${describeValue(webhookUrl)}`,
    );
  }
  const webhookSecrets = get('EXPORT_WEBHOOK_SECRET')?.split(/\s+/);
  if (webhookSecrets !== undefined && !webhookSecrets.every(isWebhookSecret)) {
    problems.push(
      'Expected EXPORT_WEBHOOK_SECRET to be whsec_ secrets (base64 of at least 24 bytes) separated by spaces (the value is not shown)',
    );
  }
  if ((webhookUrl === undefined) !== (webhookSecrets === undefined)) {
    problems.push('Expected EXPORT_WEBHOOK_URL and EXPORT_WEBHOOK_SECRET together, got only one of them');
  }
  let timeZone = get('EXPORT_TIME_ZONE') ?? 'UTC';
  try {
    // Normalised as the core does it: `europe/berlin` -> `Europe/Berlin`.
    timeZone = new Intl.DateTimeFormat('en', { timeZone }).resolvedOptions().timeZone;
  } catch {
    problems.push(
      `Expected EXPORT_TIME_ZONE to be an IANA time zone name such as Europe/Berlin, got ${describeValue(timeZone)}`,
    );
  }

  const jobQueueText = get('EXPORT_JOB_QUEUE') ?? 'local';
  if (jobQueueText !== 'local' && jobQueueText !== 'bullmq') {
    problems.push(`Expected EXPORT_JOB_QUEUE to be "local" or "bullmq", got ${describeValue(jobQueueText)}`);
  }
  const jobQueue: 'local' | 'bullmq' = jobQueueText === 'bullmq' ? 'bullmq' : 'local';
  const redisUrl = get('EXPORT_REDIS_URL');
  if (redisUrl !== undefined && !isRedisUrl(redisUrl)) {
    problems.push(
      `Expected EXPORT_REDIS_URL to be a redis:// or rediss:// URL such as redis://127.0.0.1:6379, got ${describeValue(redactUrl(redisUrl))}`,
    );
  }
  const s3Bucket = get('EXPORT_S3_BUCKET');
  if (s3Bucket !== undefined && !S3_BUCKET_PATTERN.test(s3Bucket)) {
    problems.push(
      `Expected EXPORT_S3_BUCKET to be a bucket name (3-63 lowercase letters, digits, "." or "-"), got ${describeValue(s3Bucket)}`,
    );
  }
  const s3Endpoint = get('EXPORT_S3_ENDPOINT');
  if (s3Endpoint !== undefined && !isHttpUrl(s3Endpoint)) {
    problems.push(
      `Expected EXPORT_S3_ENDPOINT to be an http:// or https:// URL, got ${describeValue(redactUrl(s3Endpoint))}`,
    );
  }
  const s3Region = get('EXPORT_S3_REGION');
  if (s3Region !== undefined && !/^[a-z0-9][a-z0-9-]{0,62}$/.test(s3Region)) {
    problems.push(
      `Expected EXPORT_S3_REGION to be a region name such as eu-west-1, got ${describeValue(s3Region)}`,
    );
  }
  const forcePathStyleText = get('EXPORT_S3_FORCE_PATH_STYLE')?.toLowerCase();
  if (forcePathStyleText !== undefined && !['true', 'false', '1', '0'].includes(forcePathStyleText)) {
    problems.push(
      `Expected EXPORT_S3_FORCE_PATH_STYLE to be true or false, got ${describeValue(forcePathStyleText)}`,
    );
  }
  const s3Prefix = get('EXPORT_S3_PREFIX');
  if (s3Prefix !== undefined && !isS3Prefix(s3Prefix)) {
    problems.push(
      `Expected EXPORT_S3_PREFIX to be a key prefix ending in "/" without a leading "/", such as exports/, got ${describeValue(s3Prefix)}`,
    );
  }
  const settings: SidecarSettings = {
    port: integer('PORT', 4001, 0, 65_535),
    host,
    configPath: get('EXPORT_CONFIG'),
    exportDir: resolve(cwd, get('EXPORT_DIR') ?? './exports'),
    maxConcurrent: integer('EXPORT_MAX_CONCURRENT', 5, 1),
    maxQueued: integer('EXPORT_MAX_QUEUED', 0, 0),
    queueTimeoutMs: optionalInteger('EXPORT_QUEUE_TIMEOUT_MS', 1),
    retentionHours: number('EXPORT_RETENTION_HOURS', 24),
    maxTotalBytes: optionalInteger('EXPORT_MAX_TOTAL_BYTES', 0),
    drainTimeoutMs: integer('EXPORT_DRAIN_TIMEOUT_MS', 30_000, 0),
    apiToken,
    ownerHeader,
    signingSecret,
    databaseUrl,
    logLevel: logLevel as LogLevel,
    processMetrics: processMetricsText === 'true' || processMetricsText === '1',
    accelRedirectPrefix,
    webhookUrl,
    webhookSecrets,
    webhookTimeoutMs: integer('EXPORT_WEBHOOK_TIMEOUT_MS', 10_000, 1),
    webhookBackoffMs: integer('EXPORT_WEBHOOK_BACKOFF_MS', 5_000, 1),
    eventStreamsPerOwner: integer('EXPORT_EVENT_STREAMS_PER_OWNER', 10, 1),
    ui: uiText === 'true' || uiText === '1',
    timeZone,
    redisUrl,
    jobQueue,
    s3Bucket,
    s3Endpoint,
    s3Region,
    s3ForcePathStyle:
      forcePathStyleText === undefined
        ? undefined
        : forcePathStyleText === 'true' || forcePathStyleText === '1',
    s3Prefix,
  };
  if (problems.length > 0) throw new ConfigError('Invalid environment', problems);
  return settings;
}

/** An `http://` or `https://` URL with a host and without credentials in it. */
function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (
      (url.protocol === 'http:' || url.protocol === 'https:') &&
      url.hostname !== '' &&
      !url.username &&
      !url.password
    );
  } catch {
    return false;
  }
}

/** What the core accepts as a Standard Webhooks secret: `whsec_` and base64 of 24 bytes or more. */
function isWebhookSecret(secret: string): boolean {
  return /^whsec_[A-Za-z0-9+/]+={0,2}$/.test(secret) && Buffer.from(secret.slice(6), 'base64').length >= 24;
}

/** S3's bucket naming rules, short of the IP-address and `xn--` exclusions. */
export const S3_BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function isRedisUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/** A key prefix: empty, or path segments each ending in "/", none of them "." or "..". */
export function isS3Prefix(text: string): boolean {
  if (text === '') return true;
  return (
    /^(?:[A-Za-z0-9!_.*'()-]+\/)+$/.test(text) &&
    !text.split('/').some((part) => part === '.' || part === '..')
  );
}

/** A URL as logs and errors may show it: as given, but without its password (Redis URLs carry one). */
export function redactUrl(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
}
