import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';

/**
 * The exports page's own files, next to the package (`examples/sidecar/ui/`), read from the
 * source tree and from `dist/` alike.
 */
const UI_DIR = new URL('../ui/', import.meta.url);

const ASSETS: Record<string, { file: string; type: string }> = {
  '': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/**
 * Only the page's own files run, load or are talked to: no inline script or style, no other
 * origin, no frames, no forms posting anywhere. The page needs nothing more.
 */
export const UI_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export interface UiOptions {
  /** Where the API is mounted, e.g. `/export`; the page is at `<prefix>/ui`. */
  prefix: string;
  /** Whether API calls need `Authorization: Bearer` (the page then asks for the token). */
  bearer: boolean;
  /** The owner header the page sends (it asks for the value), if any. */
  ownerHeader: string | undefined;
}

/**
 * Serves the exports page at `<prefix>/ui`: three static files and the page's settings
 * (`config.json`: which headers the API wants). They hold no data, so they are open like
 * `/status`; every API call the page makes carries the token and owner the user typed in.
 */
export async function registerUi(app: FastifyInstance, options: UiOptions): Promise<void> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [path, asset] of Object.entries(ASSETS)) {
    files.set(path, { body: await readFile(new URL(asset.file, UI_DIR)), type: asset.type });
  }
  const settings = Buffer.from(
    JSON.stringify({ auth: options.bearer ? 'bearer' : 'none', ownerHeader: options.ownerHeader ?? null }),
  );
  files.set('/config.json', { body: settings, type: 'application/json; charset=utf-8' });
  const base = `${options.prefix}/ui`;
  for (const [path, file] of files) {
    app.get(`${base}${path}`, async (_request, reply) =>
      reply
        .code(200)
        .headers({
          'content-type': file.type,
          'content-security-policy': UI_CONTENT_SECURITY_POLICY,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
          // Revalidated on every load, so that a new version of the page is never mixed with old assets.
          'cache-control': 'no-cache',
        })
        .send(file.body),
    );
  }
}
