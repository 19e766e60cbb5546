import type { Readable } from 'node:stream';
import { ExportError, ValidationError } from '../errors.js';
import type { ExportHttpRequest } from './types.js';

/** True for `application/json` and `application/<anything>+json`, parameters ignored. */
export function isJsonContentType(value: string | string[] | undefined): boolean {
  const first = Array.isArray(value) ? value[0] : value;
  if (!first) return false;
  const type = first.split(';')[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || /^application\/[a-z0-9.!#$%&'*^_`|~-]+\+json$/.test(type);
}

/**
 * Reads and parses a JSON request body of at most `maxBytes`: a body the host already parsed
 * (`request.body`), or the raw `bodyStream`, counted while read (a `Content-Length` over the
 * limit is refused before reading anything).
 *
 * @throws {ExportError} 415 not JSON, 413 too large, 400 malformed or empty
 */
export async function readJsonBody(request: ExportHttpRequest, maxBytes: number): Promise<unknown> {
  if (!isJsonContentType(request.headers['content-type'])) {
    throw new ExportError('UNSUPPORTED_MEDIA_TYPE', 415, 'Expected a request body of type application/json');
  }
  if (request.body !== undefined && !Buffer.isBuffer(request.body) && typeof request.body !== 'string') {
    return request.body;
  }
  let text: string;
  if (request.body !== undefined) {
    const raw = request.body as Buffer | string;
    if (Buffer.byteLength(raw) > maxBytes) throw tooLarge(maxBytes);
    text = raw.toString();
  } else {
    const declared = Number(request.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBytes) {
      discard(request.bodyStream);
      throw tooLarge(maxBytes);
    }
    text = request.bodyStream ? await readLimited(request.bodyStream, maxBytes) : '';
  }
  if (text.trim() === '') throw badRequest('Expected a JSON request body, got an empty body');
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw badRequest('The request body is not valid JSON', error);
  }
}

function readLimited(stream: Readable, maxBytes: number): Promise<string> {
  if (stream.readableEnded) return Promise.resolve('');
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const onData = (chunk: Buffer | string) => {
      const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      bytes += buffer.length;
      if (bytes > maxBytes) {
        cleanup();
        // Destroying a node request would take the socket (and the 413 answer) with it: drain instead.
        discard(stream);
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(buffer);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (error: unknown) => {
      cleanup();
      reject(badRequest('The request body could not be read', error));
    };
    const onClose = () => {
      cleanup();
      reject(badRequest('The request body ended early'));
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
    stream.once('close', onClose);
  });
}

function discard(stream: Readable | undefined): void {
  if (!stream || stream.destroyed) return;
  stream.on('error', () => {});
  stream.resume();
}

function tooLarge(maxBytes: number): ExportError {
  return new ExportError('PAYLOAD_TOO_LARGE', 413, `Expected a request body of at most ${maxBytes} bytes`);
}

function badRequest(message: string, cause?: unknown): ValidationError {
  return new ValidationError(message, {
    code: 'BAD_REQUEST',
    statusCode: 400,
    ...(cause === undefined ? {} : { cause }),
  });
}
