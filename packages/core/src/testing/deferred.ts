/** A promise together with the functions that settle it. */
export interface Deferred<T = void> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * A promise that a test settles by hand: the way to hold a source, a stream or a permit at an
 * exact point without a timer.
 *
 * @example
 * ```ts
 * const gate = deferred();
 * const rows = async function* () {
 *   yield { id: 1 };
 *   await gate.promise; // the export waits here until the test opens the gate
 *   yield { id: 2 };
 * };
 * // ...assert on the export while it is held, then:
 * gate.resolve();
 * ```
 */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
