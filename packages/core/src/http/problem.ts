import { STATUS_CODES } from 'node:http';
import { type ExportErrorCode, isBackpressureError, isExportError } from '../errors.js';
import type { ExportHttpResponse } from './types.js';

/** The media type of every error response. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Base of the `type` URI of problems: `https://spark-export.dev/problems/<code-lowercase-dashed>`. */
export const PROBLEM_TYPE_BASE = 'https://spark-export.dev/problems/';

/**
 * An RFC 9457 problem details body, as every error of the HTTP API is answered.
 *
 * @example
 * ```json
 * { "type": "https://spark-export.dev/problems/backpressure", "title": "Too Many Requests", "status": 429,
 *   "detail": "Too many exports in progress (5 of 5); retry later", "code": "BACKPRESSURE", "retryAfterSeconds": 3 }
 * ```
 */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** The library's stable error code. */
  code: ExportErrorCode;
  /** The offending request field, for validation errors (e.g. `params.from`, `format`). */
  field?: string;
  /** For 429/503: the same value as the `Retry-After` header. */
  retryAfterSeconds?: number;
}

/** `BACKPRESSURE` -> `https://spark-export.dev/problems/backpressure`. */
const problemTypes = new Map<string, string>();

export function problemType(code: string): string {
  let type = problemTypes.get(code);
  if (type === undefined) {
    type = `${PROBLEM_TYPE_BASE}${code.toLowerCase().replace(/_/g, '-')}`;
    // Codes are the library's own, a few dozen at most; anything else is not worth keeping.
    if (problemTypes.size < 256) problemTypes.set(code, type);
  }
  return type;
}

let lastProblem: {
  status: number;
  code: string;
  detail: string;
  field: string | undefined;
  retryAfterSeconds: number | undefined;
  body: string;
  length: string;
} = {
  status: 0,
  code: '',
  detail: '',
  field: undefined,
  retryAfterSeconds: undefined,
  body: '',
  length: '0',
};

/** Builds a problem response. `extra` may carry `field` and `retryAfterSeconds`. */
export function problemResponse(
  status: number,
  code: ExportErrorCode,
  detail: string,
  extra: Pick<Problem, 'field' | 'retryAfterSeconds'> = {},
  headers?: Record<string, string>,
): ExportHttpResponse {
  // Written out in the Problem's key order rather than built and stringified, the constant
  // start kept per status and code: a 429 under load is the answer given most often.
  // Codes are the library's upper-snake-case constants: no escaping needed.
  // A full server gives the same 429 over and over: the last body is kept with its length.
  const last = lastProblem;
  let body: string;
  let length: string;
  if (
    last.detail === detail &&
    last.status === status &&
    last.code === code &&
    last.field === extra.field &&
    last.retryAfterSeconds === extra.retryAfterSeconds
  ) {
    body = last.body;
    length = last.length;
  } else {
    body = `${problemStart(status, code)}"detail":${JSON.stringify(detail)},"code":"${code}"`;
    if (extra.field !== undefined) body += `,"field":${JSON.stringify(extra.field)}`;
    if (extra.retryAfterSeconds !== undefined)
      body += `,"retryAfterSeconds":${JSON.stringify(extra.retryAfterSeconds)}`;
    body += '}';
    length = String(Buffer.byteLength(body));
    lastProblem = {
      status,
      code,
      detail,
      field: extra.field,
      retryAfterSeconds: extra.retryAfterSeconds,
      body,
      length,
    };
  }
  const all: Record<string, string> = {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': length,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  };
  // A loop, not an object spread: spreading these header objects measured slower than the
  // rest of the function together.
  if (headers) for (const name in headers) all[name] = headers[name] as string;
  return { status, headers: all, body };
}

const problemStarts = new Map<string, string>();

/** `{"type":…,"title":…,"status":…,` for a status and code. */
function problemStart(status: number, code: ExportErrorCode): string {
  const key = `${status} ${code}`;
  let start = problemStarts.get(key);
  if (start === undefined) {
    const title = STATUS_CODES[status] ?? (status === 499 ? 'Client Closed Request' : 'Error');
    start = `{"type":${JSON.stringify(problemType(code))},"title":${JSON.stringify(title)},"status":${status},`;
    if (problemStarts.size < 256) problemStarts.set(key, start);
  }
  return start;
}

/**
 * Maps an error to a problem response. Only the library's own errors (recognised by
 * {@link isExportError}) are answered with their status and message; anything else is a
 * generic 500 whose details stay out of the body. `internal` tells the caller to report it:
 * true for every 5xx but a 501 (a feature the server was not configured for) and a 503 while
 * shutting down.
 */
export function errorToProblem(error: unknown): { response: ExportHttpResponse; internal: boolean } {
  if (!isExportError(error)) {
    return { response: problemResponse(500, 'INTERNAL', 'An internal error occurred'), internal: true };
  }
  const status =
    Number.isInteger(error.statusCode) && error.statusCode >= 400 && error.statusCode <= 599
      ? error.statusCode
      : 500;
  const field = error.details?.field;
  const extra: Pick<Problem, 'field' | 'retryAfterSeconds'> = typeof field === 'string' ? { field } : {};
  const headers: Record<string, string> = {};
  if (isBackpressureError(error)) {
    extra.retryAfterSeconds = error.retryAfterSeconds;
    headers['retry-after'] = String(error.retryAfterSeconds);
  }
  return {
    response: problemResponse(status, error.code, error.message, extra, headers),
    // Not failures to report: a 501 is the server's configuration answering as designed, and a
    // 503 while shutting down is the manager's `rejected` event already.
    internal: status >= 500 && status !== 501 && !isBackpressureError(error),
  };
}
