// Option checks in the wording of @spark-export/core: "Expected <name> to be <what>, got <value>".

/** A short, safe description of a value for an error message. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'string') {
    return `${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} (string)`;
  }
  if (typeof value === 'object') return 'an object';
  return `${String(value)} (${typeof value})`;
}

/** `value`, or `fallback` when it is undefined; a `TypeError` unless it is a safe integer in `[min, max]`. */
export function checkInteger(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new TypeError(
      `Expected ${name} to be an integer from ${min} to ${max}, got ${describeValue(value)}`,
    );
  }
  return value;
}

/** Names of stored export files: `<job id>.<extension>`, nothing that could reach another key. */
const FILE_NAME = /^exp_[A-Za-z0-9_-]{22}\.[A-Za-z0-9.]+$/;

export function isFileName(name: string): boolean {
  return FILE_NAME.test(name);
}

export function checkFileName(name: string): string {
  if (typeof name !== 'string' || !isFileName(name)) {
    throw new TypeError(`Expected a stored export file name, got ${describeValue(name)}`);
  }
  return name;
}
