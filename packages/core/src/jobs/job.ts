import { randomBytes } from 'node:crypto';
import type { Compression } from '../compression.js';
import type { Params } from '../dataset.js';
import { describeValue, ValidationError } from '../errors.js';
import type { DateFormat } from '../formats/dates.js';
import type { CsvOptions, FormatName } from '../formats/types.js';
import type { WebhookDeliveryView } from '../notifications/webhook-notifier.js';
import type { JobQuery } from './job-store.js';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired';

export const JOB_STATUSES: readonly JobStatus[] = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'expired',
];

/** Statuses from which a job never moves again, but for `succeeded -> expired`. */
export const FINISHED_STATUSES: ReadonlySet<JobStatus> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'expired',
]);

/** `exp_` and 22 base64url characters: 128 random bits. */
export const JOB_ID_PATTERN = /^exp_[A-Za-z0-9_-]{22}$/;

export function createJobId(): string {
  return `exp_${randomBytes(16).toString('base64url')}`;
}

/** True for strings shaped like a job id; anything else never touches the filesystem. */
export function isJobId(value: unknown): value is string {
  return typeof value === 'string' && JOB_ID_PATTERN.test(value);
}

export type { Compression } from '../compression.js';

export interface JobFile {
  /** The file name on disk (derived from the id only). */
  name: string;
  bytes: number;
  sha256: string;
  contentType: string;
}

export interface JobErrorInfo {
  code: string;
  message: string;
}

/** The manifest `<id>.json`: everything the manager knows about a job, as stored on disk. */
export interface JobRecord {
  version: 1;
  id: string;
  status: JobStatus;
  dataset: string;
  format: FormatName;
  params: Params;
  columns: string[] | null;
  /** The download name the client asked for (sanitised when served), if any. */
  filename: string | null;
  compression: Compression;
  csv: CsvOptions | null;
  /** The time zone the request asked for (`null`: the manager's default). Absent in older records. */
  timeZone?: string | null;
  /** The date format the request asked for (`null`: the manager's default). Absent in older records. */
  dateFormat?: DateFormat | null;
  owner: string | null;
  idempotencyKey: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  expiresAt: string | null;
  rows: number;
  bytes: number;
  totalRows: number | null;
  file: JobFile | null;
  error: JobErrorInfo | null;
  /** How many times the export was started (resumed jobs run again). */
  attempts: number;
  /** The request's `notify` tag, for `webhooks.endpointsFor` (absent in older manifests). */
  notify?: string | null;
}

/** A job as clients see it (HTTP API, `get`, `list`). */
export interface Job {
  id: string;
  dataset: string;
  format: FormatName;
  status: JobStatus;
  compression: Compression;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  expiresAt: string | null;
  progress: { rows: number; bytes: number; totalRows: number | null };
  /** 1-based place in the wait queue while queued, else `null`. */
  queuePosition: number | null;
  file: JobFile | null;
  error: JobErrorInfo | null;
  /** The job's webhook deliveries, on `get()` when webhooks are configured. */
  notifications?: WebhookDeliveryView[];
}

export function toPublicJob(record: JobRecord, queuePosition: number | null): Job {
  return {
    id: record.id,
    dataset: record.dataset,
    format: record.format,
    status: record.status,
    compression: record.compression,
    createdAt: record.createdAt,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
    expiresAt: record.expiresAt,
    progress: { rows: record.rows, bytes: record.bytes, totalRows: record.totalRows },
    queuePosition,
    file: record.file ? { ...record.file } : null,
    error: record.error ? { ...record.error } : null,
  };
}

/** Checks `list()` options and decodes the cursor into a store query. */
export function parseJobQuery(options: {
  owner?: string | undefined;
  status?: JobStatus | undefined;
  dataset?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}): JobQuery {
  const limit = options.limit ?? 50;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
    throw new ValidationError(`Expected limit to be an integer from 1 to 1000, got ${describeValue(limit)}`, {
      field: 'limit',
      statusCode: 400,
    });
  }
  if (options.status !== undefined && !JOB_STATUSES.includes(options.status)) {
    throw new ValidationError(`Expected status to be a job status, got ${describeValue(options.status)}`, {
      field: 'status',
      statusCode: 400,
    });
  }
  if (options.dataset !== undefined && typeof options.dataset !== 'string') {
    throw new ValidationError(
      `Expected dataset to be a dataset name, got ${describeValue(options.dataset)}`,
      {
        field: 'dataset',
        statusCode: 400,
      },
    );
  }
  return {
    owner: options.owner ?? null,
    status: options.status,
    dataset: options.dataset,
    limit,
    after: options.cursor === undefined ? undefined : decodeCursor(options.cursor),
  };
}

function decodeCursor(cursor: string): Pick<JobRecord, 'createdAt' | 'id'> {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof createdAt === 'string' && isJobId(id)) return { createdAt, id };
  } catch {
    // fall through
  }
  throw new ValidationError('Expected cursor to be a value of nextCursor from a previous page', {
    field: 'cursor',
    statusCode: 400,
  });
}
