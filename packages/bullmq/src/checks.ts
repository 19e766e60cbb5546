/** How a value looks in a validation message (as core's describeValue, which core does not export). */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string')
    return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} (string)`;
  if (typeof value === 'object') return 'an object';
  return `${String(value)} (${typeof value})`;
}

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
