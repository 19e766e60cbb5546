import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../jobs/atomic-file.js';
import type { WebhookEventType } from './webhook-options.js';

export type WebhookDeliveryStatus = 'pending' | 'delivered' | 'failed' | 'disabled';

/** One event for one endpoint, with everything needed to send it again after a restart. */
export interface WebhookDelivery {
  version: 1;
  /** `whd_` and 22 base64url characters; the record's file name. */
  id: string;
  /** The event's `webhook-id` (`msg_…`): the same on every attempt and for every endpoint. */
  eventId: string;
  type: WebhookEventType;
  jobId: string;
  endpoint: string;
  /** The exact body sent on every attempt. */
  payload: string;
  status: WebhookDeliveryStatus;
  /** Attempts made (their outcomes known). */
  attempts: number;
  createdAt: string;
  /** When the next attempt is due while `pending`. */
  nextAttemptAt: string | null;
  lastAttemptAt: string | null;
  deliveredAt: string | null;
  /** The HTTP status of the last attempt, `null` when it got none (timeout, refused). */
  lastStatusCode: number | null;
  /** Why the last attempt failed, in a few words; `null` after a success. */
  lastError: string | null;
}

/**
 * The **delivery store seam**: where webhook delivery state lives. The local one is a directory
 * of files; a shared one (Redis) lets the replicas of a cluster see each other's deliveries.
 */
export interface WebhookDeliveryStore {
  /** Reads the stored state; called once, before anything else. */
  open(): Promise<void>;
  /** Creates or replaces a delivery (a copy is kept). Writes of one delivery land in call order. */
  save(delivery: WebhookDelivery): Promise<void>;
  get(id: string): Promise<WebhookDelivery | undefined>;
  /** A job's deliveries, oldest first. */
  forJob(jobId: string): Promise<WebhookDelivery[]>;
  /** Every delivery still `pending`. */
  pending(): Promise<WebhookDelivery[]>;
  remove(id: string): Promise<void>;
  /** Finished deliveries created before `beforeMs` (epoch ms), for pruning. */
  finishedBefore(beforeMs: number): Promise<WebhookDelivery[]>;
  /** Endpoints disabled by a 410, by name, with the URL that answered it. */
  disabledEndpoints(): Promise<Map<string, { url: string; at: string }>>;
  /** Records (or, with `undefined`, clears) an endpoint's disabled state. */
  setDisabled(name: string, state: { url: string; at: string } | undefined): Promise<void>;
  /** Lets pending writes land. */
  close(): Promise<void>;
}

export const DELIVERY_ID_PATTERN = /^whd_[A-Za-z0-9_-]{22}$/;

export function createDeliveryId(): string {
  return `whd_${randomBytes(16).toString('base64url')}`;
}

/** The `webhook-id` of an event: unique per event, repeated on each of its attempts. */
export function createEventId(): string {
  return `msg_${randomBytes(16).toString('base64url')}`;
}

const ENDPOINTS_FILE = 'endpoints.json';

/**
 * Delivery records as JSON files (`whd_<id>.json`) in a directory of their own (the manager
 * uses `<exports directory>/webhooks`), each written atomically like the job manifests, with
 * an in-memory index read at `open()`: one process owns the directory. Disabled endpoints are
 * in `endpoints.json`. A record that cannot be read is moved aside to `<name>.corrupt`.
 */
export class FileWebhookDeliveryStore implements WebhookDeliveryStore {
  readonly directory: string;
  readonly #records = new Map<string, WebhookDelivery>();
  readonly #writes = new Map<string, Promise<void>>();
  #disabled = new Map<string, { url: string; at: string }>();
  readonly #onWarning: (message: string, cause?: unknown) => void;

  constructor(directory: string, options: { onWarning?: (message: string, cause?: unknown) => void } = {}) {
    this.directory = directory;
    this.#onWarning = options.onWarning ?? (() => {});
  }

  async open(): Promise<void> {
    await mkdir(this.directory, { recursive: true });
    for (const name of await readdir(this.directory)) {
      if (/\.[0-9a-f]+\.tmp$/.test(name)) {
        await rm(join(this.directory, name), { force: true });
        continue;
      }
      const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : undefined;
      try {
        if (name === ENDPOINTS_FILE) {
          const state = JSON.parse(await readFile(join(this.directory, name), 'utf8')) as {
            disabled?: Record<string, { url: string; at: string }>;
          };
          this.#disabled = new Map(Object.entries(state.disabled ?? {}));
        } else if (id && DELIVERY_ID_PATTERN.test(id)) {
          this.#records.set(id, parseDelivery(await readFile(join(this.directory, name), 'utf8'), id));
        }
      } catch (error) {
        await rename(join(this.directory, name), join(this.directory, `${name}.corrupt`));
        this.#onWarning(`Moved the unreadable webhook state ${name} aside to ${name}.corrupt`, error);
      }
    }
  }

  save(delivery: WebhookDelivery): Promise<void> {
    const snapshot = structuredClone(delivery);
    this.#records.set(delivery.id, snapshot);
    return this.#serialized(delivery.id, () =>
      writeFileAtomic(this.#path(delivery.id), `${JSON.stringify(snapshot)}\n`),
    );
  }

  async get(id: string): Promise<WebhookDelivery | undefined> {
    const record = this.#records.get(id);
    return record && structuredClone(record);
  }

  async forJob(jobId: string): Promise<WebhookDelivery[]> {
    return this.#select((delivery) => delivery.jobId === jobId);
  }

  async pending(): Promise<WebhookDelivery[]> {
    return this.#select((delivery) => delivery.status === 'pending');
  }

  async finishedBefore(beforeMs: number): Promise<WebhookDelivery[]> {
    return this.#select(
      (delivery) => delivery.status !== 'pending' && Date.parse(delivery.createdAt) < beforeMs,
    );
  }

  remove(id: string): Promise<void> {
    this.#records.delete(id);
    return this.#serialized(id, () => rm(this.#path(id), { force: true }));
  }

  async disabledEndpoints(): Promise<Map<string, { url: string; at: string }>> {
    return new Map(this.#disabled);
  }

  setDisabled(name: string, state: { url: string; at: string } | undefined): Promise<void> {
    if (state) this.#disabled.set(name, { ...state });
    else this.#disabled.delete(name);
    const text = `${JSON.stringify({ disabled: Object.fromEntries(this.#disabled) }, null, 2)}\n`;
    return this.#serialized(ENDPOINTS_FILE, () =>
      writeFileAtomic(join(this.directory, ENDPOINTS_FILE), text),
    );
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#writes.values()]);
  }

  #path(id: string): string {
    if (!DELIVERY_ID_PATTERN.test(id))
      throw new TypeError(`Expected a delivery id, got ${JSON.stringify(id)}`);
    return join(this.directory, `${id}.json`);
  }

  #select(keep: (delivery: WebhookDelivery) => boolean): WebhookDelivery[] {
    return [...this.#records.values()]
      .filter(keep)
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0))
      .map((delivery) => structuredClone(delivery));
  }

  /** Writes of one file happen one after another, in order; a failed one does not stop the next. */
  #serialized(key: string, write: () => Promise<void>): Promise<void> {
    const next = (this.#writes.get(key) ?? Promise.resolve()).then(write);
    const settled: Promise<void> = next.then(
      () => this.#forget(key, settled),
      () => this.#forget(key, settled),
    );
    this.#writes.set(key, settled);
    return next;
  }

  #forget(key: string, settled: Promise<void>): void {
    if (this.#writes.get(key) === settled) this.#writes.delete(key);
  }
}

function parseDelivery(text: string, id: string): WebhookDelivery {
  const value = JSON.parse(text) as Partial<WebhookDelivery>;
  if (typeof value !== 'object' || value === null || value.version !== 1 || value.id !== id) {
    throw new Error('Not a webhook delivery record of version 1 with a matching id');
  }
  if (
    typeof value.payload !== 'string' ||
    typeof value.eventId !== 'string' ||
    typeof value.endpoint !== 'string'
  ) {
    throw new Error('The delivery record lacks its payload, event id or endpoint');
  }
  return value as WebhookDelivery;
}
