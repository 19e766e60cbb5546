import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { isJobId, JOB_STATUSES, type JobRecord } from './job.js';
import { type JobQuery, type JobStore, matchesQuery, newestFirst } from './job-store.js';

export interface FileJobStoreOptions {
  /** Told about manifests that could not be read (moved aside to `<name>.corrupt`). */
  onWarning?: (message: string, cause?: unknown) => void;
}

/**
 * Job manifests as JSON files (`<id>.json`) in the exports directory, with an in-memory index
 * read at `open()`: one process owns a directory. Every manifest write is atomic: a temp file
 * is written, fsynced and renamed over the old one, so a crash leaves either the old or the new
 * manifest, never half of one; a failed write leaves no temp file. File names derive from job
 * ids only.
 */
export class FileJobStore implements JobStore {
  readonly directory: string;
  readonly #records = new Map<string, JobRecord>();
  readonly #writes = new Map<string, Promise<void>>();
  readonly #onWarning: (message: string, cause?: unknown) => void;

  constructor(directory: string, options: FileJobStoreOptions = {}) {
    this.directory = directory;
    this.#onWarning = options.onWarning ?? (() => {});
  }

  manifestPath(id: string): string {
    return join(this.directory, `${checkId(id)}.json`);
  }

  /**
   * Reads every manifest. One that cannot be parsed or does not look like one is moved aside
   * to `<name>.corrupt` and reported, never thrown. Leftover manifest temp files are removed.
   */
  async open(): Promise<void> {
    await mkdir(this.directory, { recursive: true });
    for (const name of await readdir(this.directory)) {
      if (isManifestTemp(name)) {
        await rm(join(this.directory, name), { force: true });
        continue;
      }
      const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : undefined;
      if (!id || !isJobId(id)) continue;
      try {
        this.#records.set(id, parseRecord(await readFile(join(this.directory, name), 'utf8'), id));
      } catch (error) {
        const movedTo = `${name}.corrupt`;
        await rename(join(this.directory, name), join(this.directory, movedTo));
        this.#onWarning(`Moved the unreadable manifest ${name} aside to ${movedTo}`, error);
      }
    }
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const record = this.#records.get(id);
    return record && structuredClone(record);
  }

  async create(record: JobRecord): Promise<{ record: JobRecord; created: boolean }> {
    // Checked and claimed before the first await, so that concurrent creates with one key make one job.
    if (record.idempotencyKey !== null) {
      const existing = this.#findByKey(record.owner, record.idempotencyKey);
      if (existing) return { record: structuredClone(existing), created: false };
    }
    this.#records.set(record.id, structuredClone(record));
    try {
      await this.save(record);
    } catch (error) {
      this.#records.delete(record.id);
      throw error;
    }
    return { record: structuredClone(record), created: true };
  }

  save(record: JobRecord): Promise<void> {
    // A job removed in the meantime stays removed: a late write must not bring its manifest back.
    if (!this.#records.has(record.id)) return Promise.resolve();
    const snapshot = structuredClone(record);
    this.#records.set(record.id, snapshot);
    return this.#serialized(record.id, () => this.#write(snapshot));
  }

  remove(id: string): Promise<void> {
    this.#records.delete(id);
    return this.#serialized(id, () => rm(this.manifestPath(id), { force: true }));
  }

  async findByIdempotencyKey(owner: string | null, key: string): Promise<JobRecord | undefined> {
    const record = this.#findByKey(owner, key);
    return record && structuredClone(record);
  }

  async list(query: JobQuery): Promise<{ records: JobRecord[]; more: boolean }> {
    const matches = [...this.#records.values()]
      .filter((record) => matchesQuery(record, query))
      .sort(newestFirst);
    return {
      records: matches.slice(0, query.limit).map((record) => structuredClone(record)),
      more: matches.length > query.limit,
    };
  }

  async *all(): AsyncIterable<JobRecord> {
    for (const record of [...this.#records.values()]) yield structuredClone(record);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#writes.values()]);
  }

  #findByKey(owner: string | null, key: string): JobRecord | undefined {
    for (const record of this.#records.values()) {
      if (record.idempotencyKey === key && record.owner === owner) return record;
    }
    return undefined;
  }

  #write(record: JobRecord): Promise<void> {
    return writeFileAtomic(this.manifestPath(record.id), `${JSON.stringify(record, null, 2)}\n`);
  }

  /** Manifest writes of one job happen one after another, in order. */
  #serialized(id: string, write: () => Promise<void>): Promise<void> {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous.then(write);
    // The chain never rejects (the next write runs after a failed one), and forgets itself
    // once it is the last write of the job, so the map holds only jobs being written.
    const settled: Promise<void> = next.then(
      () => this.#forget(id, settled),
      () => this.#forget(id, settled),
    );
    this.#writes.set(id, settled);
    return next;
  }

  #forget(id: string, settled: Promise<void>): void {
    if (this.#writes.get(id) === settled) this.#writes.delete(id);
  }
}

/** `<id>.json.<hex>.tmp`: a manifest write that never finished. */
export function isManifestTemp(name: string): boolean {
  return /^exp_[A-Za-z0-9_-]{22}\.json\.[0-9a-f]+\.tmp$/.test(name);
}

/** Files of the job store itself: manifests, their temp files, and manifests moved aside. */
export function isJobStoreFile(name: string): boolean {
  return /^exp_[A-Za-z0-9_-]{22}\.json(\.corrupt|\.[0-9a-f]+\.tmp)?$/.test(name);
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
