import { createReadStream } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import {
  ExportError,
  fromBatches,
  fromJsonArray,
  fromNdjson,
  isExportError,
  type Params,
  type RowSource,
  type SourceContext,
} from '@spark-export/core';
import { sourceFailure } from './errors.js';
import { streamBatchReader } from './parsed-stream.js';

export interface FileSourceOptions {
  dataset: string;
  /** The file's path; may hold `{param}` placeholders filled from the request's params. */
  path: string;
  /** The directory relative paths resolve against (the config file's). */
  baseDir: string;
  /** Real paths of the directories files may be read from. */
  roots: readonly string[];
  format: 'json' | 'ndjson';
  /** Dot path of the array inside a JSON document. */
  jsonPath: string | undefined;
  batchSize: number;
}

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Param names used as `{name}` in a path template. */
export function pathPlaceholders(path: string): string[] {
  return [...path.matchAll(PLACEHOLDER)].map((match) => match[1]!);
}

/** True when `path` is `root` or inside it. Both must be real (symlink-free) absolute paths. */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Resolves the file of one export: placeholders filled, symlinks resolved, and the result
 * refused unless it lies inside a configured root (a param such as `../../etc/passwd` cannot
 * escape).
 */
export async function resolveDataFile(options: FileSourceOptions, params: Params): Promise<string> {
  const filled = options.path.replace(PLACEHOLDER, (_, name: string) => {
    const value = params[name];
    if (value === undefined) {
      throw new ExportError(
        'INVALID_PARAMS',
        422,
        `Dataset "${options.dataset}" needs the param "${name}" to find its file`,
      );
    }
    return String(value);
  });
  if (filled.includes('\0')) throw outsideRoots(options.dataset);
  const absolute = resolve(options.baseDir, filled);
  let real: string;
  try {
    real = await realpath(absolute);
  } catch (error) {
    // "Not found" only for paths that would be allowed: a probe outside the roots learns nothing.
    if (!options.roots.some((root) => isInside(root, absolute))) throw outsideRoots(options.dataset);
    throw new ExportError('NOT_FOUND', 404, `The file of dataset "${options.dataset}" does not exist`, {
      cause: error,
    });
  }
  if (!options.roots.some((root) => isInside(root, real))) throw outsideRoots(options.dataset);
  return real;
}

function outsideRoots(dataset: string): ExportError {
  return new ExportError(
    'FORBIDDEN',
    403,
    `The file of dataset "${dataset}" is outside the allowed directories`,
  );
}

/** Streams an NDJSON or JSON-array file from disk, parsed incrementally. */
export async function openFileSource(
  options: FileSourceOptions,
  params: Params,
  context: SourceContext,
): Promise<RowSource> {
  const file = await resolveDataFile(options, params);
  const input = createReadStream(file);
  const parsed =
    options.format === 'ndjson'
      ? fromNdjson(input)
      : fromJsonArray(input, options.jsonPath ? { path: options.jsonPath } : {});
  return fromBatches({
    highWaterMark: options.batchSize,
    signal: context.signal,
    readBatch: streamBatchReader(parsed, options.batchSize),
    close() {
      parsed.destroy();
      input.destroy();
    },
    mapError: (error) =>
      isExportError(error)
        ? error
        : (error as NodeJS.ErrnoException).code !== undefined &&
            (error as NodeJS.ErrnoException).syscall !== undefined
          ? sourceFailure(`The file of dataset "${options.dataset}" could not be read`, error)
          : sourceFailure(
              `The file of dataset "${options.dataset}" is not valid ${options.format === 'ndjson' ? 'NDJSON' : 'JSON'}`,
              error,
            ),
  });
}
