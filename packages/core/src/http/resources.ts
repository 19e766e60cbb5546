import { Readable } from 'node:stream';
import Negotiator from 'negotiator';
import { wireEncodings } from '../compression.js';
import type { Dataset, ParamSpec } from '../dataset.js';
import { BackpressureError } from '../errors.js';
import type { ExportRequest } from '../request.js';
import { attachmentDisposition, fileExtension } from './download.js';
import type { ExportService } from './service.js';
import type { ExportHttpRequest, ExportHttpResponse } from './types.js';

/**
 * The coding to send a streamed export in, by the request's `Accept-Encoding` (q-values
 * honoured; gzip, then zstd, at equal preference), or `undefined` for identity: also when the
 * client refuses identity and accepts nothing we have, as a 406 would help nobody.
 */
export function negotiateEncoding(request: Pick<ExportHttpRequest, 'headers'>): 'gzip' | 'zstd' | undefined {
  const header = request.headers['accept-encoding'];
  if (header === undefined || header === '') return undefined;
  const available = wireEncodings();
  const negotiator = new Negotiator({ headers: { 'accept-encoding': header } });
  // negotiator 1.x takes the server's order for ties; its 0.6 types do not know that argument.
  const encodings = negotiator.encodings as (
    available: string[],
    options: { preferred: string[] },
  ) => string[];
  const accepted = encodings.call(negotiator, [...available, 'identity'], { preferred: available });
  const best = accepted[0];
  return best === 'gzip' || best === 'zstd' ? best : undefined;
}

/**
 * The answer to `HEAD /stream/:dataset`: the request is checked as for a GET (404, 422, 400,
 * 503 while shutting down), but nothing runs and no slot is taken, so the headers are those of
 * a GET that was admitted. A HEAD that held a slot would only turn the next GET away.
 */
export function streamHead(
  manager: ExportService,
  request: ExportRequest,
  accepted: 'gzip' | 'zstd' | undefined,
): ExportHttpResponse {
  const { contentType, filename, compression = 'none' } = manager.describe(request);
  if (manager.closing) {
    throw new BackpressureError({
      reason: 'shutting_down',
      limit: manager.limit,
      inFlight: manager.inFlight,
    });
  }
  return {
    status: 200,
    headers: streamHeaders(
      contentType,
      filename,
      fileExtension(request.format, compression),
      compression === 'none' ? accepted : undefined,
    ),
  };
}

export function streamHeaders(
  contentType: string,
  filename: string,
  extension: string,
  contentEncoding?: 'gzip' | 'zstd' | undefined,
): Record<string, string> {
  return {
    'content-type': contentType,
    ...(contentEncoding === undefined ? {} : { 'content-encoding': contentEncoding }),
    // The body depends on Accept-Encoding whenever it could be coded for the wire.
    vary: 'accept-encoding',
    'content-disposition': attachmentDisposition(filename, extension),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  };
}

/** A HEAD answer: the status and headers of the GET, its body (a stream is closed) left out. */
export function withoutBody(response: ExportHttpResponse): ExportHttpResponse {
  if (response.body instanceof Readable) response.body.destroy();
  const { body: _body, ...rest } = response;
  return rest;
}

export function describeDataset(dataset: Dataset) {
  return {
    name: dataset.name,
    description: dataset.description ?? null,
    columns:
      dataset.columns?.map((column) => ({
        name: column.name,
        label: column.label ?? column.name,
        type: column.type ?? null,
        description: column.description ?? null,
      })) ?? null,
    formats: [...dataset.formats],
    params: Object.fromEntries(
      Object.entries(dataset.params ?? {}).map(([name, spec]) => [name, describeParam(spec)]),
    ),
  };
}

export function describeParam(spec: ParamSpec) {
  return {
    type: spec.type,
    required: spec.required ?? false,
    ...(spec.default === undefined ? {} : { default: spec.default }),
    ...(spec.values === undefined ? {} : { values: [...spec.values] }),
    ...(spec.min === undefined ? {} : { min: spec.min }),
    ...(spec.max === undefined ? {} : { max: spec.max }),
    ...(spec.maxLength === undefined ? {} : { maxLength: spec.maxLength }),
    ...(spec.description === undefined ? {} : { description: spec.description }),
  };
}

export function json(
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): ExportHttpResponse {
  const body = JSON.stringify(value);
  return {
    status,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
      ...headers,
    },
    body,
  };
}
