import type { Readable } from 'node:stream';
import {
  fromBatches,
  fromJsonArray,
  fromNdjson,
  isExportError,
  type Params,
  type RowSource,
  type SourceContext,
} from '@spark-export/core';
import { sourceFailure } from './errors.js';
import { streamBatchReader } from './parsed-stream.js';

export interface HttpJsonSourceOptions {
  dataset: string;
  url: string;
  /** @default 'GET' */
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  /** Longest wait for the response headers, and for each next chunk of the body. */
  timeoutMs: number;
  /** `json`: one array (at `path`); `ndjson`: one value per line. */
  format: 'json' | 'ndjson';
  /** Dot path of the array inside the document, e.g. `data.items`. */
  path: string | undefined;
  /** Where the validated params go: the URL's query string, a JSON body, or nowhere. */
  paramsIn: 'query' | 'body' | 'none';
  batchSize: number;
}

class UpstreamTimeout extends Error {}

/**
 * Fetches the upstream and parses its body incrementally (stream-json): rows flow while the
 * upstream is still sending, and a multi-gigabyte body never sits in memory. A non-2xx answer,
 * a timeout (no headers, or a stalled body) and malformed JSON fail the export with a message
 * that says which; the upstream's URL and body stay in the logs (`cause`), not in the job.
 */
export async function openHttpJsonSource(
  options: HttpJsonSourceOptions,
  params: Params,
  context: SourceContext,
): Promise<RowSource> {
  const { dataset, timeoutMs } = options;
  const label = `The upstream of dataset "${dataset}"`;
  const controller = new AbortController();
  const onAbort = () => controller.abort(context.signal.reason);
  context.signal.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new UpstreamTimeout());
    }, timeoutMs);
  };
  const stop = () => {
    clearTimeout(timer);
    context.signal.removeEventListener('abort', onAbort);
  };

  const url = new URL(options.url);
  const headers: Record<string, string> = {
    accept: 'application/json, application/x-ndjson',
    ...options.headers,
  };
  let body: string | undefined;
  if (options.paramsIn === 'query') {
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  } else if (options.paramsIn === 'body') {
    body = JSON.stringify(params);
    headers['content-type'] = 'application/json';
  }

  arm();
  let response: Response;
  try {
    response = await fetch(url, {
      method: options.method,
      headers,
      body,
      signal: controller.signal,
      redirect: 'follow',
    });
  } catch (error) {
    stop();
    if (context.signal.aborted) throw context.signal.reason;
    if (timedOut) throw sourceFailure(`${label} did not answer within ${timeoutMs} ms`, error);
    throw sourceFailure(`${label} could not be reached`, error);
  }
  if (!response.ok || !response.body) {
    stop();
    await response.body?.cancel().catch(() => {});
    throw sourceFailure(
      response.ok ? `${label} answered with an empty body` : `${label} answered HTTP ${response.status}`,
      new Error(
        `${options.method} ${url.origin}${url.pathname} answered ${response.status} ${response.statusText}`,
      ),
    );
  }

  const reader = response.body.getReader();
  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        arm();
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } catch (error) {
      if (timedOut) throw sourceFailure(`${label} stopped sending for more than ${timeoutMs} ms`, error);
      if (context.signal.aborted) throw context.signal.reason;
      throw sourceFailure(`${label} broke off its response`, error);
    } finally {
      stop();
      reader.cancel().catch(() => {});
    }
  }

  let parsed: Readable;
  try {
    parsed =
      options.format === 'ndjson'
        ? fromNdjson(chunks())
        : fromJsonArray(chunks(), options.path ? { path: options.path } : {});
  } catch (error) {
    stop();
    throw error;
  }
  return fromBatches({
    highWaterMark: options.batchSize,
    signal: context.signal,
    readBatch: streamBatchReader(parsed, options.batchSize),
    close() {
      stop();
      parsed.destroy();
      controller.abort();
    },
    // The parser's own message may quote upstream data: it goes to the logs only.
    mapError: (error) =>
      isExportError(error)
        ? error
        : sourceFailure(`${label} sent malformed ${options.format === 'ndjson' ? 'NDJSON' : 'JSON'}`, error),
  });
}
