/** What the CLI shows while an export runs. */
export interface ProgressState {
  rows: number;
  bytes: number;
  elapsedMs: number;
  /** Rows to expect, when the dataset can count them. */
  totalRows?: number | undefined;
}

const BAR_WIDTH = 24;

/** `12,345` */
export function formatCount(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/** `1.2 MB` (decimal units, as download tools show them) */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** `0:07.3`, `12:04.0` */
export function formatElapsed(ms: number): string {
  const tenths = Math.floor(ms / 100);
  const minutes = Math.floor(tenths / 600);
  const seconds = (tenths % 600) / 10;
  return `${minutes}:${seconds.toFixed(1).padStart(4, '0')}`;
}

/** One frame of the progress bar (no line ending). */
export function progressLine(state: ProgressState): string {
  const rate = state.elapsedMs > 0 ? (state.rows * 1000) / state.elapsedMs : 0;
  const parts = [
    `${formatCount(state.rows)} rows`,
    `${formatCount(rate)} rows/s`,
    formatBytes(state.bytes),
    formatElapsed(state.elapsedMs),
  ];
  if (state.totalRows !== undefined && state.totalRows > 0) {
    const ratio = Math.min(1, state.rows / state.totalRows);
    const filled = Math.round(ratio * BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(ratio * 100)).padStart(3)}%`;
    return `${bar}  ${parts.join('  ')}`;
  }
  return parts.join('  ');
}

/**
 * Redraws one line of stderr in place (`\r`, clear line). Only for terminals: elsewhere the CLI
 * prints a single summary line instead.
 */
export class ProgressBar {
  readonly #write: (text: string) => void;
  readonly #read: () => ProgressState;
  #timer: NodeJS.Timeout | undefined;

  constructor(write: (text: string) => void, read: () => ProgressState, intervalMs = 100) {
    this.#write = write;
    this.#read = read;
    this.render();
    this.#timer = setInterval(() => this.render(), intervalMs);
    this.#timer.unref();
  }

  render(): void {
    this.#write(`\r\x1b[2K${progressLine(this.#read())}`);
  }

  /** Draws the final frame and ends the line. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.render();
    this.#write('\n');
  }
}
