// Compression of an export's bytes: gzip or zstd, at a level, for files (`.csv.gz`, `.csv.zst`)
// and on the wire (`Content-Encoding`). zstd is in Node's zlib from 22.15 and 24.0 on; it is
// looked up when an export asks for it, so that the same code runs on Node 20.
import type { Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { describeValue, ValidationError } from './errors.js';

/** The compressions an export can have. */
export type CompressionType = 'none' | 'gzip' | 'zstd';

/**
 * How an export's bytes are compressed: a name, or a name with a level.
 * - gzip levels: 0 (stored) to 9 (smallest); {@link DEFAULT_GZIP_LEVEL} (3) when none is given.
 * - zstd levels: 1 to 22; zstd's default is 3. zstd needs Node >= 22.15.
 * @default 'none'
 * @example
 * ```ts
 * const fast: Compression = { type: 'gzip', level: 1 };
 * ```
 */
export type Compression =
  | CompressionType
  | { type: 'gzip'; level?: number | undefined }
  | { type: 'zstd'; level?: number | undefined };

/**
 * The gzip level when none is given. Measured by `bench/gzip-levels.mjs` on the benchmark's CSV
 * (`docs/benchmarks.md`, "gzip levels"): level 3 takes 55-60% of the CPU time of zlib's default
 * 6 for files 16% larger, and 25-45% more than level 1 for files 10% smaller. An export is
 * usually CPU-bound, so the cheap levels win; past 3 each level costs more than it saves.
 */
export const DEFAULT_GZIP_LEVEL = 3;
/** zstd's own default level. */
export const DEFAULT_ZSTD_LEVEL = 3;

const LEVELS = { gzip: { min: 0, max: 9 }, zstd: { min: 1, max: 22 } } as const;

/** The type of a (checked) compression: `'none'`, `'gzip'` or `'zstd'`. */
export function compressionType(compression: Compression | undefined): CompressionType {
  if (compression === undefined) return 'none';
  return typeof compression === 'string' ? compression : compression.type;
}

/** The level asked for, or `undefined` for the library's default. */
export function compressionLevel(compression: Compression | undefined): number | undefined {
  return typeof compression === 'object' ? compression.level : undefined;
}

/** True when the running Node has zstd in `node:zlib` (22.15 and later). */
export function zstdAvailable(): boolean {
  return typeof (zlib as { createZstdCompress?: unknown }).createZstdCompress === 'function';
}

function zstdMissing(field: string): ValidationError {
  return new ValidationError(
    `Expected ${field} to be one this server can write: zstd needs Node >= 22.15 (zlib.createZstdCompress), and this server runs Node ${process.version}; use "gzip"`,
    { field },
  );
}

/**
 * Checks a compression option and gives it in its stored form: a name, or `{ type, level }`
 * when a level was given.
 *
 * @throws {ValidationError} 422 naming `field`: an unknown type, a level out of range, or zstd
 *   on a Node without it (the message names the running version).
 */
export function checkCompression(value: unknown, field = 'compression'): Compression {
  if (value === undefined) return 'none';
  let type: unknown = value;
  let level: unknown;
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { type: given, level: givenLevel, ...rest } = value as Record<string, unknown>;
    const extra = Object.keys(rest)[0];
    if (extra !== undefined) {
      throw new ValidationError(
        `Unknown field "${extra.slice(0, 64)}" of ${field}; expected type and level`,
        {
          field: `${field}.${extra.slice(0, 64)}`,
        },
      );
    }
    type = given;
    level = givenLevel;
    if (type !== 'gzip' && type !== 'zstd') {
      throw new ValidationError(`Expected ${field}.type to be "gzip" or "zstd", got ${describeValue(type)}`, {
        field: `${field}.type`,
      });
    }
  } else if (type !== 'none' && type !== 'gzip' && type !== 'zstd') {
    throw new ValidationError(
      `Expected ${field} to be "none", "gzip", "zstd" or { type, level }, got ${describeValue(value)}`,
      { field },
    );
  }
  if (type === 'zstd' && !zstdAvailable()) throw zstdMissing(field);
  if (level === undefined) return type as CompressionType;
  const { min, max } = LEVELS[type as 'gzip' | 'zstd'];
  if (typeof level !== 'number' || !Number.isInteger(level) || level < min || level > max) {
    throw new ValidationError(
      `Expected ${field}.level to be an integer from ${min} to ${max} for ${type}, got ${describeValue(level)}`,
      { field: `${field}.level` },
    );
  }
  return { type: type as 'gzip' | 'zstd', level };
}

/** A gzip or zstd stream: `flush()` pushes out what it holds back (a slow source's rows). */
export type Compressor = Transform & { flush(callback?: () => void): void };

/** A compressing stream for the export's bytes, or `undefined` for `'none'`. */
export function createCompressor(compression: Compression | undefined): Compressor | undefined {
  const type = compressionType(compression);
  const level = compressionLevel(compression);
  if (type === 'gzip') return zlib.createGzip({ level: level ?? DEFAULT_GZIP_LEVEL });
  if (type === 'zstd') {
    // Checked in prepare(); checked again for a job record resumed on an older Node.
    if (!zstdAvailable()) throw zstdMissing('compression');
    const createZstd = (zlib as unknown as { createZstdCompress: (options: object) => Compressor })
      .createZstdCompress;
    const constants = zlib.constants as unknown as Record<string, number>;
    return createZstd({ params: { [constants.ZSTD_c_compressionLevel!]: level ?? DEFAULT_ZSTD_LEVEL } });
  }
  return undefined;
}

/** The media type of a compressed export file, or `undefined` for `'none'`. */
export function compressedContentType(compression: Compression | undefined): string | undefined {
  const type = compressionType(compression);
  return type === 'gzip' ? 'application/gzip' : type === 'zstd' ? 'application/zstd' : undefined;
}

/** The file extension a compression adds: `.gz`, `.zst`, or `''`. */
export function compressionExtension(compression: Compression | undefined): string {
  const type = compressionType(compression);
  return type === 'gzip' ? '.gz' : type === 'zstd' ? '.zst' : '';
}

/**
 * The content codings a streamed response can be sent in, ours first when the client likes
 * several equally: gzip, which every client and proxy knows, then zstd.
 */
export function wireEncodings(): ('zstd' | 'gzip')[] {
  return zstdAvailable() ? ['gzip', 'zstd'] : ['gzip'];
}
