/**
 * `date` params: the ISO 8601 forms a client may send, and the one form a source receives.
 *
 * - A calendar day (`2025-01-31`) stays that day, `YYYY-MM-DD`, unless the param has a
 *   `timeZone`: then it means the first moment of that day there, as an instant (below).
 * - A time (`2025-01-31T12:00`, `2025-01-31 12:00:00.5`, `...Z`, `...+02:00`, `...-0530`) becomes
 *   the instant it names, as UTC with milliseconds: `2025-01-31T10:00:00.000Z`. Without an
 *   offset it is a local time in the param's `timeZone` (UTC when none is set); a local time
 *   that a daylight-saving change skips or repeats there is refused, not guessed.
 *
 * Both forms sort as text in time order, the same way as ISO 8601 columns do, and both are
 * understood by SQL engines; the result is also a valid input, so validating it again (a job
 * resumed after a restart) changes nothing.
 *
 * @internal
 */

const DATE_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

const DAY_MS = 86_400_000;

/** Why a date text was refused; the caller turns it into a message naming the param. */
export type DateProblem =
  | { kind: 'malformed' }
  | { kind: 'out-of-range' }
  | { kind: 'skipped'; timeZone: string }
  | { kind: 'repeated'; timeZone: string; offsets: [string, string] };

export type DateResult = { value: string } | { problem: DateProblem };

/** Checks that `timeZone` is an IANA zone name that this runtime knows. */
export function isTimeZone(timeZone: unknown): timeZone is string {
  if (typeof timeZone !== 'string' || timeZone === '') return false;
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** Parses a date param and returns its canonical text (see the module comment). */
export function normalizeDate(text: string, timeZone: string | undefined): DateResult {
  const match = DATE_TEXT.exec(text);
  if (!match) return { problem: { kind: 'malformed' } };
  const [, yearText, monthText, dayText, hourText, minuteText, secondText, fraction, offset] = match;
  const year = Number(yearText);
  const month = Number(monthText);
  const day = Number(dayText);
  const hour = Number(hourText ?? 0);
  const minute = Number(minuteText ?? 0);
  const second = Number(secondText ?? 0);
  if (!isCalendarDay(year, month, day) || hour > 23 || minute > 59 || second > 59) {
    return { problem: { kind: 'malformed' } };
  }
  // Milliseconds are the precision of a JavaScript date; finer digits are cut, not rounded.
  const millisecond = fraction === undefined ? 0 : Number(fraction.slice(0, 3).padEnd(3, '0'));
  const local = utcMs(year, month, day, hour, minute, second, millisecond);

  let instant: number;
  if (hourText === undefined) {
    if (timeZone === undefined) return { value: text };
    instant = startOfDay(timeZone, local);
  } else if (offset !== undefined) {
    const offsetMs = parseOffset(offset);
    if (offsetMs === undefined) return { problem: { kind: 'malformed' } };
    instant = local - offsetMs;
  } else if (timeZone === undefined) {
    instant = local;
  } else {
    const candidates = instantsOf(timeZone, local);
    if (candidates.length === 0) return { problem: { kind: 'skipped', timeZone } };
    if (candidates.length > 1) {
      const [first, second] = candidates as [number, number];
      return {
        problem: {
          kind: 'repeated',
          timeZone,
          offsets: [formatOffset(local - first), formatOffset(local - second)],
        },
      };
    }
    instant = candidates[0]!;
  }
  const date = new Date(instant);
  const utcYear = date.getUTCFullYear();
  if (Number.isNaN(instant) || utcYear < 0 || utcYear > 9999) return { problem: { kind: 'out-of-range' } };
  return { value: date.toISOString() };
}

function isCalendarDay(year: number, month: number, day: number): boolean {
  if (month < 1 || month > 12 || day < 1) return false;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** Epoch milliseconds of a wall-clock time read as UTC (`Date.UTC` maps years 0-99 to 1900-1999). */
function utcMs(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  second: number,
  millisecond: number,
): number {
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, millisecond);
  return date.getTime();
}

function parseOffset(offset: string): number | undefined {
  if (offset === 'Z') return 0;
  const digits = offset.replace(':', '');
  const hours = Number(digits.slice(1, 3));
  const minutes = Number(digits.slice(3, 5));
  if (hours > 23 || minutes > 59) return undefined;
  return (offset.startsWith('-') ? -1 : 1) * (hours * 60 + minutes) * 60_000;
}

function formatOffset(offsetMs: number): string {
  const minutes = Math.round(Math.abs(offsetMs) / 60_000);
  const pad = (value: number) => String(value).padStart(2, '0');
  return `${offsetMs < 0 ? '-' : '+'}${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let format = formatters.get(timeZone);
  if (!format) {
    // Throws RangeError for a zone the runtime does not know.
    format = new Intl.DateTimeFormat('en-US', {
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
    formatters.set(timeZone, format);
  }
  return format;
}

/** The zone's offset from UTC at `instant`, in milliseconds (whole seconds: zones have no finer offsets). */
function offsetAt(timeZone: string, instant: number): number {
  const whole = Math.floor(instant / 1000) * 1000;
  const parts: Record<string, string> = {};
  for (const part of formatter(timeZone).formatToParts(whole)) parts[part.type] = part.value;
  const era = parts.era ?? 'AD';
  const shownYear = Number(parts.year);
  const year = era.startsWith('B') ? 1 - shownYear : shownYear;
  const wall = utcMs(
    year,
    Number(parts.month),
    Number(parts.day),
    Number(parts.hour) % 24,
    Number(parts.minute),
    Number(parts.second),
    0,
  );
  return wall - whole;
}

/**
 * The instants whose wall-clock time in `timeZone` is `local` (a wall-clock time read as UTC):
 * one, none (a daylight-saving gap skips it) or two (a fall-back repeats it), earliest first.
 * Offset changes are at least days apart, so the offsets a day before and after are the only
 * candidates (the approach of the Temporal polyfill).
 */
function instantsOf(timeZone: string, local: number): number[] {
  const offsets = new Set([offsetAt(timeZone, local - DAY_MS), offsetAt(timeZone, local + DAY_MS)]);
  const instants: number[] = [];
  for (const offset of offsets) {
    const instant = local - offset;
    if (offsetAt(timeZone, instant) === offset) instants.push(instant);
  }
  return instants.sort((a, b) => a - b);
}

/**
 * The first instant of the day that starts at wall-clock `midnight` in `timeZone`. Where the
 * clocks skip midnight (some zones change at 00:00), the day starts when the gap ends.
 */
function startOfDay(timeZone: string, midnight: number): number {
  const [first] = instantsOf(timeZone, midnight);
  if (first !== undefined) return first;
  const before = offsetAt(timeZone, midnight - DAY_MS);
  const after = offsetAt(timeZone, midnight + DAY_MS);
  // The change lies between these instants; find its second by bisection.
  let low = Math.floor((midnight - Math.max(before, after)) / 1000);
  let high = Math.ceil((midnight - Math.min(before, after)) / 1000);
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (offsetAt(timeZone, middle * 1000) === before) low = middle;
    else high = middle;
  }
  return high * 1000;
}
