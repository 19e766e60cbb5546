import { BackpressureError, type BackpressureReason, CancelledError, isExportError } from '../errors.js';
import type { ExportMetrics } from '../metrics.js';
import type { Limiter, Release } from './limiter.js';
import type { RetryAfterEstimator } from './retry-after.js';

/** Who asks for a slot, for the owner limit and for `rejected` events. */
export interface AdmissionSubject {
  dataset: string;
  owner: string | undefined;
  /** Streams and jobs differ in what a queue timeout is: a refusal (stream) or a failed job. */
  kind: 'stream' | 'job';
}

export interface AdmitOptions {
  /** Aborting it while queued gives the queue place back; the slot promise rejects with its reason. */
  signal?: AbortSignal | undefined;
  /** Longest wait in the queue, then `queue_timeout`. */
  queueTimeoutMs?: number | undefined;
  /** Admitted earlier (a job resumed after a restart): never refused for the queue or owner limit. */
  readmit?: boolean;
}

/**
 * An admitted export: it holds a slot now (`release`), or waits in the queue for one (`slot`,
 * which rejects with `queue_timeout`/`shutting_down`, or the signal's reason).
 */
export type Ticket =
  | { readonly queued: false; readonly release: Release }
  | { readonly queued: true; readonly slot: Promise<Release> };

export interface RejectionInfo {
  reason: BackpressureReason;
  subject: AdmissionSubject;
  error: BackpressureError;
}

export interface AdmissionOptions {
  limiter: Limiter;
  estimator: RetryAfterEstimator;
  /** Exports that may wait for a slot; 0 refuses at once. */
  maxQueued: number;
  maxConcurrentPerOwner: number | undefined;
  metrics: ExportMetrics | undefined;
  onRejected: (rejection: RejectionInfo) => void;
  now: () => number;
}

/**
 * The one place that decides whether an export runs now, waits, or is refused: the closing
 * check, the owner limit, a free slot, a queue place. It builds every `BackpressureError`,
 * counts queue waits and refusals, and keeps the owner's share until the slot is released.
 * Correct when the limiter answers asynchronously: every check-and-take of a shared count
 * (owner load, queue places) happens without an `await` in between.
 */
export class Admission {
  readonly #options: AdmissionOptions;
  readonly #ownerLoad = new Map<string, number>();
  /** Aborts every queued wait when the admission closes. */
  readonly #closed = new AbortController();
  #waiting = 0;

  constructor(options: AdmissionOptions) {
    this.#options = options;
  }

  get limiter(): Limiter {
    return this.#options.limiter;
  }

  /** Exports waiting for a slot. */
  get waiting(): number {
    return this.#waiting;
  }

  get closed(): boolean {
    return this.#closed.signal.aborted;
  }

  /** @throws {BackpressureError} refused: `shutting_down`, `owner_limit`, `concurrency_limit`, `queue_full` */
  async admit(subject: AdmissionSubject, options: AdmitOptions = {}): Promise<Ticket> {
    if (this.closed) throw this.refuse('shutting_down', subject);
    const { owner } = subject;
    const perOwner = this.#options.maxConcurrentPerOwner;
    if (!options.readmit && owner !== undefined && perOwner !== undefined) {
      if ((this.#ownerLoad.get(owner) ?? 0) >= perOwner) throw this.refuse('owner_limit', subject);
    }
    this.#ownerDelta(owner, 1);
    let ownerHeld = true;
    const giveBackOwner = () => {
      if (ownerHeld) this.#ownerDelta(owner, -1);
      ownerHeld = false;
    };
    try {
      const tried = this.#options.limiter.tryAcquire();
      const free = tried instanceof Promise ? await tried : tried;
      if (free) {
        // A close() during the round trip wins: the slot goes straight back.
        if (this.closed) {
          free();
          throw this.refuse('shutting_down', subject);
        }
        return { queued: false, release: this.#granted(free, giveBackOwner) };
      }
      if (!options.readmit && this.#waiting >= this.#options.maxQueued) {
        throw this.refuse(this.#options.maxQueued === 0 ? 'concurrency_limit' : 'queue_full', subject);
      }
    } catch (error) {
      giveBackOwner();
      throw error;
    }
    this.#waiting++;
    this.#options.metrics?.queued.inc();
    const slot = this.#wait(subject, options).then(
      (release) => this.#granted(release, giveBackOwner),
      (error: unknown) => {
        giveBackOwner();
        throw error;
      },
    );
    // The caller may stop listening (a stream whose client left); the rejection is still handled.
    slot.catch(() => {});
    return { queued: true, slot };
  }

  /**
   * A refusal that is certain without asking the limiter, or `undefined`: shutting down, the
   * owner's limit, or every permit of this process taken with no queue place left (a permit
   * held here is held in every limiter's count). Lets a full server answer 429 before it
   * validates the request or builds anything for it.
   */
  refuseAtOnce(subject: AdmissionSubject): BackpressureError | undefined {
    if (this.closed) return this.refuse('shutting_down', subject);
    const { owner } = subject;
    const perOwner = this.#options.maxConcurrentPerOwner;
    if (owner !== undefined && perOwner !== undefined && (this.#ownerLoad.get(owner) ?? 0) >= perOwner) {
      return this.refuse('owner_limit', subject);
    }
    const { limiter, maxQueued } = this.#options;
    if (limiter.active >= limiter.limit && this.#waiting >= maxQueued) {
      return this.refuse(maxQueued === 0 ? 'concurrency_limit' : 'queue_full', subject);
    }
    return undefined;
  }

  /** Turns new and queued exports away (`shutting_down`); running ones keep their slots. */
  close(): void {
    if (this.closed) return;
    this.#closed.abort();
    void this.#options.limiter.close();
  }

  /** Builds (and counts, and reports) a refusal. */
  refuse(reason: BackpressureReason, subject: AdmissionSubject): BackpressureError {
    const limiter = this.#options.limiter;
    // A refusal is an answer, not a bug: its stack would cost more than the rest of a 429.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    let error: BackpressureError;
    try {
      error = new BackpressureError({
        reason,
        limit: limiter.limit,
        inFlight: limiter.active,
        retryAfterSeconds: this.retryAfterSeconds(),
      });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    this.#options.metrics?.jobsRejected.inc({ reason });
    this.#options.onRejected({ reason, subject, error });
    return error;
  }

  /** The Retry-After estimate for the current load. */
  retryAfterSeconds(): number {
    const limiter = this.#options.limiter;
    return this.#options.estimator.estimate(limiter.active + this.#waiting, limiter.limit);
  }

  async #wait(subject: AdmissionSubject, options: AdmitOptions): Promise<Release> {
    const waitStart = this.#options.now();
    const timeout = options.queueTimeoutMs === undefined ? undefined : timeoutSignal(options.queueTimeoutMs);
    const signals = [this.#closed.signal, timeout?.signal, options.signal].filter(
      (signal): signal is AbortSignal => signal !== undefined,
    );
    try {
      return await this.#options.limiter.acquire({ signal: AbortSignal.any(signals) });
    } catch (error) {
      if (this.#closed.signal.aborted) throw this.#refuseQueued('shutting_down', subject);
      if (timeout?.signal.aborted) throw this.#refuseQueued('queue_timeout', subject);
      const reason: unknown = options.signal?.reason;
      if (options.signal?.aborted) {
        throw isExportError(reason) ? reason : new CancelledError(undefined, { cause: reason });
      }
      throw error;
    } finally {
      timeout?.clear();
      this.#waiting--;
      this.#options.metrics?.queued.dec();
      this.#options.metrics?.queueWait.observe((this.#options.now() - waitStart) / 1000);
    }
  }

  /** A queued job that times out fails as a job (QUEUE_TIMEOUT); a queued stream is refused. */
  #refuseQueued(reason: BackpressureReason, subject: AdmissionSubject): BackpressureError {
    if (subject.kind === 'stream') return this.refuse(reason, subject);
    const limiter = this.#options.limiter;
    return new BackpressureError({
      reason,
      limit: limiter.limit,
      inFlight: limiter.active,
      retryAfterSeconds: this.retryAfterSeconds(),
    });
  }

  #granted(release: Release, giveBackOwner: () => void): Release {
    this.#options.metrics?.inFlight.inc();
    let released = false;
    const wrapped = () => {
      if (released) return;
      released = true;
      // A shared limiter releases with a round trip; its failure must not become unhandled.
      void Promise.resolve(release()).catch(() => {});
      giveBackOwner();
      this.#options.metrics?.inFlight.dec();
    };
    return release.signal ? Object.assign(wrapped, { signal: release.signal }) : wrapped;
  }

  #ownerDelta(owner: string | undefined, delta: number): void {
    if (owner === undefined) return;
    const load = (this.#ownerLoad.get(owner) ?? 0) + delta;
    if (load <= 0) this.#ownerLoad.delete(owner);
    else this.#ownerLoad.set(owner, load);
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** An abort signal that fires after `ms` (chained past setTimeout's 2^31 - 1 ms limit), and its cleanup. */
function timeoutSignal(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = (remaining: number) => {
    timer = setTimeout(
      () => (remaining > MAX_TIMER_MS ? arm(remaining - MAX_TIMER_MS) : controller.abort()),
      Math.min(remaining, MAX_TIMER_MS),
    );
  };
  arm(ms);
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}
