// The same `Content-Disposition` as the HTTP handler of @spark-export/core sends when it serves a
// file itself, so that a presigned download saves under the same name. Core does not export its
// `attachmentDisposition` from the package root, so this is a copy of its logic (its sanitizing,
// then content-disposition 1.x with an ASCII fallback); a test checks both agree.

/**
 * Removes what must never reach a saved file name or a header: control characters (CR/LF
 * included), quotes, slashes and backslashes, and leading dots. Falls back to `download`.
 */
function sanitizeFilename(name: string): string {
  let kept = '';
  for (const char of name) {
    const code = char.codePointAt(0) ?? 0;
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f) || char === '"' || char === '/' || char === '\\')
      continue;
    kept += char;
  }
  const cleaned = kept.trim().replace(/^\.+/, '');
  return cleaned === '' ? 'download' : cleaned;
}

/** The last path segment; NFKD can turn fullwidth slashes of the fallback into real ones. */
function basename(path: string): string {
  const segments = path.replaceAll('\\', '/').replace(/\/+$/, '').split('/');
  return segments.at(-1) ?? '';
}

function quoted(value: string): string {
  return `"${value.replace(/([\\"])/g, '\\$1')}"`;
}

/** RFC 8187 `ext-value`: UTF-8, percent-encoded; of what encodeURIComponent keeps, `'()*` are no `attr-char`. */
function extValue(value: string): string {
  const encoded = encodeURIComponent(value).replace(
    /[*'()]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `UTF-8''${encoded}`;
}

/**
 * A `Content-Disposition: attachment` value with a plain ASCII `filename` (accents dropped,
 * other non-ASCII characters as `_`) and, when that differs, the exact UTF-8 name as `filename*`.
 *
 * @example
 * ```ts
 * attachmentDisposition('Bestellungen ü.csv'); // attachment; filename="Bestellungen u.csv"; filename*=UTF-8''Bestellungen%20%C3%BC.csv
 * ```
 */
export function attachmentDisposition(filename: string): string {
  const name = sanitizeFilename(filename);
  const ascii = basename(
    name
      .normalize('NFKD')
      .replace(/[\u0300-\u036f]/g, '')
      .replace(/[^\x20-\x7e]/g, '_')
      .replace(/%/g, '_'),
  );
  if (ascii === name) return `attachment; filename=${quoted(name)}`;
  return `attachment; filename=${quoted(ascii)}; filename*=${extValue(name)}`;
}
