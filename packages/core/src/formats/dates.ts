import { describeValue, ValidationError } from '../errors.js';

/*
 * Dates as text in an export: ISO 8601 in a chosen IANA time zone, or the zone's local
 * date and time. `Intl` knows the zones' rules; it is asked for a UTC offset once per hour of
 * time seen (and zone), and the text is then built from that offset with plain arithmetic:
 * `formatToParts` per value costs several microseconds, the arithmetic a small fraction of it.
 */

/**
 * How a date is written:
 * - `'iso'`: ISO 8601 with milliseconds, `Z` in UTC, the offset in other zones
 *   (`2025-03-30T03:30:00.000+02:00`);
 * - `'iso-local'`: the zone's wall-clock date and time, `2025-01-31 14:05:00`;
 * - `'date'`: the zone's calendar date, `2025-01-31`.
 */
export type DateFormat = 'iso' | 'iso-local' | 'date';

/** Every date format, in the order they are documented. */
export const DATE_FORMATS: readonly DateFormat[] = ['iso', 'iso-local', 'date'];

export interface DateRendererOptions {
  /** An IANA time zone name (`Europe/Berlin`), matched without regard to case. @default 'UTC' */
  timeZone?: string | undefined;
  /** @default 'iso' */
  dateFormat?: DateFormat | undefined;
}

/** A date value as an export holds it: a `Date`, epoch milliseconds, or an ISO 8601 string. */
export type DateValue = Date | string | number;

/** Writes one date value as text; `''` for an invalid Date or a non-finite number. */
export type DateRenderer = (value: DateValue) => string;

const UTC_NAMES = new Set(
  [
    'UTC',
    'Etc/UTC',
    'Etc/UCT',
    'UCT',
    'Etc/Universal',
    'Universal',
    'Etc/Zulu',
    'Zulu',
    'Etc/GMT',
    'GMT',
    'Etc/GMT0',
    'GMT0',
    'Etc/GMT+0',
    'Etc/GMT-0',
    'GMT+0',
    'GMT-0',
    'Etc/Greenwich',
    'Greenwich',
  ].map((name) => name.toLowerCase()),
);

const HOUR_MS = 3_600_000;
/** The range of a `Date`: ±100,000,000 days around the epoch. */
const MAX_DATE_MS = 8.64e15;

/**
 * The canonical name of an IANA time zone (`europe/berlin` -> `Europe/Berlin`, `Etc/UTC` ->
 * `UTC`), as `Intl` of the running Node knows it.
 *
 * @throws {ValidationError} 422 naming `field` when the name is not a time zone.
 * @example
 * ```ts
 * normalizeTimeZone('america/new_york'); // 'America/New_York'
 * ```
 */
export function normalizeTimeZone(timeZone: unknown, field = 'timeZone'): string {
  if (typeof timeZone !== 'string' || timeZone === '' || timeZone.length > 64) {
    throw new ValidationError(
      `Expected ${field} to be an IANA time zone name such as "Europe/Berlin", got ${describeValue(timeZone)}`,
      { field },
    );
  }
  if (UTC_NAMES.has(timeZone.toLowerCase())) return 'UTC';
  try {
    const resolved = new Intl.DateTimeFormat('en', { timeZone }).resolvedOptions().timeZone;
    return UTC_NAMES.has(resolved.toLowerCase()) ? 'UTC' : resolved;
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new ValidationError(
      `Expected ${field} to be an IANA time zone name such as "Europe/Berlin", got ${JSON.stringify(timeZone)}`,
      { field },
    );
  }
}

/**
 * Checks a date format.
 * @throws {ValidationError} 422 naming `field` for anything but `'iso'`, `'iso-local'` or `'date'`.
 */
export function checkDateFormat(dateFormat: unknown, field = 'dateFormat'): DateFormat {
  if (typeof dateFormat === 'string' && (DATE_FORMATS as readonly string[]).includes(dateFormat)) {
    return dateFormat as DateFormat;
  }
  throw new ValidationError(
    `Expected ${field} to be one of ${DATE_FORMATS.map((name) => `"${name}"`).join(', ')}, got ${describeValue(dateFormat)}`,
    { field },
  );
}

/** One zone's offsets, asked of `Intl` once per hour of time and kept. */
class ZoneOffsets {
  readonly #format: Intl.DateTimeFormat;
  /** Offset in ms of each hour seen (epoch hours), or `NaN` when it changes within the hour. */
  readonly #hours = new Map<number, number>();

  constructor(timeZone: string) {
    this.#format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  }

  /** The zone's UTC offset at `epochMs`, in milliseconds (east of Greenwich is positive). */
  offsetMs(epochMs: number): number {
    const hour = Math.floor(epochMs / HOUR_MS);
    let offset = this.#hours.get(hour);
    if (offset === undefined) {
      const start = Math.max(hour * HOUR_MS, -MAX_DATE_MS);
      const end = Math.min(start + HOUR_MS - 1, MAX_DATE_MS);
      const atStart = this.#exact(start);
      // No zone has changed its offset twice within an hour; a change within this hour makes
      // it a mixed one, asked again for each value.
      offset = atStart === this.#exact(end) ? atStart : Number.NaN;
      // Bounded: a wide spread of hours (decades of timestamps) must not grow without end.
      if (this.#hours.size >= 100_000) this.#hours.clear();
      this.#hours.set(hour, offset);
    }
    return Number.isNaN(offset) ? this.#exact(epochMs) : offset;
  }

  #exact(epochMs: number): number {
    let year = 0;
    let month = 0;
    let day = 0;
    let hour = 0;
    let minute = 0;
    let second = 0;
    let beforeCommonEra = false;
    for (const part of this.#format.formatToParts(epochMs)) {
      switch (part.type) {
        case 'year':
          year = Number(part.value);
          break;
        case 'month':
          month = Number(part.value);
          break;
        case 'day':
          day = Number(part.value);
          break;
        case 'hour':
          hour = Number(part.value);
          break;
        case 'minute':
          minute = Number(part.value);
          break;
        case 'second':
          second = Number(part.value);
          break;
        case 'era':
          beforeCommonEra = part.value.startsWith('B');
          break;
      }
    }
    const wall = new Date(0);
    wall.setUTCFullYear(beforeCommonEra ? 1 - year : year, month - 1, day);
    wall.setUTCHours(hour, minute, second, 0);
    // The wall clock has whole seconds: compare it with the instant's whole second.
    return wall.getTime() - (epochMs - (((epochMs % 1000) + 1000) % 1000));
  }
}

const zones = new Map<string, ZoneOffsets>();

function offsetsOf(timeZone: string): ZoneOffsets {
  let offsets = zones.get(timeZone);
  if (offsets === undefined) {
    offsets = new ZoneOffsets(timeZone);
    zones.set(timeZone, offsets);
  }
  return offsets;
}

/**
 * The UTC offset of an IANA time zone at an instant, in minutes east of Greenwich
 * (`Europe/Berlin` in summer: `120`; `America/New_York` in winter: `-300`).
 *
 * @throws {ValidationError} for an unknown time zone.
 * @example
 * ```ts
 * timeZoneOffsetMinutes(Date.UTC(2025, 2, 30, 1), 'Europe/Berlin'); // 120 (summer time began)
 * ```
 */
export function timeZoneOffsetMinutes(epochMs: number, timeZone: string): number {
  const zone = normalizeTimeZone(timeZone);
  if (zone === 'UTC') return 0;
  return offsetsOf(zone).offsetMs(epochMs) / 60_000;
}

const pad2 = (value: number) => (value < 10 ? `0${value}` : `${value}`);

function yearText(year: number): string {
  if (year >= 0 && year <= 9999) return `${year}`.padStart(4, '0');
  // As `toISOString` writes years outside 0000–9999.
  return `${year < 0 ? '-' : '+'}${`${Math.abs(year)}`.padStart(6, '0')}`;
}

function offsetText(offsetMs: number): string {
  const sign = offsetMs < 0 ? '-' : '+';
  const seconds = Math.round(Math.abs(offsetMs) / 1000);
  const text = `${sign}${pad2(Math.floor(seconds / 3600))}:${pad2(Math.floor(seconds / 60) % 60)}`;
  // Local mean time before standard time had offsets in seconds (Amsterdam: +00:19:32).
  return seconds % 60 === 0 ? text : `${text}:${pad2(seconds % 60)}`;
}

/** `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]`, with a space allowed for the `T`. */
const ISO_TEXT =
  /^([+-]\d{6}|\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?$/;

/**
 * The epoch milliseconds of an ISO 8601 text, or `undefined` when it is none or is a date
 * without a time. A time without an offset is read as UTC, never in the server's zone
 * (SQLite's `CURRENT_TIMESTAMP` is such a text, in UTC); `Date.parse` would read it as local.
 */
export function parseIsoText(text: string): number | undefined {
  const match = ISO_TEXT.exec(text);
  if (match === null || match[4] === undefined) return undefined;
  const [, year, month, day, hour, minute, second, fraction, zone] = match;
  const date = new Date(0);
  date.setUTCFullYear(Number(year), Number(month) - 1, Number(day));
  const ms = fraction === undefined ? 0 : Math.floor(Number(`0.${fraction}`) * 1000);
  date.setUTCHours(Number(hour), Number(minute), Number(second ?? 0), ms);
  let epochMs = date.getTime();
  if (zone !== undefined && zone !== 'Z' && zone !== 'z') {
    const digits = zone.replace(':', '');
    const minutes = Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5) || 0);
    epochMs -= (zone.startsWith('-') ? -minutes : minutes) * 60_000;
  }
  return Number.isNaN(epochMs) ? undefined : epochMs;
}

/**
 * A function that writes date values as text in one time zone and format. One renderer
 * serves a whole export; each zone's offsets are cached across renderers.
 *
 * - A `Date` or epoch milliseconds is an instant, written in the zone.
 * - A string in ISO 8601 with a time is read as an instant (UTC when it has no offset).
 *   A date alone (`2025-01-31`) is a calendar day, not an instant, and any other text is not
 *   ours to reinterpret: both stay as they are.
 * - An invalid Date or a non-finite number gives `''` (JSON writes `null` for it).
 *
 * With the defaults (UTC, `'iso'`) a Date is written exactly as `toISOString()` writes it.
 *
 * @throws {ValidationError} for an unknown time zone or date format.
 * @example
 * ```ts
 * const render = createDateRenderer({ timeZone: 'Europe/Berlin', dateFormat: 'iso-local' });
 * render(new Date('2025-01-31T13:05:00Z')); // '2025-01-31 14:05:00'
 * ```
 */
export function createDateRenderer(options: DateRendererOptions = {}): DateRenderer {
  const timeZone = options.timeZone === undefined ? 'UTC' : normalizeTimeZone(options.timeZone);
  const dateFormat = options.dateFormat === undefined ? 'iso' : checkDateFormat(options.dateFormat);
  const offsets = timeZone === 'UTC' ? undefined : offsetsOf(timeZone);
  const scratch = new Date(0);

  const instant = (epochMs: number): string => {
    if (!Number.isFinite(epochMs) || Math.abs(epochMs) > MAX_DATE_MS) return '';
    const offsetMs = offsets === undefined ? 0 : offsets.offsetMs(epochMs);
    if (dateFormat === 'iso' && offsets === undefined) {
      scratch.setTime(epochMs);
      return scratch.toISOString();
    }
    // The wall clock of the zone, read with the UTC getters.
    scratch.setTime(epochMs + offsetMs);
    const date = `${yearText(scratch.getUTCFullYear())}-${pad2(scratch.getUTCMonth() + 1)}-${pad2(scratch.getUTCDate())}`;
    if (dateFormat === 'date') return date;
    const time = `${pad2(scratch.getUTCHours())}:${pad2(scratch.getUTCMinutes())}:${pad2(scratch.getUTCSeconds())}`;
    if (dateFormat === 'iso-local') return `${date} ${time}`;
    const ms = scratch.getUTCMilliseconds();
    return `${date}T${time}.${ms < 10 ? `00${ms}` : ms < 100 ? `0${ms}` : ms}${offsetText(offsetMs)}`;
  };

  return (value) => {
    if (value instanceof Date) return instant(value.getTime());
    if (typeof value === 'number') return instant(value);
    if (typeof value === 'string') {
      const epochMs = parseIsoText(value);
      return epochMs === undefined ? value : instant(epochMs);
    }
    throw new ValidationError(
      `Expected a date value to be a Date, epoch milliseconds or an ISO 8601 string, got ${describeValue(value)}`,
      { code: 'INVALID_ROW' },
    );
  };
}

/** True when a renderer of these options writes a Date as `toISOString()` does (the default). */
export function isDefaultDateRendering(options: DateRendererOptions): boolean {
  return (
    (options.dateFormat === undefined || options.dateFormat === 'iso') &&
    (options.timeZone === undefined || normalizeTimeZone(options.timeZone) === 'UTC')
  );
}
