import type { Writable } from 'node:stream';
import { type ExportError, isExportError, SourceError } from '../errors.js';
import { createEncoder, type PreparedExport } from '../request.js';
import { type ExportTimeLimits, timeLimits } from './time-limits.js';
import { writeExport } from './write-export.js';

export interface RunExportOptions {
  signal: AbortSignal;
  /** Rows pulled from the source at a time. */
  batchSize: number;
  /** End the destination when the export ends. `false` for stdout. */
  end: boolean;
  /** Compute the sha256 of the bytes written. */
  hash: boolean;
  /** Called as chunks reach the destination, with the rows and bytes they added. */
  onProgress?: (rows: number, bytes: number) => void;
  /** The manager's time limits, under the dataset's own. */
  limits: ExportTimeLimits;
  /** Streams may stall on a slow reader; jobs write to storage and have no stall limit. */
  kind: 'stream' | 'job';
}

export interface RunExportResult {
  rows: number;
  bytes: number;
  sha256: string | undefined;
}

/**
 * One export from its source into any Writable: an HTTP response, a file being stored, stdout.
 * Streams and jobs both run through here; every failure comes out as an {@link ExportError}.
 */
export async function runExport(
  prepared: PreparedExport,
  destination: Writable,
  options: RunExportOptions,
): Promise<RunExportResult> {
  const { signal } = options;
  try {
    return await writeExport({
      dataset: prepared.dataset.name,
      // Opened inside the export, so that its time limits also cover a source that never answers.
      open: async (opened) => {
        try {
          return await prepared.dataset.source(prepared.params, {
            signal: opened,
            columns: prepared.columns?.map((column) => column.name),
          });
        } catch (error) {
          throw toExportError(error, prepared.dataset.name, opened);
        }
      },
      limits: timeLimits(prepared.dataset, options.limits, options.kind),
      encoder: createEncoder(prepared),
      destination,
      signal,
      compression: prepared.compression === 'gzip' ? { type: 'gzip' } : undefined,
      batchSize: options.batchSize,
      end: options.end,
      hash: options.hash,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } catch (error) {
    throw toExportError(error, prepared.dataset.name, signal);
  }
}

/**
 * The library error for whatever ended an export. A library error stands (a source failure
 * stays one even if tearing down then aborted the export); else an abort's reason; anything
 * foreign is the source's.
 */
export function toExportError(error: unknown, dataset: string, signal: AbortSignal): ExportError {
  if (isExportError(error)) return error;
  if (signal.aborted && isExportError(signal.reason)) return signal.reason;
  return new SourceError(dataset, { cause: error });
}
