import { Webhook } from 'standardwebhooks';
import { checkInteger, describeValue } from '../checks.js';
import type { Job } from '../jobs/job.js';
import type { Timers, WebhookDeliveryQueue } from './delivery-queue.js';
import type { WebhookDeliveryStore } from './delivery-store.js';

/** The events a webhook endpoint can receive. */
export type WebhookEventType =
  | 'export.started'
  | 'export.succeeded'
  | 'export.failed'
  | 'export.cancelled'
  | 'export.expired';

export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  'export.started',
  'export.succeeded',
  'export.failed',
  'export.cancelled',
  'export.expired',
];

/** What an endpoint receives when it names no `events`: the final states of a job. */
export const DEFAULT_WEBHOOK_EVENTS: readonly WebhookEventType[] = [
  'export.succeeded',
  'export.failed',
  'export.cancelled',
  'export.expired',
];

/** An operator-configured receiver. Its URL comes from the configuration, never from a request. */
export interface WebhookEndpoint {
  /** Names the endpoint in delivery state, metrics-free logs and `endpointsFor`. @default 'default' for the first, else required */
  name?: string;
  /** `http:` or `https:` URL the events are POSTed to. Redirects are not followed. */
  url: string;
  /** A Standard Webhooks secret: `whsec_` and base64 (24 to 64 random bytes). */
  secret?: string;
  /**
   * Several secrets, for rotation: every delivery is signed with each (one `v1,` signature per
   * secret), so a receiver verifying with either the old or the new one accepts it.
   */
  secrets?: readonly string[];
  /** The events it receives. @default the final ones: succeeded, failed, cancelled, expired */
  events?: readonly WebhookEventType[];
}

/** The job an event is about, as `endpointsFor` sees it. */
export interface WebhookJobContext {
  job: Job;
  /** The job's owner (from `identify`), if any. */
  owner: string | undefined;
  /** The job's `notify` tag, if the request had one. */
  notify: string | undefined;
}

export interface WebhookOptions {
  endpoints: readonly WebhookEndpoint[];
  /**
   * Which endpoints get a job's events, by name; e.g. from the job's `notify` tag, which the
   * host app maps to endpoints of its own. Unknown names are reported (`warning`) and skipped.
   * @default every endpoint
   */
  endpointsFor?: (context: WebhookJobContext) => readonly string[] | undefined;
  /** Links in the payload (`links.self`, `links.download`). */
  links?: WebhookLinkOptions;
  /** Attempts per delivery, the first included. @default 8 */
  maxAttempts?: number;
  /** Time one attempt may take, connection to response headers. @default 10_000 */
  timeoutMs?: number;
  /** First retry delay; each further one doubles, with jitter. @default 5_000 */
  initialBackoffMs?: number;
  /** Longest retry delay. @default 3_600_000 (an hour) */
  maxBackoffMs?: number;
  /** Deliveries in flight at once in this process. @default 8 */
  maxConcurrent?: number;
  /** Deliveries in flight at once to one endpoint, so that a slow receiver cannot take every one. @default 2 */
  maxConcurrentPerEndpoint?: number;
  /** Finished delivery records are forgotten after this. @default 7 days */
  keepDeliveriesMs?: number;
  /** Where delivery state lives. @default a {@link FileWebhookDeliveryStore} in `<directory>/webhooks` */
  store?: WebhookDeliveryStore;
  /** Schedules attempts. @default a {@link LocalWebhookDeliveryQueue} (timers in this process) */
  queue?: WebhookDeliveryQueue;
  /** The HTTP client. @default the global `fetch` */
  fetch?: typeof fetch;
  /** Timers of the attempt timeouts (and of the default queue), for tests. @default the global ones */
  timers?: Timers;
}

export interface WebhookLinkOptions {
  /** Prepended to the links, e.g. `https://exports.example.com`. @default '' (paths only) */
  origin?: string;
  /** The HTTP API's mount prefix. @default '/export' */
  prefix?: string;
  /**
   * The handler's `signing` secret: `links.download` is then a signed link that expires after
   * `ttlSeconds` and works without `identify` (the receiver may hand it on to the user).
   */
  signing?: { secret: string | Buffer; ttlSeconds?: number };
}

/** An endpoint with its defaults resolved and its secrets checked. */
export interface ResolvedEndpoint {
  name: string;
  url: string;
  signers: readonly Webhook[];
  events: ReadonlySet<WebhookEventType>;
}

export interface ResolvedWebhookOptions {
  endpoints: ReadonlyMap<string, ResolvedEndpoint>;
  maxAttempts: number;
  timeoutMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  maxConcurrent: number;
  maxConcurrentPerEndpoint: number;
  keepDeliveriesMs: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks `webhooks` options: a `TypeError` naming the bad one. */
export function checkWebhookOptions(options: WebhookOptions): ResolvedWebhookOptions {
  if (typeof options !== 'object' || options === null || !Array.isArray(options.endpoints)) {
    throw new TypeError(
      `Expected webhooks.endpoints to be an array, got ${describeValue(options?.endpoints)}`,
    );
  }
  const endpoints = new Map<string, ResolvedEndpoint>();
  options.endpoints.forEach((endpoint: WebhookEndpoint, index) => {
    const where = `webhooks.endpoints[${index}]`;
    const name = endpoint.name ?? (index === 0 ? 'default' : undefined);
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw new TypeError(
        `Expected ${where}.name to be 1-64 letters, digits, ".", "_" or "-" (required but for the first endpoint), got ${describeValue(endpoint.name)}`,
      );
    }
    if (endpoints.has(name)) throw new TypeError(`Expected ${where}.name to be unique, got "${name}" twice`);
    endpoints.set(name, {
      name,
      url: checkUrl(`${where}.url`, endpoint.url),
      signers: checkSecrets(where, endpoint),
      events: checkEvents(`${where}.events`, endpoint.events),
    });
  });
  if (options.endpointsFor !== undefined && typeof options.endpointsFor !== 'function') {
    throw new TypeError(
      `Expected webhooks.endpointsFor to be a function, got ${describeValue(options.endpointsFor)}`,
    );
  }
  const initialBackoffMs = checkInteger('webhooks.initialBackoffMs', options.initialBackoffMs ?? 5_000, {
    min: 1,
  });
  return {
    endpoints,
    maxAttempts: checkInteger('webhooks.maxAttempts', options.maxAttempts ?? 8, { min: 1, max: 100 }),
    timeoutMs: checkInteger('webhooks.timeoutMs', options.timeoutMs ?? 10_000, { min: 1 }),
    initialBackoffMs,
    maxBackoffMs: checkInteger('webhooks.maxBackoffMs', options.maxBackoffMs ?? 3_600_000, {
      min: initialBackoffMs,
    }),
    maxConcurrent: checkInteger('webhooks.maxConcurrent', options.maxConcurrent ?? 8, { min: 1 }),
    maxConcurrentPerEndpoint: checkInteger(
      'webhooks.maxConcurrentPerEndpoint',
      options.maxConcurrentPerEndpoint ?? 2,
      { min: 1 },
    ),
    keepDeliveriesMs: checkInteger(
      'webhooks.keepDeliveriesMs',
      options.keepDeliveriesMs ?? 7 * 24 * 3_600_000,
      {
        min: 1,
      },
    ),
  };
}

function checkUrl(name: string, value: unknown): string {
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) {
    throw new TypeError(
      `Expected ${name} to be an http: or https: URL without credentials, got ${describeValue(value)}`,
    );
  }
  return url.href;
}

function checkSecrets(where: string, endpoint: WebhookEndpoint): Webhook[] {
  if ((endpoint.secret === undefined) === (endpoint.secrets === undefined)) {
    throw new TypeError(`Expected ${where} to have either secret or secrets (whsec_... strings)`);
  }
  const secrets = endpoint.secret === undefined ? endpoint.secrets : [endpoint.secret];
  if (!Array.isArray(secrets) || secrets.length === 0) {
    throw new TypeError(`Expected ${where}.secrets to be a non-empty array, got ${describeValue(secrets)}`);
  }
  return secrets.map((secret: unknown, index) => {
    const name = endpoint.secret === undefined ? `${where}.secrets[${index}]` : `${where}.secret`;
    // The value is never shown: it is a secret.
    const expected = `Expected ${name} to be "whsec_" followed by base64 of at least 24 bytes (the value is not shown)`;
    if (typeof secret !== 'string' || !/^whsec_[A-Za-z0-9+/]+={0,2}$/.test(secret))
      throw new TypeError(expected);
    if (Buffer.from(secret.slice('whsec_'.length), 'base64').length < 24) throw new TypeError(expected);
    return new Webhook(secret);
  });
}

function checkEvents(name: string, value: unknown): Set<WebhookEventType> {
  if (value === undefined) return new Set(DEFAULT_WEBHOOK_EVENTS);
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    !value.every((event) => WEBHOOK_EVENT_TYPES.includes(event as WebhookEventType))
  ) {
    throw new TypeError(
      `Expected ${name} to be a non-empty array of ${WEBHOOK_EVENT_TYPES.join(', ')}, got ${describeValue(value)}`,
    );
  }
  return new Set(value as WebhookEventType[]);
}
