import type { JobChange, JobChangeType, JobEventFeed, JobStore } from '@spark-export/core';
import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { QUEUE_NAME } from './bull-job-queue.js';
import { checkPrefix, describeValue } from './checks.js';
import { DEFAULT_PREFIX } from './keys.js';

export interface BullJobEventFeedOptions {
  /** Duplicated for BullMQ's event reader (a blocking connection), which the feed closes; never closed itself. */
  redis: Redis;
  /** The replicas' job store: the owner of a job whose event does not carry it is read there. */
  store: JobStore;
  /** The prefix the `BullJobQueue`s were given. @default 'spark-export:' */
  prefix?: string;
  /** Told about Redis errors of the event reader. @default () => {} */
  onError?: (error: unknown) => void;
}

/**
 * Every replica's job changes, from BullMQ's event stream (`QueueEvents`): a job waiting
 * (`queued`), taken by a worker (`started`), its progress, and its end (`succeeded`,
 * `cancelled`, `failed`). A change is a wake-up, not the state: a subscriber that joins late
 * misses earlier changes, so it reads the job (the store is the truth) on each one. Expiry by
 * retention is not in BullMQ's stream (the job left BullMQ when it finished).
 *
 * @example
 * ```ts
 * const events = new BullJobEventFeed({ redis, store });
 * const manager = new ExportManager({ limiter, jobQueue, store, storage, events });
 * ```
 */
export class BullJobEventFeed implements JobEventFeed {
  readonly #events: QueueEvents;
  readonly #connection: Redis;
  readonly #store: JobStore;
  readonly #listeners = new Set<(change: JobChange) => void>();
  /** Owners of jobs seen recently, so that progress does not cost a store read each. */
  readonly #owners = new Map<string, string | null>();
  #closing: Promise<void> | undefined;

  constructor(options: BullJobEventFeedOptions) {
    if (typeof options?.redis?.duplicate !== 'function') {
      throw new TypeError(`Expected redis to be an ioredis client, got ${describeValue(options?.redis)}`);
    }
    if (typeof options.store?.get !== 'function') {
      throw new TypeError(`Expected store to be a JobStore, got ${describeValue(options.store)}`);
    }
    this.#store = options.store;
    const onError = options.onError ?? (() => {});
    this.#connection = options.redis.duplicate({ maxRetriesPerRequest: null });
    this.#events = new QueueEvents(QUEUE_NAME, {
      connection: this.#connection,
      prefix: `${checkPrefix(options.prefix ?? DEFAULT_PREFIX)}bull`,
    });
    this.#events.on('error', onError);
    const relay = (type: JobChangeType, jobId: string) => {
      this.#relay(type, jobId).catch(onError);
    };
    this.#events.on('waiting', ({ jobId }) => relay('queued', jobId));
    this.#events.on('active', ({ jobId }) => relay('started', jobId));
    this.#events.on('progress', ({ jobId }) => relay('progress', jobId));
    this.#events.on('failed', ({ jobId }) => relay('failed', jobId));
    // A waiting job taken out of the queue was cancelled.
    this.#events.on('removed', ({ jobId }) => relay('cancelled', jobId));
    this.#events.on('completed', ({ jobId, returnvalue }) => {
      const status = parseStatus(returnvalue);
      if (status === 'succeeded' || status === 'cancelled' || status === 'failed') relay(status, jobId);
    });
  }

  /** Resolves once the feed reads the event stream: changes from then on reach subscribers. */
  async waitUntilReady(): Promise<void> {
    await this.#events.waitUntilReady();
  }

  subscribe(listener: (change: JobChange) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#listeners.clear();
      await this.#events.close();
      await this.#connection.quit().catch(() => {});
    })();
    return this.#closing;
  }

  async #relay(type: JobChangeType, jobId: string): Promise<void> {
    if (this.#listeners.size === 0) return;
    let owner = this.#owners.get(jobId);
    if (owner === undefined) {
      const record = await this.#store.get(jobId);
      // Deleted meanwhile: nobody can read it any more, so there is nothing to wake anyone for.
      if (!record) return;
      owner = record.owner;
      this.#owners.set(jobId, owner);
    }
    const finished = type === 'succeeded' || type === 'failed' || type === 'cancelled';
    if (finished) this.#owners.delete(jobId);
    const change: JobChange = { type, jobId, owner };
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch {
        // A listener's own bug must not stop the others or the event reader.
      }
    }
  }
}

function parseStatus(returnvalue: unknown): unknown {
  if (typeof returnvalue !== 'string') return returnvalue;
  try {
    return JSON.parse(returnvalue);
  } catch {
    return returnvalue;
  }
}
