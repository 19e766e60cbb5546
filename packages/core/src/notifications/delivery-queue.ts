import { checkInteger } from '../checks.js';

/** Runs one attempt of a delivery; resolves with when the next one is due (epoch ms), or `undefined` when done. */
export type RunAttempt = (deliveryId: string) => Promise<number | undefined>;

/**
 * The **delivery queue seam**: when and where attempts run. The notifier stores a delivery
 * (the store seam), then `schedule()`s it; the queue calls `run` when it is due, and again at
 * whatever time `run` answers. The local queue does this with timers in this process. A
 * BullMQ queue would add a job per delivery (`delay` from `at`, `jobId` from the delivery id,
 * so that replicas add it once) and call `run` from its worker, so that each delivery is
 * attempted once in the cluster.
 */
export interface WebhookDeliveryQueue {
  /** Called once, before the first `schedule()`. */
  start(run: RunAttempt): void;
  /** Runs the delivery's next attempt at `at` (epoch ms; now or earlier means at once). */
  schedule(delivery: { id: string; endpoint: string }, at: number): void;
  /** Schedules nothing more and resolves once the attempts in flight have ended. */
  close(): Promise<void>;
}

/** A pair like the global `setTimeout`/`clearTimeout`, injectable for tests. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const REAL_TIMERS: Timers = {
  setTimeout(callback, ms) {
    const timer = setTimeout(callback, ms);
    // Pending deliveries are on disk: a timer waiting for one must not keep the process alive.
    timer.unref();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

export interface LocalWebhookDeliveryQueueOptions {
  /** Attempts in flight at once. @default 8 */
  maxConcurrent?: number;
  /** Attempts in flight at once to one endpoint. @default 2 */
  maxConcurrentPerEndpoint?: number;
  now?: () => number;
  timers?: Timers;
}

interface Due {
  id: string;
  endpoint: string;
}

/**
 * Attempts run in this process, with a timer per waiting delivery, at most `maxConcurrent` at
 * once and at most `maxConcurrentPerEndpoint` per endpoint: a receiver that hangs until the
 * timeout holds only its own endpoint's share, never the others'. Due deliveries run in the
 * order they became due, skipping those whose endpoint is at its share.
 */
export class LocalWebhookDeliveryQueue implements WebhookDeliveryQueue {
  readonly #maxConcurrent: number;
  readonly #maxPerEndpoint: number;
  readonly #now: () => number;
  readonly #timers: Timers;
  readonly #waiting = new Map<string, unknown>();
  readonly #due: Due[] = [];
  readonly #running = new Map<string, Promise<void>>();
  readonly #perEndpoint = new Map<string, number>();
  #run: RunAttempt | undefined;
  #closed = false;

  constructor(options: LocalWebhookDeliveryQueueOptions = {}) {
    this.#maxConcurrent = checkInteger('maxConcurrent', options.maxConcurrent ?? 8, { min: 1 });
    this.#maxPerEndpoint = checkInteger('maxConcurrentPerEndpoint', options.maxConcurrentPerEndpoint ?? 2, {
      min: 1,
    });
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? REAL_TIMERS;
  }

  /** Deliveries waiting for their time or for a free place. */
  get waiting(): number {
    return this.#waiting.size + this.#due.length;
  }

  /** Attempts in flight. */
  get running(): number {
    return this.#running.size;
  }

  start(run: RunAttempt): void {
    this.#run = run;
    this.#pump();
  }

  schedule(delivery: { id: string; endpoint: string }, at: number): void {
    if (this.#closed || this.#waiting.has(delivery.id) || this.#running.has(delivery.id)) return;
    if (this.#due.some((due) => due.id === delivery.id)) return;
    const delay = at - this.#now();
    if (delay <= 0) {
      this.#due.push({ id: delivery.id, endpoint: delivery.endpoint });
      this.#pump();
      return;
    }
    const handle = this.#timers.setTimeout(() => {
      this.#waiting.delete(delivery.id);
      this.#due.push({ id: delivery.id, endpoint: delivery.endpoint });
      this.#pump();
    }, delay);
    this.#waiting.set(delivery.id, handle);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const handle of this.#waiting.values()) this.#timers.clearTimeout(handle);
    this.#waiting.clear();
    this.#due.length = 0;
    await Promise.allSettled([...this.#running.values()]);
  }

  #pump(): void {
    const run = this.#run;
    if (!run) return;
    for (let index = 0; index < this.#due.length && this.#running.size < this.#maxConcurrent; ) {
      const due = this.#due[index] as Due;
      const busy = this.#perEndpoint.get(due.endpoint) ?? 0;
      if (busy >= this.#maxPerEndpoint) {
        index++;
        continue;
      }
      this.#due.splice(index, 1);
      this.#perEndpoint.set(due.endpoint, busy + 1);
      const attempt = run(due.id)
        .catch(() => undefined)
        .then((next) => {
          this.#running.delete(due.id);
          this.#perEndpoint.set(due.endpoint, (this.#perEndpoint.get(due.endpoint) ?? 1) - 1);
          if (next !== undefined) this.schedule(due, next);
          this.#pump();
        });
      this.#running.set(due.id, attempt);
    }
  }
}
