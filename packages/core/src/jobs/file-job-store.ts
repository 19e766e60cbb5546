import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isJobId, JOB_STATUSES, type JobRecord } from './job.js';

/** What {@link FileJobStore.scan} found in the exports directory. */
export interface ScanResult {
  records: JobRecord[];
  /** Manifests that could not be read or parsed, already moved aside (`<name>.corrupt`). */
  corrupt: { file: string; movedTo: string; error: unknown }[];
  /** Every other file name in the directory (data files, `.part` files, strangers). */
  files: string[];
}

/**
 * Job manifests as JSON files next to the export files. Every manifest write is atomic: a temp
 * file is written, fsynced and renamed over the old one, so a crash leaves either the old or
 * the new manifest, never half of one. File names derive from job ids only.
 */
export class FileJobStore {
  readonly directory: string;

  constructor(directory: string) {
    this.directory = directory;
  }

  async init(): Promise<void> {
    await mkdir(this.directory, { recursive: true });
  }

  manifestPath(id: string): string {
    return join(this.directory, `${checkId(id)}.json`);
  }

  /** The final data file of a job. */
  dataPath(name: string): string {
    return join(this.directory, name);
  }

  async save(record: JobRecord): Promise<void> {
    const target = this.manifestPath(record.id);
    const temp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(`${JSON.stringify(record, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async remove(id: string): Promise<void> {
    await rm(this.manifestPath(id), { force: true });
  }

  async removeFile(name: string): Promise<void> {
    await rm(this.dataPath(name), { force: true });
  }

  async fileSize(name: string): Promise<number | undefined> {
    try {
      return (await stat(this.dataPath(name))).size;
    } catch {
      return undefined;
    }
  }

  /**
   * Reads every manifest. A manifest that cannot be parsed or does not look like one is moved
   * aside to `<name>.corrupt` and reported, never thrown. Leftover manifest temp files are
   * removed.
   */
  async scan(): Promise<ScanResult> {
    const names = await readdir(this.directory);
    const result: ScanResult = { records: [], corrupt: [], files: [] };
    for (const name of names) {
      if (name.endsWith('.tmp')) {
        await rm(join(this.directory, name), { force: true });
        continue;
      }
      const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : undefined;
      if (!id || !isJobId(id)) {
        result.files.push(name);
        continue;
      }
      try {
        const record = parseRecord(await readFile(join(this.directory, name), 'utf8'), id);
        result.records.push(record);
      } catch (error) {
        const movedTo = `${name}.corrupt`;
        await rename(join(this.directory, name), join(this.directory, movedTo));
        result.corrupt.push({ file: name, movedTo, error });
      }
    }
    return result;
  }
}

function checkId(id: string): string {
  if (!isJobId(id)) throw new TypeError(`Expected a job id, got ${JSON.stringify(String(id).slice(0, 40))}`);
  return id;
}

function parseRecord(text: string, id: string): JobRecord {
  const value = JSON.parse(text) as Partial<JobRecord>;
  if (typeof value !== 'object' || value === null) throw new Error('The manifest is not a JSON object');
  if (value.version !== 1) throw new Error(`Unsupported manifest version ${JSON.stringify(value.version)}`);
  if (value.id !== id)
    throw new Error(`The manifest's id ${JSON.stringify(value.id)} does not match its file name`);
  if (!JOB_STATUSES.includes(value.status as never)) {
    throw new Error(`Unknown job status ${JSON.stringify(value.status)}`);
  }
  if (
    typeof value.dataset !== 'string' ||
    typeof value.format !== 'string' ||
    typeof value.createdAt !== 'string'
  ) {
    throw new Error('The manifest lacks dataset, format or createdAt');
  }
  if (
    value.status === 'succeeded' &&
    (typeof value.file?.name !== 'string' || typeof value.file.sha256 !== 'string')
  ) {
    throw new Error('A succeeded manifest lacks its file');
  }
  return value as JobRecord;
}
