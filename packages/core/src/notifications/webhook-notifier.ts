import { createDownloadSigner, type DownloadSigner, normalizePrefix } from '../http/signing.js';
import type { Job } from '../jobs/job.js';
import type { ExportMetrics } from '../metrics.js';
import type { JobEventContext } from '../types.js';
import { VERSION } from '../version.js';
import { REAL_TIMERS, type Timers, type WebhookDeliveryQueue } from './delivery-queue.js';
import {
  createDeliveryId,
  createEventId,
  type WebhookDelivery,
  type WebhookDeliveryStatus,
  type WebhookDeliveryStore,
} from './delivery-store.js';
import type {
  ResolvedEndpoint,
  ResolvedWebhookOptions,
  WebhookEventType,
  WebhookJobContext,
  WebhookLinkOptions,
} from './webhook-options.js';

/** A delivery as `GET /jobs/:id` shows it under `notifications`: never the URL or a secret. */
export interface WebhookDeliveryView {
  /** The event's `webhook-id`. */
  id: string;
  type: WebhookEventType;
  endpoint: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  createdAt: string;
  lastAttemptAt: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
}

/** The body of every webhook (Standard Webhooks' recommended `type`, `timestamp`, `data`). */
export interface WebhookPayload {
  type: WebhookEventType;
  timestamp: string;
  data: {
    job: Job & { links: { self: string; download: string | null } };
    owner: string | null;
    notify: string | null;
  };
}

export interface WebhookNotifierOptions {
  config: ResolvedWebhookOptions;
  endpointsFor: ((context: WebhookJobContext) => readonly string[] | undefined) | undefined;
  links: WebhookLinkOptions | undefined;
  store: WebhookDeliveryStore;
  queue: WebhookDeliveryQueue;
  metrics: ExportMetrics | undefined;
  fetch: typeof fetch;
  now: () => number;
  random: () => number;
  timers?: Timers;
  warn: (message: string, cause?: unknown) => void;
}

interface AttemptResult {
  statusCode: number | null;
  error: string | null;
  /** The attempt was cut short by close(): it does not count, the delivery stays pending. */
  interrupted?: boolean;
}

/**
 * Turns job events into signed webhook deliveries: one stored delivery per event and endpoint,
 * sent at least once by the queue, retried with exponential backoff and jitter up to
 * `maxAttempts`, each attempt bounded by `timeoutMs`. A 2xx delivers; a 410 disables the
 * endpoint (stored, so it stays disabled after a restart until its URL changes); anything
 * else is tried again. Nothing here holds an export slot: deliveries run beside the exports.
 */
export class WebhookNotifier {
  readonly #options: WebhookNotifierOptions;
  readonly #timers: Timers;
  readonly #signer: DownloadSigner | undefined;
  readonly #prefix: string;
  readonly #origin: string;
  readonly #creating = new Set<Promise<void>>();
  /** Attempts in flight, aborted by close() so that a hanging receiver cannot hold a shutdown. */
  readonly #sending = new Set<AbortController>();
  #closing = false;
  #disabled = new Map<string, { url: string; at: string }>();
  #opened: Promise<void> | undefined;

  constructor(options: WebhookNotifierOptions) {
    this.#options = options;
    this.#timers = options.timers ?? REAL_TIMERS;
    const links = options.links ?? {};
    this.#prefix = normalizePrefix(links.prefix ?? '/export');
    this.#origin = (links.origin ?? '').replace(/\/+$/, '');
    this.#signer = links.signing
      ? createDownloadSigner({
          secret: links.signing.secret,
          prefix: this.#prefix,
          now: options.now,
          ...(links.signing.ttlSeconds === undefined ? {} : { ttlSeconds: links.signing.ttlSeconds }),
        })
      : undefined;
  }

  /**
   * Reads the stored state and schedules what is still pending (deliveries a crash
   * interrupted are sent again: at least once). An endpoint disabled for a URL it no longer
   * has is enabled again.
   */
  open(): Promise<void> {
    this.#opened ??= this.#open();
    return this.#opened;
  }

  async #open(): Promise<void> {
    const { store, queue, config } = this.#options;
    await store.open();
    this.#disabled = await store.disabledEndpoints();
    for (const [name, state] of this.#disabled) {
      if (config.endpoints.get(name)?.url === state.url) continue;
      this.#disabled.delete(name);
      await store.setDisabled(name, undefined);
    }
    queue.start((id) =>
      this.#attempt(id).catch((error: unknown) => {
        // The state could not be read or stored (a full disk): tried again later, as stored.
        this.#options.warn(`A webhook delivery attempt (${id}) failed to record its state`, error);
        return this.#options.now() + config.initialBackoffMs;
      }),
    );
    for (const delivery of await store.pending()) {
      queue.schedule(delivery, Date.parse(delivery.nextAttemptAt ?? delivery.createdAt));
    }
    await this.prune();
  }

  /** Notifies of the manager's job events that webhooks carry; ignores the others. */
  observe(event: string, args: readonly unknown[]): void {
    const type = EVENT_TYPES[event];
    if (!type) return;
    // job:failed carries the error between the job and the context.
    const job = args[0] as Job;
    const context = args[args.length - 1] as JobEventContext;
    this.notify(type, job, context);
  }

  /** Records the event's deliveries and schedules them; never throws (failures are warnings). */
  notify(type: WebhookEventType, job: Job, context: JobEventContext): void {
    const creating = this.#create(type, job, context).catch((error: unknown) =>
      this.#options.warn(`Could not record the ${type} webhook of job ${job.id}`, error),
    );
    this.#creating.add(creating);
    void creating.finally(() => this.#creating.delete(creating));
  }

  /** A job's deliveries, oldest first. */
  async deliveriesOf(jobId: string): Promise<WebhookDeliveryView[]> {
    await this.open();
    return (await this.#options.store.forJob(jobId)).map(toView);
  }

  /** Forgets finished deliveries older than `keepDeliveriesMs`. */
  async prune(): Promise<number> {
    const { store, config, now } = this.#options;
    const old = await store.finishedBefore(now() - config.keepDeliveriesMs);
    for (const delivery of old) await store.remove(delivery.id);
    return old.length;
  }

  /** Lets recorded events land, stops the queue (attempts in flight end) and the store. */
  async close(): Promise<void> {
    await this.#opened?.catch(() => {});
    await Promise.allSettled([...this.#creating]);
    this.#closing = true;
    for (const controller of this.#sending) controller.abort();
    await this.#options.queue.close();
    await this.#options.store.close();
  }

  async #create(type: WebhookEventType, job: Job, context: JobEventContext): Promise<void> {
    await this.open();
    const { config, store, queue, now, endpointsFor, warn } = this.#options;
    const owner = context.owner;
    const notify = context.notify;
    // endpointsFor is asked only about events some endpoint receives.
    if (![...config.endpoints.values()].some((endpoint) => endpoint.events.has(type))) return;
    const names = endpointsFor ? (endpointsFor({ job, owner, notify }) ?? []) : [...config.endpoints.keys()];
    const endpoints: ResolvedEndpoint[] = [];
    for (const name of new Set(names)) {
      const endpoint = config.endpoints.get(name);
      if (!endpoint)
        warn(`webhooks.endpointsFor named the unknown endpoint ${JSON.stringify(name)}; skipped`);
      else if (endpoint.events.has(type)) endpoints.push(endpoint);
    }
    if (endpoints.length === 0) return;
    const at = now();
    const payload: WebhookPayload = {
      type,
      timestamp: new Date(at).toISOString(),
      data: { job: { ...job, links: this.#links(job, owner) }, owner: owner ?? null, notify: notify ?? null },
    };
    const eventId = createEventId();
    const body = JSON.stringify(payload);
    for (const endpoint of endpoints) {
      const disabled = this.#disabled.has(endpoint.name);
      const delivery: WebhookDelivery = {
        version: 1,
        id: createDeliveryId(),
        eventId,
        type,
        jobId: job.id,
        endpoint: endpoint.name,
        payload: body,
        status: disabled ? 'disabled' : 'pending',
        attempts: 0,
        createdAt: new Date(at).toISOString(),
        nextAttemptAt: disabled ? null : new Date(at).toISOString(),
        lastAttemptAt: null,
        deliveredAt: null,
        lastStatusCode: null,
        lastError: disabled ? 'the endpoint is disabled (it answered 410 Gone)' : null,
      };
      await store.save(delivery);
      if (!disabled) queue.schedule(delivery, at);
    }
  }

  #links(job: Job, owner: string | undefined): { self: string; download: string | null } {
    const self = `${this.#origin}${this.#prefix}/jobs/${job.id}`;
    if (job.status !== 'succeeded') return { self, download: null };
    const download = this.#signer
      ? this.#signer.sign(job.id, { owner })
      : `${this.#prefix}/jobs/${job.id}/download`;
    return { self, download: `${this.#origin}${download}` };
  }

  /** One attempt; resolves with when the next is due, or `undefined` when the delivery is settled. */
  async #attempt(id: string): Promise<number | undefined> {
    const { store, config, metrics, now } = this.#options;
    const delivery = await store.get(id);
    if (delivery?.status !== 'pending') return undefined;
    const endpoint = config.endpoints.get(delivery.endpoint);
    if (!endpoint || this.#disabled.has(endpoint.name)) {
      delivery.status = endpoint ? 'disabled' : 'failed';
      delivery.nextAttemptAt = null;
      delivery.lastError = endpoint
        ? 'the endpoint is disabled (it answered 410 Gone)'
        : 'the endpoint is no longer configured';
      await store.save(delivery);
      return undefined;
    }
    const result = await this.#send(endpoint, delivery);
    // Left pending as stored: sent again after the restart.
    if (result.interrupted) return undefined;
    const at = now();
    delivery.attempts++;
    delivery.lastAttemptAt = new Date(at).toISOString();
    delivery.lastStatusCode = result.statusCode;
    delivery.lastError = result.error;
    let next: number | undefined;
    if (result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300) {
      delivery.status = 'delivered';
      delivery.deliveredAt = delivery.lastAttemptAt;
      metrics?.webhookDeliveries.inc({ outcome: 'delivered' });
      metrics?.webhookDeliveryLatency.observe(Math.max(0, at - Date.parse(delivery.createdAt)) / 1000);
    } else if (result.statusCode === 410) {
      delivery.status = 'disabled';
      metrics?.webhookDeliveries.inc({ outcome: 'disabled' });
      this.#disabled.set(endpoint.name, { url: endpoint.url, at: delivery.lastAttemptAt });
      await store.setDisabled(endpoint.name, { url: endpoint.url, at: delivery.lastAttemptAt });
      this.#options.warn(
        `Webhook endpoint ${JSON.stringify(endpoint.name)} answered 410 Gone and is disabled until its URL changes`,
      );
    } else if (delivery.attempts >= config.maxAttempts) {
      delivery.status = 'failed';
      metrics?.webhookDeliveries.inc({ outcome: 'failed' });
    } else {
      next = at + this.#backoff(delivery.attempts);
      metrics?.webhookDeliveries.inc({ outcome: 'retry' });
    }
    delivery.nextAttemptAt = next === undefined ? null : new Date(next).toISOString();
    await store.save(delivery);
    return next;
  }

  /**
   * The delay after the `attempts`-th failure: `initialBackoffMs` doubled per attempt, capped
   * at `maxBackoffMs`, of which a random half is taken away ("equal jitter"), so that the
   * retries of many deliveries spread out instead of arriving together.
   */
  #backoff(attempts: number): number {
    const { initialBackoffMs, maxBackoffMs } = this.#options.config;
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** Math.min(attempts - 1, 40));
    return Math.round(ceiling / 2 + (this.#options.random() * ceiling) / 2);
  }

  async #send(endpoint: ResolvedEndpoint, delivery: WebhookDelivery): Promise<AttemptResult> {
    const { timeoutMs } = this.#options.config;
    // Signed at each attempt: receivers reject timestamps more than a few minutes off.
    const sentAt = new Date(this.#options.now());
    const signature = endpoint.signers
      .map((signer) => signer.sign(delivery.eventId, sentAt, delivery.payload))
      .join(' ');
    const controller = new AbortController();
    if (this.#closing) return { statusCode: null, error: null, interrupted: true };
    this.#sending.add(controller);
    const timer = this.#timers.setTimeout(() => controller.abort(), timeoutMs);
    try {
      const response = await this.#options.fetch(endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': `spark-export-webhooks/${VERSION}`,
          'webhook-id': delivery.eventId,
          'webhook-timestamp': String(Math.floor(sentAt.getTime() / 1000)),
          'webhook-signature': signature,
        },
        body: delivery.payload,
        // A redirect could point anywhere, an internal address included: it is a failure.
        redirect: 'manual',
        signal: controller.signal,
      });
      // Only the status matters; the body is not read.
      await response.body?.cancel().catch(() => {});
      const ok = response.status >= 200 && response.status < 300;
      return { statusCode: response.status, error: ok ? null : `answered HTTP ${response.status}` };
    } catch (error) {
      if (this.#closing) return { statusCode: null, error: null, interrupted: true };
      if (controller.signal.aborted) return { statusCode: null, error: `no answer within ${timeoutMs} ms` };
      const cause = (error as { cause?: { code?: unknown } }).cause;
      const code = typeof cause?.code === 'string' ? cause.code : 'a network error';
      return { statusCode: null, error: `could not connect (${code})` };
    } finally {
      this.#sending.delete(controller);
      this.#timers.clearTimeout(timer);
    }
  }
}

const EVENT_TYPES: Record<string, WebhookEventType | undefined> = {
  'job:started': 'export.started',
  'job:succeeded': 'export.succeeded',
  'job:failed': 'export.failed',
  'job:cancelled': 'export.cancelled',
  'job:expired': 'export.expired',
};

function toView(delivery: WebhookDelivery): WebhookDeliveryView {
  return {
    id: delivery.eventId,
    type: delivery.type,
    endpoint: delivery.endpoint,
    status: delivery.status,
    attempts: delivery.attempts,
    createdAt: delivery.createdAt,
    lastAttemptAt: delivery.lastAttemptAt,
    nextAttemptAt: delivery.nextAttemptAt,
    deliveredAt: delivery.deliveredAt,
    lastStatusCode: delivery.lastStatusCode,
    lastError: delivery.lastError,
  };
}
