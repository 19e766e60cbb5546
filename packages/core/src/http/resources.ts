import { Readable } from 'node:stream';
import type { Dataset, ParamSpec } from '../dataset.js';
import { BackpressureError } from '../errors.js';
import type { ExportRequest } from '../request.js';
import { attachmentDisposition, fileExtension } from './download.js';
import type { ExportService } from './service.js';
import type { ExportHttpResponse } from './types.js';

/**
 * The answer to `HEAD /stream/:dataset`: the request is checked as for a GET (404, 422, 400,
 * 503 while shutting down), but nothing runs and no slot is taken, so the headers are those of
 * a GET that was admitted. A HEAD that held a slot would only turn the next GET away.
 */
export function streamHead(manager: ExportService, request: ExportRequest): ExportHttpResponse {
  const { contentType, filename } = manager.describe(request);
  if (manager.closing) {
    throw new BackpressureError({
      reason: 'shutting_down',
      limit: manager.limit,
      inFlight: manager.inFlight,
    });
  }
  return {
    status: 200,
    headers: streamHeaders(contentType, filename, fileExtension(request.format, request.compression)),
  };
}

export function streamHeaders(
  contentType: string,
  filename: string,
  extension: string,
): Record<string, string> {
  return {
    'content-type': contentType,
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
