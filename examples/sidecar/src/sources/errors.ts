import { ExportError } from '@spark-export/core';

/**
 * A source failure whose message is safe and useful to show to the client (the job's
 * `error.message`): it names what went wrong without internal hosts, paths or stack traces.
 * The underlying error stays in `cause`, for the logs.
 */
export function sourceFailure(message: string, cause?: unknown): ExportError {
  return new ExportError('SOURCE_FAILED', 502, message, cause === undefined ? {} : { cause });
}

/** Describes a value for validation messages: `"ten" (string)`, `-1 (number)`, `null`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string')
    return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} (string)`;
  if (typeof value === 'object') return 'an object';
  return `${String(value)} (${typeof value})`;
}
