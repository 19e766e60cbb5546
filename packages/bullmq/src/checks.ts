import { describeValue } from '@spark-export/core';

export { describeValue };

/** A positive integer option, or a `TypeError` in the house style. */
export function checkPositiveInteger(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`Expected ${name} to be a positive integer, got ${describeValue(value)}`);
  }
  return value;
}

export function checkPrefix(value: unknown): string {
  if (typeof value !== 'string') {
    throw new TypeError(`Expected prefix to be a string, got ${describeValue(value)}`);
  }
  return value;
}
