import { Readable } from 'node:stream';
import { chain } from 'stream-chain';
import jsonlParser from 'stream-chain/jsonl/parser.js';
import { parser } from 'stream-json';
import { pick } from 'stream-json/filters/pick.js';
import { streamArray } from 'stream-json/streamers/stream-array.js';
import type { Row, RowSource } from './dataset.js';
import { describeValue, ValidationError } from './errors.js';

type ByteSource = Readable | AsyncIterable<Uint8Array | string>;

export interface JsonArrayOptions {
  /**
   * Dot-separated path of the array inside the document, e.g. `data.items` for
   * `{"data":{"items":[...]}}`. Without it, the document itself must be an array.
   */
  path?: string;
}

/**
 * Parses a JSON array incrementally (stream-json) and yields its elements one at a time, so a
 * multi-gigabyte upstream body never sits in memory whole. Malformed JSON fails the stream.
 *
 * @example
 * ```ts
 * const response = await fetch(url, { signal });
 * return fromJsonArray(Readable.fromWeb(response.body), { path: 'data.items' });
 * ```
 */
export function fromJsonArray(input: ByteSource, options: JsonArrayOptions = {}): Readable {
  const path = options.path;
  if (path !== undefined && (typeof path !== 'string' || path === '')) {
    throw new TypeError(`Expected path to be a non-empty dot-separated string, got ${describeValue(path)}`);
  }
  const steps: unknown[] = [toReadable(input), parser()];
  if (path) steps.push(pick({ filter: path }));
  steps.push(streamArray(), (item: { value: unknown }) => item.value);
  return chain(steps as never) as unknown as Readable;
}

/**
 * Parses NDJSON (one JSON value per line; blank lines skipped) and yields each value.
 * A malformed line fails the stream.
 */
export function fromNdjson(input: ByteSource): Readable {
  return chain([
    toReadable(input),
    jsonlParser(),
    (item: { value: unknown }) => item.value,
  ] as never) as unknown as Readable;
}

function toReadable(input: ByteSource): Readable {
  if (input instanceof Readable) return input;
  if (input && typeof (input as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
    return Readable.from(input, { objectMode: false });
  }
  throw new TypeError(`Expected a Readable or an async iterable of bytes, got ${describeValue(input)}`);
}
