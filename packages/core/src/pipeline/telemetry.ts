import type { RetryAfterEstimator } from '../admission/retry-after.js';
import type { ExportMetrics, ExportOutcome } from '../metrics.js';

/**
 * The accounting every export shares, stream or job: started, rows and bytes, the outcome and
 * its duration, and the durations that Retry-After estimates learn from.
 */
export class ExportTelemetry {
  readonly #metrics: ExportMetrics | undefined;
  readonly #estimator: RetryAfterEstimator;

  constructor(metrics: ExportMetrics | undefined, estimator: RetryAfterEstimator) {
    this.#metrics = metrics;
    this.#estimator = estimator;
  }

  /** Counts an admitted export and returns its tracker. */
  track(labels: { dataset: string; format: string }): ExportTracker {
    const metrics = this.#metrics;
    const estimator = this.#estimator;
    metrics?.jobsStarted.inc(labels);
    let counted = 0;
    return {
      progress(rows, bytes) {
        counted += rows;
        metrics?.rows.inc(labels, rows);
        metrics?.bytes.inc(labels, bytes);
      },
      rowsTotal(rows) {
        // Rows still in the encoder's last chunk reach the counter here.
        if (rows > counted) metrics?.rows.inc(labels, rows - counted);
        counted = Math.max(counted, rows);
      },
      finish(outcome, durationMs) {
        const withOutcome = { ...labels, outcome };
        metrics?.jobsCompleted.inc(withOutcome);
        if (durationMs === undefined) return;
        metrics?.jobDuration.observe(withOutcome, durationMs / 1000);
        if (outcome !== 'cancelled') estimator.observe(durationMs);
      },
    };
  }
}

export interface ExportTracker {
  progress(rows: number, bytes: number): void;
  /** The final row count, once the export ended. */
  rowsTotal(rows: number): void;
  /** The outcome; `durationMs` undefined for an export that never ran (a queued job cancelled). */
  finish(outcome: ExportOutcome, durationMs: number | undefined): void;
}
