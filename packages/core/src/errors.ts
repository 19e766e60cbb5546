/**
 * Every error this library throws on purpose is an {@link ExportError}: it has a stable
 * upper-snake-case `code`, an HTTP `statusCode`, and a `message` that is safe to show to a
 * client. The HTTP layer maps only these to responses; anything else becomes a generic 500.
 */

/** Stable error codes. Part of the public API: clients may switch on them. */
export type ExportErrorCode =
  | 'BACKPRESSURE'
  | 'VALIDATION_FAILED'
  | 'INVALID_PARAMS'
  | 'UNKNOWN_DATASET'
  | 'UNKNOWN_FORMAT'
  | 'UNKNOWN_COLUMN'
  | 'INVALID_ROW'
  | 'NOT_FOUND'
  | 'JOB_NOT_READY'
  | 'JOB_EXPIRED'
  | 'JOB_FILE_CORRUPT'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'SOURCE_FAILED'
  | 'WRITE_FAILED'
  | 'EXPORT_TIMEOUT'
  | 'SOURCE_IDLE'
  | 'CLIENT_STALLED'
  | 'CANCELLED'
  | 'INTERRUPTED'
  | 'QUEUE_TIMEOUT'
  | 'SHUTTING_DOWN'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'BAD_REQUEST'
  | 'RANGE_NOT_SATISFIABLE'
  | 'METHOD_NOT_ALLOWED'
  | 'JOBS_NOT_CONFIGURED'
  | 'JOB_FINISHED'
  | 'TOO_MANY_EVENT_STREAMS'
  | 'INTERNAL';

export interface ExportErrorOptions {
  /** The underlying error, kept for logs; never sent to clients. */
  cause?: unknown;
  /** Extra machine-readable details that are safe to send to clients. */
  details?: Record<string, unknown>;
}

const EXPORT_ERROR_BRAND = Symbol.for('spark-export.error');

/**
 * Base class of every error the library throws on purpose.
 *
 * @example
 * ```ts
 * try {
 *   await manager.stream(request, file);
 * } catch (error) {
 *   if (isExportError(error)) console.log(error.code, error.statusCode, error.message);
 * }
 * ```
 */
export class ExportError extends Error {
  readonly code: ExportErrorCode;
  readonly statusCode: number;
  readonly details: Record<string, unknown> | undefined;
  /** On the prototype (see below), not on each error: an own field made every 429 dearer. */
  declare readonly [EXPORT_ERROR_BRAND]: true;

  constructor(code: ExportErrorCode, statusCode: number, message: string, options: ExportErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.details = options.details;
  }

  /** A JSON view that is safe for clients: no stack, no cause. */
  toJSON(): { code: ExportErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

// The brand lives on the prototype: `isExportError` still sees it on errors of another copy of
// this package, and constructing an error needs one property less.
Object.defineProperty(ExportError.prototype, EXPORT_ERROR_BRAND, { value: true });

/** Why a slot could not be had. */
export type BackpressureReason =
  | 'concurrency_limit'
  | 'queue_full'
  | 'queue_timeout'
  | 'owner_limit'
  | 'shutting_down';

export interface BackpressureErrorOptions extends ExportErrorOptions {
  reason: BackpressureReason;
  /** The concurrency limit at the time of the rejection. */
  limit: number;
  /** How many exports were running at the time of the rejection. */
  inFlight: number;
  /** Seconds a client should wait before retrying; rounded up to a whole number >= 1. */
  retryAfterSeconds?: number;
}

/**
 * No export slot (or wait-queue place) was free. HTTP 429 with `Retry-After`, or 503 while
 * shutting down.
 *
 * @example
 * ```ts
 * catch (error) {
 *   if (error instanceof BackpressureError) res.setHeader('Retry-After', error.retryAfterSeconds);
 * }
 * ```
 */
export class BackpressureError extends ExportError {
  readonly reason: BackpressureReason;
  readonly limit: number;
  readonly inFlight: number;
  readonly retryAfterSeconds: number;

  constructor(options: BackpressureErrorOptions) {
    const shuttingDown = options.reason === 'shutting_down';
    super(
      shuttingDown ? 'SHUTTING_DOWN' : options.reason === 'queue_timeout' ? 'QUEUE_TIMEOUT' : 'BACKPRESSURE',
      shuttingDown ? 503 : 429,
      backpressureMessage(options),
      options,
    );
    this.reason = options.reason;
    this.limit = options.limit;
    this.inFlight = options.inFlight;
    // NaN or Infinity (e.g. an estimate from no observations yet) would make a bogus Retry-After.
    const seconds = options.retryAfterSeconds;
    this.retryAfterSeconds =
      seconds !== undefined && Number.isFinite(seconds) ? Math.max(1, Math.ceil(seconds)) : 1;
  }
}

function backpressureMessage({ reason, limit, inFlight }: BackpressureErrorOptions): string {
  switch (reason) {
    case 'concurrency_limit':
      return `Too many exports in progress (${inFlight} of ${limit}); retry later`;
    case 'queue_full':
      return `Too many exports in progress (${inFlight} of ${limit}) and the wait queue is full; retry later`;
    case 'queue_timeout':
      return 'The export waited too long for a free slot; retry later';
    case 'owner_limit':
      return 'You have too many exports in progress; wait for one to finish';
    case 'shutting_down':
      return 'The export service is shutting down; retry later';
  }
}

/**
 * A request was malformed (400) or its values were not acceptable (422). `field` names the
 * offending field, e.g. `params.from` or `format`.
 *
 * @example
 * ```ts
 * throw new ValidationError('Expected params.limit to be an integer, got "ten" (string)', { field: 'params.limit' });
 * ```
 */
export class ValidationError extends ExportError {
  readonly field: string | undefined;

  constructor(
    message: string,
    options: ExportErrorOptions & { field?: string; code?: ExportErrorCode; statusCode?: 400 | 422 } = {},
  ) {
    super(options.code ?? 'VALIDATION_FAILED', options.statusCode ?? 422, message, {
      ...options,
      details: { ...options.details, ...(options.field === undefined ? {} : { field: options.field }) },
    });
    this.field = options.field;
  }
}

/** Something (a dataset, a job) does not exist, or belongs to someone else. HTTP 404. */
export class NotFoundError extends ExportError {
  constructor(message: string, options: ExportErrorOptions & { code?: ExportErrorCode } = {}) {
    super(options.code ?? 'NOT_FOUND', 404, message, options);
  }
}

/** The job exists but its file is not ready (409), has expired (410) or is damaged (410 `JOB_FILE_CORRUPT`). */
export class JobStateError extends ExportError {
  constructor(
    code: 'JOB_NOT_READY' | 'JOB_EXPIRED' | 'JOB_FILE_CORRUPT',
    message: string,
    options: ExportErrorOptions = {},
  ) {
    super(code, code === 'JOB_NOT_READY' ? 409 : 410, message, options);
  }
}

/**
 * The dataset's source failed. The source's own error is kept as `cause` (for logs); the
 * message shown to clients is generic so that no internal detail leaks.
 */
export class SourceError extends ExportError {
  constructor(dataset: string, options: ExportErrorOptions = {}) {
    super('SOURCE_FAILED', 502, `The data source of dataset "${dataset}" failed`, options);
  }
}

/**
 * Writing the export to its destination failed (disk full, client gone, read-only directory).
 * 500 by default; 507 when storage is full and 503 when it is unavailable (see {@link WriteError.fromStorage}).
 */
export class WriteError extends ExportError {
  constructor(message: string, options: ExportErrorOptions & { statusCode?: 500 | 503 | 507 } = {}) {
    super('WRITE_FAILED', options.statusCode ?? 500, message, options);
  }

  /**
   * A storage failure as a `WriteError`: 507 Insufficient Storage for a full disk or quota
   * (`ENOSPC`, `EDQUOT`, `EFBIG`), else 503.
   */
  static fromStorage(message: string, cause: unknown): WriteError {
    const code = (cause as { code?: unknown } | null)?.code;
    const full = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG';
    return new WriteError(message, { cause, statusCode: full ? 507 : 503 });
  }
}

/** Which limit a {@link TimeLimitError} is about. */
export type TimeLimitCode = 'EXPORT_TIMEOUT' | 'SOURCE_IDLE' | 'CLIENT_STALLED';

/**
 * An export ran into one of its time limits and was stopped, its slot freed and (for a job)
 * its partial file removed:
 *
 * - `EXPORT_TIMEOUT` (504): it ran longer than `maxDurationMs`;
 * - `SOURCE_IDLE` (504): its source sent no row for `idleTimeoutMs`;
 * - `CLIENT_STALLED` (408): its destination (a client that stopped reading) drained nothing
 *   for `stallTimeoutMs`.
 *
 * `details.timeoutMs` is the limit that was hit.
 *
 * @example
 * ```ts
 * manager.on('stream:finished', ({ error }) => {
 *   if (error instanceof TimeLimitError && error.code === 'CLIENT_STALLED') log.warn('a client stopped reading');
 * });
 * ```
 */
export class TimeLimitError extends ExportError {
  declare readonly code: TimeLimitCode;
  readonly timeoutMs: number;

  constructor(code: TimeLimitCode, timeoutMs: number, options: ExportErrorOptions = {}) {
    super(code, code === 'CLIENT_STALLED' ? 408 : 504, timeLimitMessage(code, timeoutMs), {
      ...options,
      details: { ...options.details, timeoutMs },
    });
    this.timeoutMs = timeoutMs;
  }
}

function timeLimitMessage(code: TimeLimitCode, timeoutMs: number): string {
  switch (code) {
    case 'EXPORT_TIMEOUT':
      return `The export took longer than its limit of ${timeoutMs} ms and was stopped`;
    case 'SOURCE_IDLE':
      return `The data source sent no rows for ${timeoutMs} ms and the export was stopped`;
    case 'CLIENT_STALLED':
      return `The client read nothing for ${timeoutMs} ms and the export was stopped`;
  }
}

/** The export was cancelled or aborted before it finished. */
export class CancelledError extends ExportError {
  constructor(
    message = 'The export was cancelled',
    options: ExportErrorOptions & { code?: 'CANCELLED' | 'INTERRUPTED' } = {},
  ) {
    super(options.code ?? 'CANCELLED', 499, message, options);
  }
}

/**
 * Recognises the library's errors, also when they come from a second copy of the package
 * (two versions in one `node_modules`), where `instanceof` fails.
 */
export function isExportError(error: unknown): error is ExportError {
  if (error instanceof ExportError) return true;
  if (typeof error !== 'object' || error === null) return false;
  const candidate = error as Record<string | symbol, unknown>;
  return (
    candidate[EXPORT_ERROR_BRAND] === true &&
    typeof candidate.code === 'string' &&
    typeof candidate.statusCode === 'number'
  );
}

/** Recognises a {@link BackpressureError}, also from a second copy of the package. */
export function isBackpressureError(error: unknown): error is BackpressureError {
  return (
    isExportError(error) &&
    typeof (error as BackpressureError).retryAfterSeconds === 'number' &&
    typeof (error as BackpressureError).reason === 'string'
  );
}

/** Describes a value for validation messages: `"ten" (string)`, `-1 (number)`, `null`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string')
    return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} (string)`;
  if (typeof value === 'object') return 'an object';
  return `${String(value)} (${typeof value})`;
}
