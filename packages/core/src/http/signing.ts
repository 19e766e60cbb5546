import { createHmac, timingSafeEqual } from 'node:crypto';
import { describeValue } from '../errors.js';
import { isJobId } from '../jobs/job.js';

/** The shortest secret accepted for signing download links. */
const MIN_SECRET_BYTES = 16;
// Canonical decimal only: `0002000` names the same second but is not the link that was signed.
const EXPIRES = /^(?:0|[1-9]\d{0,14})$/;

/** What a download signature covers. */
export interface DownloadSignatureInput {
  jobId: string;
  /** The owner the link downloads as; `undefined` for jobs without an owner. */
  owner?: string | undefined;
  /** Expiry in Unix seconds. */
  expires: number;
}

/** The outcome of {@link verifyDownloadSignature}. */
export type DownloadSignatureCheck = 'valid' | 'expired' | 'invalid';

/**
 * HMAC-SHA256 (base64url) over the job id, the owner and the expiry. The message is a JSON
 * array, so no choice of owner can make two different inputs collide.
 */
export function computeDownloadSignature(secret: string | Buffer, input: DownloadSignatureInput): string {
  return createHmac('sha256', checkSecret(secret))
    .update(JSON.stringify(['spark-export/download/v1', input.jobId, input.owner ?? null, input.expires]))
    .digest('base64url');
}

/**
 * The path and query of a signed download link:
 * `<prefix>/jobs/<id>/download?expires=<unix seconds>[&owner=<owner>]&sig=<signature>`. Prepend
 * your origin. Anyone holding the link can download the file until it expires, without `identify`.
 *
 * @example
 * ```ts
 * const path = signDownloadPath('a-long-random-secret', { jobId: job.id, owner: 'user-1', expires: Math.floor(Date.now() / 1000) + 600 });
 * ```
 */
export function signDownloadPath(
  secret: string | Buffer,
  input: DownloadSignatureInput & { /** @default '/export' */ prefix?: string },
): string {
  if (!isJobId(input.jobId)) throw new TypeError(`Expected a job id, got ${describeValue(input.jobId)}`);
  if (!Number.isSafeInteger(input.expires) || input.expires < 0) {
    throw new TypeError(
      `Expected expires to be Unix seconds (an integer >= 0), got ${describeValue(input.expires)}`,
    );
  }
  const query = new URLSearchParams({ expires: String(input.expires) });
  if (input.owner !== undefined) query.set('owner', input.owner);
  query.set('sig', computeDownloadSignature(secret, input));
  return `${normalizePrefix(input.prefix ?? '/export')}/jobs/${input.jobId}/download?${query}`;
}

/**
 * Checks a signed link's values in constant time, then its expiry against `nowMs`. Missing,
 * malformed or altered values are `invalid`, and so is any spelling but the one that was signed
 * (`expires` with leading zeros, another base64url form of the same signature bytes); a genuine
 * link past its expiry is `expired`.
 */
export function verifyDownloadSignature(
  secret: string | Buffer,
  input: {
    jobId: string;
    owner?: string | null | undefined;
    expires: string | number | null | undefined;
    signature: string | null | undefined;
  },
  nowMs: number = Date.now(),
): DownloadSignatureCheck {
  const expiresText = typeof input.expires === 'number' ? String(input.expires) : input.expires;
  if (typeof expiresText !== 'string' || !EXPIRES.test(expiresText)) return 'invalid';
  if (typeof input.signature !== 'string') return 'invalid';
  const expires = Number(expiresText);
  // The text is compared, not the decoded bytes: base64url decoding ignores the 2 unused bits
  // of the last character (and stray characters), so 4 spellings would decode to one HMAC.
  const expected = Buffer.from(
    computeDownloadSignature(secret, { jobId: input.jobId, owner: input.owner ?? undefined, expires }),
    'utf8',
  );
  const given = Buffer.from(input.signature, 'utf8');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid';
  return nowMs >= expires * 1000 ? 'expired' : 'valid';
}

export interface DownloadSignerOptions {
  /** The HMAC key: at least 16 bytes; keep it secret and the same on every replica. */
  secret: string | Buffer;
  /** The mount prefix of the HTTP API. @default '/export' */
  prefix?: string;
  /** Lifetime of links signed without `expiresInSeconds`. @default 3600 */
  ttlSeconds?: number;
  /** Clock in epoch milliseconds, for tests. @default Date.now */
  now?: () => number;
}

export interface DownloadSigner {
  /** The path and query of a signed download link for a job (prepend your origin). */
  sign(jobId: string, options?: { owner?: string | undefined; expiresInSeconds?: number }): string;
  /** Checks a link's `expires`, `owner` and `sig` query values for a job. */
  verify(input: {
    jobId: string;
    owner?: string | null | undefined;
    expires: string | null | undefined;
    signature: string | null | undefined;
  }): DownloadSignatureCheck;
}

/**
 * A signer bound to a secret, prefix and clock. `createExportHandler({ signing })` uses one; a
 * host may create its own (with the same secret and prefix) to mint links elsewhere.
 *
 * @example
 * ```ts
 * const signer = createDownloadSigner({ secret: process.env.EXPORT_LINK_SECRET!, prefix: '/export' });
 * res.json({ url: `https://example.com${signer.sign(job.id, { owner: user.id, expiresInSeconds: 600 })}` });
 * ```
 */
export function createDownloadSigner(options: DownloadSignerOptions): DownloadSigner {
  const secret = checkSecret(options.secret);
  const prefix = normalizePrefix(options.prefix ?? '/export');
  const ttlSeconds = checkTtl('ttlSeconds', options.ttlSeconds ?? 3600);
  const now = options.now ?? Date.now;
  return {
    sign(jobId, signOptions = {}) {
      const ttl =
        signOptions.expiresInSeconds === undefined
          ? ttlSeconds
          : checkTtl('expiresInSeconds', signOptions.expiresInSeconds);
      const expires = Math.floor(now() / 1000) + ttl;
      return signDownloadPath(secret, { jobId, owner: signOptions.owner, expires, prefix });
    },
    verify(input) {
      return verifyDownloadSignature(secret, input, now());
    },
  };
}

/** `/export/` -> `/export`; `export` -> `/export`; `/` -> ``. */
export function normalizePrefix(prefix: string): string {
  if (typeof prefix !== 'string')
    throw new TypeError(`Expected prefix to be a string, got ${describeValue(prefix)}`);
  const trimmed = prefix.replace(/\/+$/, '');
  return trimmed === '' || trimmed.startsWith('/') ? trimmed : `/${trimmed}`;
}

function checkSecret(secret: string | Buffer): Buffer {
  const bytes =
    typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.isBuffer(secret) ? secret : undefined;
  if (!bytes || bytes.length < MIN_SECRET_BYTES) {
    throw new TypeError(
      `Expected signing secret to be a string or Buffer of at least ${MIN_SECRET_BYTES} bytes, got ${bytes ? `${bytes.length} bytes` : typeof secret}`,
    );
  }
  return bytes;
}

function checkTtl(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`Expected ${name} to be an integer >= 1, got ${describeValue(value)}`);
  }
  return value;
}
