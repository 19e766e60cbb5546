import type { EmitEvent } from '../types.js';
import type { ExportStorage } from './export-storage.js';
import type { JobRecord } from './job.js';
import type { JobStore } from './job-store.js';

export interface RecoveryOptions {
  store: JobStore;
  storage: ExportStorage;
  now: () => number;
  emit: EmitEvent;
  onStoredBytes: (delta: number) => void;
  /** Whether an interrupted job may run again (resume enabled, attempts left, dataset known). */
  canResume: (record: JobRecord) => boolean;
}

/**
 * What a process does with the jobs it finds at start-up, like a queue's stalled-job check:
 * jobs that were queued or running when the process died are failed as `INTERRUPTED` (or
 * handed back to be resumed); a succeeded job whose file is missing or has the wrong size is
 * expired, never served; files that no job claims, and partial writes, are removed.
 *
 * @returns the interrupted jobs to resume, oldest first
 */
export async function recover(options: RecoveryOptions): Promise<JobRecord[]> {
  const { store, storage, now, emit } = options;
  await storage.open();
  await store.open();
  const keep = new Set<string>();
  const resume: JobRecord[] = [];
  for await (const record of store.all()) {
    const cutShort = record.status === 'queued' || record.status === 'running';
    // close() marks the jobs it interrupts failed/INTERRUPTED; those are re-run too.
    const interrupted = cutShort || (record.status === 'failed' && record.error?.code === 'INTERRUPTED');
    if (interrupted && options.canResume(record)) {
      resume.push(record);
      continue;
    }
    if (cutShort) {
      record.status = 'failed';
      record.error = { code: 'INTERRUPTED', message: 'The export was interrupted by a restart' };
      record.finishedAt = new Date(now()).toISOString();
      record.file = null;
      await store.save(record);
    }
    if (record.status === 'succeeded' && record.file) {
      const stat = await storage.stat(record.file.name);
      if (stat?.bytes === record.file.bytes) {
        keep.add(record.file.name);
        options.onStoredBytes(record.file.bytes);
        continue;
      }
      // A missing or truncated file is never served: the job is expired, the rest removed below.
      record.status = 'expired';
      record.expiresAt = new Date(now()).toISOString();
      await store.save(record);
      emit(
        'warning',
        stat === undefined
          ? `The file of job ${record.id} is missing; marked expired`
          : `The file of job ${record.id} has ${stat.bytes} bytes, not the ${record.file.bytes} its record says; marked expired`,
      );
    }
  }
  // Partial files, and finished files whose record never said `succeeded`, are never served.
  await storage.removeOrphans(keep);
  return resume.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}
