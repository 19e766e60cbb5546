import { createHash, timingSafeEqual } from 'node:crypto';
import { ExportError, type ExportHttpRequest } from '@spark-export/core';

export interface AuthOptions {
  /** `EXPORT_API_TOKEN`: when set, requests need `Authorization: Bearer <token>`. */
  apiToken?: string | undefined;
  /** `EXPORT_OWNER_HEADER` (lower case): the header a trusted proxy sets to the user's id. */
  ownerHeader?: string | undefined;
}

/**
 * The sidecar's `identify`: checks the bearer token (constant time) and reads the owner from
 * the configured header. The core never calls it for `/export/status` (health checks stay
 * open) nor for signed download links (the signature is the credential).
 *
 * The owner header is only as trustworthy as the proxy in front: it must overwrite whatever
 * the client sent (nginx `proxy_set_header X-User-Id $user_id;` after `auth_request`), and the
 * sidecar must not be reachable around that proxy.
 */
export function createIdentify(options: AuthOptions): (request: ExportHttpRequest) => string | undefined {
  const expected = options.apiToken === undefined ? undefined : digest(options.apiToken);
  const ownerHeader = options.ownerHeader?.toLowerCase();
  return (request) => {
    if (expected !== undefined) {
      const header = request.headers.authorization;
      const token = typeof header === 'string' ? /^Bearer +([^\s]+) *$/i.exec(header)?.[1] : undefined;
      // Hashing first makes the comparison constant-time whatever the lengths.
      if (token === undefined || !timingSafeEqual(digest(token), expected)) {
        throw new ExportError('UNAUTHORIZED', 401, 'Missing or invalid bearer token');
      }
    }
    if (ownerHeader === undefined) return undefined;
    const owner = request.headers[ownerHeader];
    if (typeof owner !== 'string' || owner.trim() === '') {
      throw new ExportError(
        'UNAUTHORIZED',
        401,
        `Missing the ${ownerHeader} header that identifies the user`,
      );
    }
    return owner.trim();
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
