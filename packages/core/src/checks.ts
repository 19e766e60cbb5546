// Option and input checks shared by the core and the sidecar: one wording for every message
// ("Expected <name> to be <what>, got <value>"), one rule for integers.
import { describeValue, ValidationError } from './errors.js';

export { describeValue };

/**
 * `value` when it is a safe integer in `[min, max]`, else a `TypeError` naming the option.
 * For options a developer passes in code; request input gets {@link checkOptionalString}'s 400.
 *
 * @example
 * ```ts
 * checkInteger('maxConcurrent', -1, { min: 1 }); // TypeError: Expected maxConcurrent to be an integer >= 1, got -1 (number)
 * ```
 */
export function checkInteger(
  name: string,
  value: unknown,
  { min = 0, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {},
): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new TypeError(`Expected ${name} to be an integer ${range}, got ${describeValue(value)}`);
  }
  return value;
}

/** Like {@link checkInteger}, but `undefined` passes through. */
export function checkOptionalInteger(
  name: string,
  value: unknown,
  range?: { min?: number; max?: number },
): number | undefined {
  return value === undefined ? undefined : checkInteger(name, value, range);
}

/** A request field that must be a non-empty string of bounded length when given (else 400). */
export function checkOptionalString(name: string, value: unknown, maxLength: number): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value === '' || value.length > maxLength) {
    throw new ValidationError(
      `Expected ${name} to be a non-empty string of at most ${maxLength} characters, got ${describeValue(value)}`,
      { field: name, statusCode: 400 },
    );
  }
  return value;
}
