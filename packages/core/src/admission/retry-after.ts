export interface RetryAfterEstimatorOptions {
  /** Weight of the newest duration in the moving average (0..1]. @default 0.2 */
  alpha?: number;
  /** The estimate before any export finished, in seconds. @default 5 */
  initialSeconds?: number;
  /** Upper bound of an estimate, in seconds. @default 3600 */
  maxSeconds?: number;
  /** Largest extra fraction added at random so rejected clients do not return in lockstep. @default 0.25 */
  jitter?: number;
  /** Random source in [0, 1); injectable for tests. @default Math.random */
  random?: () => number;
}

/**
 * Estimates how long a rejected client should wait before retrying: an exponentially weighted
 * moving average of recent export durations, times the number of exports ahead of the client
 * (running and queued) divided by the concurrency limit, plus a little jitter. Always a whole
 * number of seconds >= 1.
 */
export class RetryAfterEstimator {
  readonly #alpha: number;
  readonly #maxSeconds: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #averageSeconds: number;

  constructor(options: RetryAfterEstimatorOptions = {}) {
    this.#alpha = options.alpha ?? 0.2;
    this.#averageSeconds = options.initialSeconds ?? 5;
    this.#maxSeconds = options.maxSeconds ?? 3600;
    this.#jitter = options.jitter ?? 0.25;
    this.#random = options.random ?? Math.random;
    if (!(this.#alpha > 0 && this.#alpha <= 1)) {
      throw new TypeError(`Expected alpha to be in (0, 1], got ${this.#alpha}`);
    }
  }

  /** The moving average of export durations, in seconds. */
  get averageSeconds(): number {
    return this.#averageSeconds;
  }

  /** Records the duration of a finished export. */
  observe(durationMs: number): void {
    if (!Number.isFinite(durationMs) || durationMs < 0) return;
    this.#averageSeconds += this.#alpha * (durationMs / 1000 - this.#averageSeconds);
  }

  /**
   * @param ahead exports running or queued ahead of the client
   * @param limit how many exports run at once
   */
  estimate(ahead: number, limit: number): number {
    const base = (this.#averageSeconds * Math.max(1, ahead)) / Math.max(1, limit);
    const seconds = Math.min(this.#maxSeconds, base * (1 + this.#jitter * this.#random()));
    return Math.max(1, Math.ceil(seconds));
  }
}
