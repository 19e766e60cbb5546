import { isJobId } from '../jobs/job.js';

export type RouteName =
  | 'status'
  | 'metrics'
  | 'datasets'
  | 'jobs'
  | 'job'
  | 'cancel'
  | 'download'
  | 'events'
  | 'stream';

export interface Route {
  name: RouteName;
  /** A job id (checked) or a dataset name (decoded). */
  param?: string;
}

/**
 * The API's routes, relative to the prefix, in Express/Fastify path syntax. Adapters that
 * register routes one by one (Fastify, for `printRoutes()` and per-route hooks) read them here.
 * Every route that answers GET answers HEAD too (RFC 9110): the same status and headers, no body.
 */
export const EXPORT_ROUTES: readonly { name: RouteName; path: string; methods: readonly string[] }[] = [
  { name: 'status', path: '/status', methods: ['GET', 'HEAD'] },
  { name: 'metrics', path: '/metrics', methods: ['GET', 'HEAD'] },
  { name: 'datasets', path: '/datasets', methods: ['GET', 'HEAD'] },
  { name: 'jobs', path: '/jobs', methods: ['GET', 'HEAD', 'POST'] },
  { name: 'job', path: '/jobs/:id', methods: ['GET', 'HEAD', 'DELETE'] },
  { name: 'cancel', path: '/jobs/:id/cancel', methods: ['POST'] },
  { name: 'download', path: '/jobs/:id/download', methods: ['GET', 'HEAD'] },
  { name: 'events', path: '/jobs/:id/events', methods: ['GET', 'HEAD'] },
  { name: 'stream', path: '/stream/:dataset', methods: ['GET', 'HEAD'] },
];

/** The methods each route answers. */
export const ALLOWED_METHODS = Object.fromEntries(
  EXPORT_ROUTES.map((route) => [route.name, route.methods]),
) as Record<RouteName, readonly string[]>;

/** What a `:name` segment of a route path accepts. Job ids are checked before anything else. */
const PARAMS: Record<string, (value: string) => boolean> = {
  ':id': isJobId,
  ':dataset': (value) => value !== '',
};

/** EXPORT_ROUTES as segment lists, matched in order. */
const COMPILED = EXPORT_ROUTES.map((route) => ({
  name: route.name,
  segments: route.path.slice(1).split('/'),
}));

/** The decoded path segments after the prefix, or `undefined` when the path is not under it. */
export function underPrefix(prefix: string, path: string): string[] | undefined {
  if (path !== prefix && !path.startsWith(`${prefix}/`)) return undefined;
  const rest = path.slice(prefix.length);
  return rest === '' || rest === '/' ? [] : rest.slice(1).split('/');
}

/**
 * Matches decoded segments to a route of {@link EXPORT_ROUTES}. A `:id` must be a job id, so a
 * path like `jobs/..%2F..%2Fetc%2Fpasswd` is a 404 that touches nothing. Malformed
 * percent-encoding is a 404 too.
 */
export function matchRoute(raw: readonly string[]): Route | undefined {
  const segments: string[] = [];
  for (const segment of raw) {
    try {
      segments.push(decodeURIComponent(segment));
    } catch {
      return undefined;
    }
  }
  for (const route of COMPILED) {
    if (route.segments.length !== segments.length) continue;
    let param: string | undefined;
    const matches = route.segments.every((pattern, index) => {
      const value = segments[index] as string;
      const check = PARAMS[pattern];
      if (!check) return pattern === value;
      param = value;
      return check(value);
    });
    if (matches) return param === undefined ? { name: route.name } : { name: route.name, param };
  }
  return undefined;
}
