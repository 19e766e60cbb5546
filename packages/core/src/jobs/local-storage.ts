import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ExportStorage, StorageWrite } from './export-storage.js';
import { isJobStoreFile } from './file-job-store.js';
import { isJobId } from './job.js';

/**
 * Export files in a local directory (shared with the job manifests by default). A file is
 * written to `<name>.part` with an fsync on close, then renamed to its final name and the
 * directory fsynced, so that a crash leaves a partial file (removed at the next start) or a
 * whole one, never a short file under the final name.
 */
export class LocalExportStorage implements ExportStorage {
  readonly directory: string;

  constructor(directory: string) {
    this.directory = directory;
  }

  /** Where a stored file lies on disk, e.g. for nginx `X-Accel-Redirect`. */
  pathOf(name: string): string {
    return join(this.directory, checkName(name));
  }

  async open(): Promise<void> {
    await mkdir(this.directory, { recursive: true });
  }

  async createWrite(jobId: string, file: { extension: string; replace?: boolean }): Promise<StorageWrite> {
    if (!isJobId(jobId)) throw new TypeError(`Expected a job id, got ${JSON.stringify(String(jobId))}`);
    // `<id>.json` is the job's manifest: a JSON export must not be written (or served) under that name.
    const extension = file.extension.startsWith('json') ? `data.${file.extension}` : file.extension;
    const name = `${jobId}.${extension}`;
    const finalPath = this.pathOf(name);
    const partPath = `${finalPath}.part`;
    // An earlier run of the job that died left its partial file: unlinked, never reopened, so a
    // writer of that run still alive writes into a file nobody will publish.
    if (file.replace) await rm(partPath, { force: true });
    // `flush` fsyncs the file before it is closed, so the rename in commit() publishes durable data.
    const stream: WriteStream = createWriteStream(partPath, { flags: 'wx', flush: true });
    // Failures surface through the export's pipeline; this keeps an early one from going unhandled.
    stream.on('error', () => {});
    const directory = this.directory;
    return {
      name,
      stream,
      async commit() {
        await rename(partPath, finalPath);
        await syncDirectory(directory);
      },
      async abort() {
        // The stream opens its file asynchronously: an export that failed at once can get here
        // before the `.part` file exists. Wait for the stream to close, or the open would create
        // the file again after it was removed.
        if (!stream.closed) {
          const closed = once(stream, 'close').catch(() => {});
          stream.destroy();
          await closed;
        }
        await rm(partPath, { force: true });
        await rm(finalPath, { force: true });
      },
    };
  }

  async stat(name: string): Promise<{ bytes: number } | undefined> {
    try {
      return { bytes: (await stat(this.pathOf(name))).size };
    } catch {
      return undefined;
    }
  }

  async read(name: string, range?: { start: number; end: number }): Promise<Readable> {
    // Opened before the caller answers, so that a file removed in the meantime is an error, not a cut body.
    const handle = await open(this.pathOf(name), 'r');
    return range ? handle.createReadStream(range) : handle.createReadStream();
  }

  async remove(name: string): Promise<void> {
    await rm(this.pathOf(name), { force: true });
  }

  async removeOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.directory)) {
      // Only files named after a job are ours; manifests belong to the job store.
      if (!/^exp_[A-Za-z0-9_-]{22}\./.test(name) || isJobStoreFile(name) || keep.has(name)) continue;
      await rm(join(this.directory, name), { force: true });
      removed.push(name);
    }
    return removed;
  }
}

function checkName(name: string): string {
  if (!/^exp_[A-Za-z0-9_-]{22}\.[A-Za-z0-9.]+$/.test(name)) {
    throw new TypeError(
      `Expected a stored export file name, got ${JSON.stringify(String(name).slice(0, 60))}`,
    );
  }
  return name;
}

async function syncDirectory(directory: string): Promise<void> {
  // Makes the rename durable. Some platforms cannot open directories; the rename is still atomic there.
  const handle = await open(directory, 'r').catch(() => undefined);
  if (!handle) return;
  try {
    await handle.sync();
  } catch {
    // EISDIR/EINVAL on some filesystems: nothing more we can do.
  } finally {
    await handle.close();
  }
}
