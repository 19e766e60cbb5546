// The shapes the manager's methods and events take and give, apart from its options.
import type { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import type { BackpressureError, BackpressureReason, ExportError } from './errors.js';
import type { FormatName } from './formats/types.js';
import type { Job, JobStatus } from './jobs/job.js';
import type { ExportOutcome } from './metrics.js';

export interface StreamOptions {
  signal?: AbortSignal;
  /** End the destination when the export ends. Pass `false` for stdout. @default true */
  end?: boolean;
}

export interface OpenOptions {
  signal?: AbortSignal;
  /**
   * Compress the body for the wire (an HTTP `Content-Encoding` the client accepts) rather than
   * as a file: the content type and file name stay the format's. Ignored when the request has a
   * `compression` of its own (its bytes are a `.gz`/`.zst` file already). zstd needs Node >= 22.15.
   */
  contentEncoding?: 'gzip' | 'zstd' | undefined;
}

export interface ExportResult {
  rows: number;
  bytes: number;
}

/** A streamed export that holds a slot: read `body`; destroying it aborts the export. */
export interface OpenedExport {
  body: Readable;
  contentType: string;
  /** The coding the body is compressed with for the wire (`Content-Encoding`), if any. */
  contentEncoding: 'gzip' | 'zstd' | undefined;
  /** Suggested download file name. */
  filename: string;
  /**
   * Resolves once the first bytes are on their way (or the export ended without any); rejects
   * with the export's error when it failed before its first byte. An HTTP layer awaits it
   * before sending headers, so that such a failure is still answered with a proper status.
   */
  ready: Promise<void>;
  /** Settles when the export ends; never rejects (see `job:`/`stream:` events for errors). */
  done: Promise<ExportResult | undefined>;
}

export interface CallerOptions {
  /** The caller's owner; another owner's job is "not found". */
  owner?: string;
}

export interface ListOptions extends CallerOptions {
  status?: JobStatus;
  /** Only jobs of this dataset. */
  dataset?: string;
  /** @default 50, at most 1000 */
  limit?: number;
  cursor?: string;
}

/** A succeeded job's file, ready to be served. */
export interface JobFileInfo {
  job: Job;
  /** The stored file's name (derived from the job id). */
  name: string;
  /** The file's path on disk, when it is stored in a local directory. */
  path?: string;
  size: number;
  contentType: string;
  /** Suggested download file name (user-chosen text: sanitise it for headers). */
  filename: string;
  sha256: string;
  /** Opens the file's bytes, or the inclusive range `start..end`. Rejects with 410 when the file is gone. */
  read(range?: { start: number; end: number }): Promise<Readable>;
  /** A direct download URL (presigned) when the storage offers one. */
  url?: string;
}

export interface ExportSummary {
  dataset: string;
  format: FormatName;
  owner: string | undefined;
  rows: number;
  bytes: number;
  durationMs: number;
  outcome: ExportOutcome;
  error: ExportError | undefined;
}

export interface RejectionEvent {
  reason: BackpressureReason;
  dataset: string;
  owner: string | undefined;
  error: BackpressureError;
}

/** What job events tell beyond the public job: for logs and audits, not for clients. */
export interface JobEventContext {
  owner: string | undefined;
  /** The job's `notify` tag, when its request had one. */
  notify?: string | undefined;
}

/** Typed events of the manager. */
export interface ExportManagerEvents {
  'job:queued': [job: Job, context: JobEventContext];
  'job:started': [job: Job, context: JobEventContext];
  'job:progress': [job: Job, context: JobEventContext];
  'job:succeeded': [job: Job, context: JobEventContext];
  'job:failed': [job: Job, error: ExportError, context: JobEventContext];
  'job:cancelled': [job: Job, context: JobEventContext];
  'job:expired': [job: Job, context: JobEventContext];
  'stream:started': [info: { dataset: string; format: FormatName; owner: string | undefined }];
  'stream:finished': [summary: ExportSummary];
  rejected: [event: RejectionEvent];
  /** An HTTP request answered with an unexpected 5xx (when the handler has no `onError`). */
  'http:error': [error: unknown, request: { method: string; path: string }];
  /** Something the operator should know that is not an error of a request (e.g. a corrupt manifest moved aside). */
  warning: [message: string, cause?: unknown];
}

/** Emits one of the manager's events. */
export type EmitEvent = EventEmitter<ExportManagerEvents>['emit'];
