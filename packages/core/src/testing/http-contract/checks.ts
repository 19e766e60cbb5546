// What the HTTP contract suite asks of responses and events, and the requests fetch cannot make.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { expect } from 'vitest';
import type { ExportManager } from '../../export-manager.js';
import type { ExportManagerEvents } from '../../types.js';
import type { SchemaCheck } from './openapi.js';

export type EventName = keyof ExportManagerEvents;

/** Resolves with the arguments of the next `event` whose arguments satisfy `predicate`. Subscribe before acting. */
export function nextEvent<K extends EventName>(
  manager: ExportManager,
  event: K,
  predicate: (...args: ExportManagerEvents[K]) => boolean = () => true,
): Promise<ExportManagerEvents[K]> {
  return new Promise((resolve) => {
    const listener = (...args: ExportManagerEvents[K]) => {
      if (!predicate(...args)) return;
      manager.off(event, listener as never);
      resolve(args);
    };
    manager.on(event, listener as never);
  });
}

/** Resolves once `event` was emitted `count` times. Subscribe before acting. */
export function events(manager: ExportManager, event: EventName, count: number): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    const listener = () => {
      seen++;
      if (seen < count) return;
      manager.off(event, listener);
      resolve();
    };
    manager.on(event, listener);
  });
}

export function postJob(api: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${api}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Reads a JSON body, checking its media type and the component schema `schema`. */
export async function readJson(
  response: Response,
  schema: string,
  check: SchemaCheck,
): Promise<Record<string, unknown>> {
  const text = await response.text();
  expect(response.headers.get('content-type'), text).toMatch(/^application\/json/);
  const body = JSON.parse(text) as Record<string, unknown>;
  check(schema, body);
  return body;
}

/** Checks a problem response (status, media type, schema, code) and returns its body. */
export async function readProblem(
  check: SchemaCheck,
  response: Response,
  status: number,
  code: string,
  ...otherCodes: string[]
): Promise<Record<string, unknown>> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  expect(response.headers.get('content-type')).toBe('application/problem+json');
  const body = JSON.parse(text) as Record<string, unknown>;
  check('Problem', body);
  expect(body.status).toBe(status);
  expect([code, ...otherCodes]).toContain(body.code);
  expect(body.type).toBe(
    `https://spark-export.dev/problems/${String(body.code).toLowerCase().replace(/_/g, '-')}`,
  );
  return body;
}

/** The messages of an error and of its causes, for what an operator would read in a log. */
export function causes(error: unknown): string {
  const messages: string[] = [];
  for (let current = error; current instanceof Error; current = current.cause) messages.push(current.message);
  return messages.join(' <- ');
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The other spellings of a 43-character base64url value (32 bytes) that decode to the same bytes. */
export function sameBytesSignatures(sig: string): string[] {
  const last = BASE64URL.indexOf(sig.at(-1)!);
  const variants = [0, 1, 2, 3].map((low) => `${sig.slice(0, -1)}${BASE64URL[(last & ~3) | low]}`);
  const others = variants.filter((variant) => variant !== sig);
  for (const variant of others) {
    expect(Buffer.from(variant, 'base64url').equals(Buffer.from(sig, 'base64url'))).toBe(true);
  }
  return others;
}

/** The value of one Prometheus sample with exactly these labels. */
export function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    const keys = Object.keys(labels);
    if (Object.keys(found).length === keys.length && keys.every((key) => found[key] === labels[key])) {
      return Number(match[3]);
    }
  }
  return undefined;
}

/** A request through node:http, for what fetch cannot express (chunked uploads). */
export function rawRequest(
  url: string,
  options: { method: string; headers: Record<string, string>; chunks: string[] },
): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, { method: options.method, headers: options.headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }),
      );
      response.on('error', reject);
    });
    request.on('error', reject);
    for (const chunk of options.chunks) request.write(chunk);
    request.end();
  });
}

/** One Server-Sent Event as a client parses it (a comment is `{ comment }`). */
export interface SseMessage {
  event?: string;
  id?: string;
  data?: string;
  retry?: string;
  comment?: string;
}

/**
 * Reads a `text/event-stream` body message by message, as it arrives (so that a test sees
 * whether an adapter flushes each event or buffers them). `next()` resolves with `undefined`
 * at the end of the stream.
 */
export function sseReader(response: Response): {
  next(): Promise<SseMessage | undefined>;
  cancel(): Promise<void>;
} {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const parse = (block: string): SseMessage => {
    const message: SseMessage = {};
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        message.comment = line.slice(1).trim();
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') message.data = message.data === undefined ? value : `${message.data}\n${value}`;
      else if (field === 'event' || field === 'id' || field === 'retry') message[field] = value;
    }
    return message;
  };
  return {
    async next() {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          return parse(block);
        }
        const { done, value } = await reader.read();
        if (done) return undefined;
        buffer += decoder.decode(value, { stream: true });
      }
    },
    cancel: () => reader.cancel().catch(() => {}),
  };
}

/** The next message of `reader` with an `event:` field (skipping `retry:` and comments). */
export async function nextSseEvent(reader: ReturnType<typeof sseReader>): Promise<SseMessage | undefined> {
  for (;;) {
    const message = await reader.next();
    if (message === undefined || message.event !== undefined) return message;
  }
}
