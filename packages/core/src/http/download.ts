import contentDispositionModule from 'content-disposition';
import rangeParser from 'range-parser';
import { type Compression, compressionExtension } from '../compression.js';
import { getFormat } from '../formats/index.js';
import type { JobFileInfo } from '../types.js';
import { problemResponse } from './problem.js';
import type { ExportHttpRequest, ExportHttpResponse } from './types.js';

type CreateContentDisposition = (
  filename?: string,
  options?: { type?: string; fallback?: string | boolean },
) => string;
// The declared dependency (content-disposition 1.x) exports this function itself and ships no
// types; in this monorepo TypeScript may find a hoisted 2.x (which exports `{ create }`) first.
const contentDisposition = contentDispositionModule as unknown as CreateContentDisposition;

/**
 * Removes what must never reach a saved file name or a header: control characters (CR/LF
 * included), quotes, slashes and backslashes, and leading dots. Falls back to `download`.
 *
 * With the export's `extension` (`.csv`, `.csv.gz`) a name that ends with it is cleaned before
 * the extension, so that a name with nothing else (`...` -> `....csv`) becomes `download.csv`
 * rather than a bare `csv`.
 */
export function sanitizeFilename(name: string, extension?: string): string {
  if (extension && name.length >= extension.length && name.toLowerCase().endsWith(extension.toLowerCase())) {
    const stem = cleanName(name.slice(0, -extension.length), { trimEnd: false });
    return `${stem === '' ? 'download' : stem}${name.slice(-extension.length)}`;
  }
  const cleaned = cleanName(name, { trimEnd: true });
  return cleaned === '' ? 'download' : cleaned;
}

function cleanName(name: string, { trimEnd }: { trimEnd: boolean }): string {
  let kept = '';
  for (const char of name) {
    const code = char.codePointAt(0) ?? 0;
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f) || char === '"' || char === '/' || char === '\\')
      continue;
    kept += char;
  }
  // Spaces before the extension stay ("report .csv"), as the name was asked for.
  return (trimEnd ? kept.trim() : kept.trimStart()).replace(/^[.\s]+/, '');
}

/** The extension of an export's files: `.csv`, `.ndjson`, `.json.gz`, `.csv.zst`. */
export function fileExtension(format: string, compression: Compression | undefined): string {
  return `.${getFormat(format).extension}${compressionExtension(compression)}`;
}

/**
 * A `Content-Disposition: attachment` value with a plain ASCII `filename` (accents dropped,
 * other non-ASCII characters as `_`) and, when that differs, the exact UTF-8 name as `filename*`.
 * `extension` is kept as {@link sanitizeFilename} explains.
 *
 * @example
 * ```ts
 * attachmentDisposition('a"b\r\n/c\\d ü.csv'); // attachment; filename="abcd u.csv"; filename*=UTF-8''abcd%20%C3%BC.csv
 * attachmentDisposition('....csv', '.csv'); // attachment; filename="download.csv"
 * ```
 */
export function attachmentDisposition(filename: string, extension?: string): string {
  const name = sanitizeFilename(filename, extension);
  const ascii = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^\x20-\x7e]/g, '_')
    .replace(/%/g, '_');
  return contentDisposition(name, { type: 'attachment', fallback: ascii });
}

/** True when an `If-None-Match` value matches the ETag (weak comparison, `*` included). */
export function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  const strip = (tag: string) => tag.trim().replace(/^W\//, '');
  return ifNoneMatch.split(',').some((tag) => tag.trim() === '*' || strip(tag) === strip(etag));
}

export interface DownloadResponseOptions {
  /** Answer with `X-Accel-Redirect: <prefix><file name>` and no body, for nginx `internal` locations. */
  accelRedirect?: { prefix: string } | undefined;
}

/**
 * The response for a finished job's file: full (200), one range (206), unsatisfiable (416)
 * or not modified (304). A `Range` with several ranges is answered with the whole file
 * (200), as RFC 9110 allows; an invalid `Range`, one of another unit than `bytes`, or an
 * `If-Range` that does not match the ETag, is ignored likewise.
 */
export async function downloadResponse(
  request: ExportHttpRequest,
  info: JobFileInfo,
  options: DownloadResponseOptions = {},
): Promise<ExportHttpResponse> {
  // Object storage that presigns URLs serves the bytes (and ranges) itself.
  if (info.url) return { status: 302, headers: { location: info.url, 'cache-control': 'no-store' } };
  const etag = `"${info.sha256}"`;
  const common: Record<string, string> = {
    etag,
    'cache-control': 'private',
    'accept-ranges': 'bytes',
    'x-content-type-options': 'nosniff',
  };
  if (etagMatches(header(request, 'if-none-match'), etag)) return { status: 304, headers: common };

  const headers: Record<string, string> = {
    ...common,
    'content-type': info.contentType,
    'content-disposition': attachmentDisposition(
      info.filename,
      fileExtension(info.job.format, info.job.compression),
    ),
  };
  if (options.accelRedirect) {
    // nginx serves the bytes (ranges included) from its internal location and adds its own
    // Accept-Ranges; ours would reach the client as a second one ("bytes, bytes").
    const { 'accept-ranges': _ours, ...forNginx } = headers;
    return {
      status: 200,
      headers: { ...forNginx, 'x-accel-redirect': `${options.accelRedirect.prefix}${info.name}` },
    };
  }

  const size = info.size;
  let start = 0;
  let end = size - 1;
  let status = 200;
  const range = header(request, 'range');
  const ifRange = header(request, 'if-range');
  if (range !== undefined && isValidByteRange(range) && (ifRange === undefined || ifRange.trim() === etag)) {
    // The unit is case-insensitive; range-parser only knows `bytes` in lower case.
    const ranges = rangeParser(size, `bytes${range.slice(range.indexOf('='))}`, { combine: true });
    if (ranges === -1) {
      return problemResponse(
        416,
        'RANGE_NOT_SATISFIABLE',
        `The range ${range.slice(0, 100)} is outside the file of ${size} bytes`,
        {},
        {
          ...common,
          'content-range': `bytes */${size}`,
        },
      );
    }
    if (ranges !== -2 && ranges.type === 'bytes' && ranges.length === 1 && ranges[0]) {
      status = 206;
      start = ranges[0].start;
      end = ranges[0].end;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
  }
  headers['content-length'] = String(size === 0 ? 0 : end - start + 1);
  if (request.method === 'HEAD') return { status, headers };

  // Opening before answering turns a file removed in the meantime into a 410, not a cut response.
  const body = await info.read(size === 0 || status === 200 ? undefined : { start, end });
  return { status, headers, body };
}

// RFC 9110 section 14.1.2: `bytes=` then a comma-separated list (with optional whitespace) of
// `first-last`, `first-` or `-suffix`, digits only.
const BYTE_RANGE_SET = /^bytes=[ \t]*(?:\d+-\d*|-\d+)(?:[ \t]*,[ \t]*(?:\d+-\d*|-\d+))*[ \t]*$/i;

/**
 * True for a `Range` value the server must act on: the `bytes` unit and well-formed ranges,
 * none with its last position before its first. range-parser alone would call `bytes=abc` or
 * `foo=9-` unsatisfiable (416); RFC 9110 has a server ignore an invalid or unknown-unit range.
 */
export function isValidByteRange(value: string): boolean {
  if (!BYTE_RANGE_SET.test(value)) return false;
  for (const spec of value.slice(value.indexOf('=') + 1).split(',')) {
    const [first, last] = spec.trim().split('-');
    if (first !== '' && last !== '' && BigInt(last!) < BigInt(first!)) return false;
  }
  return true;
}

function header(request: ExportHttpRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}
