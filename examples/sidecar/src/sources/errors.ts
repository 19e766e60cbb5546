import { ExportError } from '@spark-export/core';

/**
 * A source failure whose message is safe and useful to show to the client (the job's
 * `error.message`): it names what went wrong without internal hosts, paths or stack traces.
 * The underlying error stays in `cause`, for the logs.
 */
export function sourceFailure(message: string, cause?: unknown): ExportError {
  return new ExportError('SOURCE_FAILED', 502, message, cause === undefined ? {} : { cause });
}
