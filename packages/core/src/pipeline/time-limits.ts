import type { Writable } from 'node:stream';
import type { RowSource } from '../dataset.js';
import { CancelledError, describeValue, isExportError, TimeLimitError } from '../errors.js';
import { closeSource } from './read-batches.js';

/** No row for this long from a source that is being read: the source is stuck. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** Nothing drained for this long by a destination that has data waiting: the client stopped reading. */
export const DEFAULT_STALL_TIMEOUT_MS = 60_000;

/**
 * Time limits of an export. Each ends the export with a {@link TimeLimitError}, frees its slot
 * and, for a job, removes its partial file; the export counts as `failed`. `0` turns a limit off.
 */
export interface ExportTimeLimits {
  /**
   * Longest an export may run once it holds a slot (opening the source included); then it
   * fails with `EXPORT_TIMEOUT` (504). Streams and jobs alike; a dataset's own
   * `maxDurationMs` wins.
   * @default undefined (no limit: how long a big export may take depends on its data)
   */
  maxDurationMs?: number;
  /**
   * Longest wait for the next row while the source is being read (opening it included; time
   * spent waiting for a slow destination does not count); then the export fails with
   * `SOURCE_IDLE` (504). Catches a source that trickles bytes but no rows, or hangs. Fires
   * after between 1 and 1.5 times this. A dataset's own `idleTimeoutMs` wins.
   * @default 300_000 (5 minutes: longer than any sane wait for a database's first row)
   */
  idleTimeoutMs?: number;
  /**
   * Longest time a streamed export's destination (the client's response) may have data
   * waiting and drain none of it; then the export fails with `CLIENT_STALLED` (408) and its
   * slot is freed. A client that stops reading would otherwise hold a slot forever. Fires
   * after between 1 and 1.5 times this. Jobs, which write to disk, are not affected.
   * @default 60_000 (a reading client drains a 64 KiB chunk far faster, even on a slow link;
   * one that drains nothing for a minute has stopped reading)
   */
  stallTimeoutMs?: number;
}

/**
 * The limits of one export: the dataset's own, else the manager's, else the defaults. Jobs
 * never get a stall limit.
 *
 * @internal
 */
export function timeLimits(
  dataset: Pick<ExportTimeLimits, 'maxDurationMs' | 'idleTimeoutMs'>,
  manager: ExportTimeLimits,
  kind: 'stream' | 'job',
): ExportTimeLimits {
  return {
    maxDurationMs: dataset.maxDurationMs ?? manager.maxDurationMs ?? 0,
    idleTimeoutMs: dataset.idleTimeoutMs ?? manager.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    stallTimeoutMs: kind === 'job' ? 0 : (manager.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS),
  };
}

/**
 * Checks time limit options: integers >= 0 (milliseconds), or undefined.
 *
 * @internal
 */
export function checkTimeLimits(limits: ExportTimeLimits, prefix = ''): void {
  for (const name of ['maxDurationMs', 'idleTimeoutMs', 'stallTimeoutMs'] as const) {
    const value = limits[name];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
      throw new TypeError(
        `Expected ${prefix}${name} to be an integer >= 0 (milliseconds, 0 for no limit), got ${describeValue(value)}`,
      );
    }
  }
}

/**
 * The time limits of one export, on one signal: aborted by the caller's signal or by the first
 * limit that is hit, with a {@link TimeLimitError} as its reason.
 *
 * Idle and stall limits are watched by a check every quarter of the limit rather than by a
 * timer re-armed per row or per write, which would cost a timer per chunk: a limit fires once
 * five checks in a row saw no progress, so after between 1 and 1.5 times the limit.
 */
export class TimeLimits {
  readonly rowCounter = { rows: 0 };
  readonly #controller = new AbortController();
  readonly #outer: AbortSignal;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #cleanups: (() => void)[] = [];
  readonly #forward = () => this.#controller.abort(this.#outer.reason);
  #waiting = false;

  constructor(outer: AbortSignal, limits: ExportTimeLimits, destination: Writable) {
    this.#outer = outer;
    if (outer.aborted) this.#forward();
    else outer.addEventListener('abort', this.#forward, { once: true });
    const { maxDurationMs, idleTimeoutMs, stallTimeoutMs } = limits;
    if (maxDurationMs) {
      this.#timers.push(setTimeout(() => this.#expire('EXPORT_TIMEOUT', maxDurationMs), maxDurationMs));
    }
    if (idleTimeoutMs) {
      let seen = -1;
      this.#watch(idleTimeoutMs, 'SOURCE_IDLE', () => {
        const quiet = this.#waiting && this.rowCounter.rows === seen;
        seen = this.rowCounter.rows;
        return quiet;
      });
    }
    if (stallTimeoutMs) {
      // Progress is a `drain`, or a shorter write buffer (part of a chunk was taken).
      let drains = 0;
      const onDrain = () => {
        drains++;
      };
      destination.on('drain', onDrain);
      let seenDrains = 0;
      let seenLength = Number.POSITIVE_INFINITY;
      this.#watch(stallTimeoutMs, 'CLIENT_STALLED', () => {
        const length = destination.writableLength;
        const quiet =
          destination.writableNeedDrain &&
          drains === seenDrains &&
          length >= seenLength &&
          !destination.destroyed;
        seenDrains = drains;
        seenLength = length;
        return quiet;
      });
      this.#cleanups.push(() => destination.off('drain', onDrain));
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the export is waiting for its source (the idle limit only counts that time). */
  waitingForSource(waiting: boolean): void {
    this.#waiting = waiting;
  }

  /**
   * Opens the source within the limits. A `source()` call that ignores the signal and never
   * returns does not hold the export; if it returns later, what it returned is closed.
   */
  async opening(open: (signal: AbortSignal) => RowSource | Promise<RowSource>): Promise<RowSource> {
    const signal = this.signal;
    if (signal.aborted) throw abortReason(signal);
    this.#waiting = true;
    try {
      const opened = Promise.resolve().then(() => open(signal));
      let onAbort: (() => void) | undefined;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      try {
        return await Promise.race([opened, aborted]);
      } catch (error) {
        if (signal.aborted) {
          opened.then(closeSource, () => {});
          throw abortReason(signal);
        }
        throw error;
      } finally {
        if (onAbort) signal.removeEventListener('abort', onAbort);
      }
    } finally {
      this.#waiting = false;
    }
  }

  stop(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    for (const cleanup of this.#cleanups) cleanup();
    this.#outer.removeEventListener('abort', this.#forward);
  }

  #watch(ms: number, code: TimeLimitError['code'], quiet: () => boolean): void {
    let quietChecks = 0;
    this.#timers.push(
      setInterval(
        () => {
          quietChecks = quiet() ? quietChecks + 1 : 0;
          if (quietChecks >= 5) this.#expire(code, ms);
        },
        Math.max(1, Math.ceil(ms / 4)),
      ),
    );
  }

  #expire(code: TimeLimitError['code'], ms: number): void {
    this.stop();
    this.#controller.abort(new TimeLimitError(code, ms));
  }
}

export function abortReason(signal: AbortSignal): unknown {
  return isExportError(signal.reason)
    ? signal.reason
    : new CancelledError(undefined, { cause: signal.reason });
}
