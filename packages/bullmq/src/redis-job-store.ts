import type { JobQuery, JobStore } from '@spark-export/core';
import type { Redis } from 'ioredis';
import { checkPrefix, describeValue } from './checks.js';
import { DEFAULT_PREFIX, type RedisKeys, redisKeys } from './keys.js';
import { CREATE, FIND_BY_KEY, REMOVE, runScript, SAVE } from './scripts.js';

/** A job record as the store keeps it (core's `JobRecord`, which core does not export by name). */
export type JobRecord = Parameters<JobStore['save']>[0];

export interface RedisJobStoreOptions {
  /** The ioredis client records are read and written on. The store never closes it. */
  redis: Redis;
  /**
   * Prefix of every key of the store: `<prefix>job:<id>`, `<prefix>owner:<owner>:jobs`,
   * `<prefix>owner:<owner>:idempotency:<key>`.
   * @default 'spark-export:'
   */
  prefix?: string;
  /** Told at `open()` when Redis may evict keys (`maxmemory-policy` is not `noeviction`). */
  onWarning?: (message: string, cause?: unknown) => void;
}

/** Listing entries read per round trip while a filtered page fills. */
const LIST_CHUNK = 200;
/** Keys asked for per SCAN step in `all()`. */
const SCAN_COUNT = 500;

/**
 * Job records in Redis, so that any replica answers for any job. Each job is a hash at
 * `<prefix>job:<id>` holding its JSON; each owner has a sorted set `<prefix>owner:<owner>:jobs`
 * (owner as JSON, `null` for none) whose members `<createdAt>\0<id>` sort like the listing
 * (newest first, ties by id), so a page after a cursor is one exclusive range; an idempotency
 * key is `<prefix>owner:<owner>:idempotency:<key>`, holding the job id. Create, save and remove
 * are Lua scripts: a create claims its idempotency key atomically, and a save that races a
 * remove cannot bring the job back. Nothing expires on its own: retention removes records.
 *
 * @example
 * ```ts
 * const store = new RedisJobStore({ redis: new Redis(process.env.REDIS_URL) });
 * const manager = new ExportManager({ store, storage, limiter });
 * ```
 */
export class RedisJobStore implements JobStore {
  readonly #redis: Redis;
  readonly #keys: RedisKeys;
  readonly #onWarning: (message: string, cause?: unknown) => void;
  readonly #writes = new Map<string, Promise<void>>();

  constructor(options: RedisJobStoreOptions) {
    if (typeof options?.redis?.evalsha !== 'function') {
      throw new TypeError(`Expected redis to be an ioredis client, got ${describeValue(options?.redis)}`);
    }
    this.#redis = options.redis;
    this.#keys = redisKeys(checkPrefix(options.prefix ?? DEFAULT_PREFIX));
    this.#onWarning = options.onWarning ?? (() => {});
  }

  /** Checks that Redis answers, and warns if it may evict the records (see the README). */
  async open(): Promise<void> {
    await this.#redis.ping();
    let policy: string | undefined;
    try {
      const reply = (await this.#redis.config('GET', 'maxmemory-policy')) as string[];
      policy = reply[1];
    } catch {
      // Managed Redis services often refuse CONFIG; nothing to check then.
    }
    if (policy !== undefined && policy !== 'noeviction') {
      this.#onWarning(
        `Redis has maxmemory-policy ${policy}: it may evict job records under memory pressure; set noeviction`,
      );
    }
  }

  async get(id: string): Promise<JobRecord | undefined> {
    if (typeof id !== 'string') return undefined;
    const json = await this.#redis.hget(this.#keys.job(id), 'record');
    return json === null ? undefined : parseRecord(json, id);
  }

  create(record: JobRecord): Promise<{ record: JobRecord; created: boolean }> {
    const json = JSON.stringify(record);
    const owner = record.owner;
    const keys = [this.#keys.job(record.id), this.#keys.ownerJobs(owner)];
    if (record.idempotencyKey !== null) keys.push(this.#keys.idempotency(owner, record.idempotencyKey));
    let result: { record: JobRecord; created: boolean } | undefined;
    const written = this.#serialized(record.id, async () => {
      const reply = (await runScript(this.#redis, CREATE, keys, [
        json,
        listingMember(record),
        record.id,
        this.#keys.jobPrefix,
      ])) as [number, string?];
      result =
        reply[0] === 1
          ? { record: JSON.parse(json) as JobRecord, created: true }
          : { record: parseRecord(reply[1] as string, record.id), created: false };
    });
    return written.then(() => result as { record: JobRecord; created: boolean });
  }

  save(record: JobRecord): Promise<void> {
    // Serialised now: changes made to the record after this call are not this write's.
    const json = JSON.stringify(record);
    const key = this.#keys.job(record.id);
    return this.#serialized(record.id, async () => {
      await runScript(this.#redis, SAVE, [key], [json]);
    });
  }

  remove(id: string): Promise<void> {
    const key = this.#keys.job(id);
    return this.#serialized(id, async () => {
      await runScript(this.#redis, REMOVE, [key], [id]);
    });
  }

  async findByIdempotencyKey(owner: string | null, key: string): Promise<JobRecord | undefined> {
    const json = (await runScript(
      this.#redis,
      FIND_BY_KEY,
      [this.#keys.idempotency(owner, key)],
      [this.#keys.jobPrefix],
    )) as string | null;
    return json === null ? undefined : parseRecord(json);
  }

  /**
   * Reads the owner's listing from the cursor on, in chunks, until the page is full: one round
   * trip for an unfiltered page, more when a status or dataset filter skips records.
   */
  async list(query: JobQuery): Promise<{ records: JobRecord[]; more: boolean }> {
    const index = this.#keys.ownerJobs(query.owner);
    const matches: JobRecord[] = [];
    let max = query.after === undefined ? '+' : `(${listingMember(query.after)}`;
    const chunk = Math.min(Math.max(query.limit + 1, 20), LIST_CHUNK);
    while (matches.length <= query.limit) {
      const members = await this.#redis.zrevrangebylex(index, max, '-', 'LIMIT', 0, chunk);
      if (members.length === 0) break;
      const pipeline = this.#redis.pipeline();
      for (const member of members) pipeline.hget(this.#keys.job(memberId(member)), 'record');
      const replies = (await pipeline.exec()) ?? [];
      for (const [error, json] of replies) {
        if (error) throw error;
        // Removed since the range was read.
        if (typeof json !== 'string') continue;
        const record = parseRecord(json);
        if (query.status !== undefined && record.status !== query.status) continue;
        if (query.dataset !== undefined && record.dataset !== query.dataset) continue;
        matches.push(record);
        if (matches.length > query.limit) break;
      }
      if (members.length < chunk) break;
      max = `(${members[members.length - 1]}`;
    }
    return { records: matches.slice(0, query.limit), more: matches.length > query.limit };
  }

  /** Every job, by SCAN (never KEYS, which blocks Redis): each once, in no particular order. */
  async *all(): AsyncIterable<JobRecord> {
    const seen = new Set<string>();
    let cursor = '0';
    do {
      const [next, keys] = await this.#redis.scan(
        cursor,
        'MATCH',
        this.#keys.jobPattern,
        'COUNT',
        SCAN_COUNT,
      );
      cursor = next;
      // SCAN may return a key more than once.
      const fresh = keys.filter((key) => !seen.has(key));
      for (const key of fresh) seen.add(key);
      if (fresh.length === 0) continue;
      const pipeline = this.#redis.pipeline();
      for (const key of fresh) pipeline.hget(key, 'record');
      const replies = (await pipeline.exec()) ?? [];
      for (const [index, [error, json]] of replies.entries()) {
        if (error) throw error;
        if (typeof json !== 'string') continue;
        try {
          yield parseRecord(json);
        } catch (parseError) {
          if (!(parseError instanceof RecordError)) throw parseError;
          this.#onWarning(`Skipped the unreadable job record at ${fresh[index]}`, parseError);
        }
      }
    } while (cursor !== '0');
  }

  /** Lets pending writes land. The Redis client stays open: it is the caller's. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#writes.values()]);
  }

  /** Writes of one job happen one after another, in call order, as FileJobStore's do. */
  #serialized(id: string, write: () => Promise<void>): Promise<void> {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous.then(write);
    // The map holds a promise that never rejects, and forgets it once it is the last one.
    const settled = next.then(
      () => {},
      () => {},
    );
    this.#writes.set(id, settled);
    void settled.then(() => {
      if (this.#writes.get(id) === settled) this.#writes.delete(id);
    });
    return next;
  }
}

/** Sorts in the listing's order: `<createdAt>\0<id>`; NUL sorts before any other character. */
function listingMember(record: Pick<JobRecord, 'createdAt' | 'id'>): string {
  return `${record.createdAt}\0${record.id}`;
}

function memberId(member: string): string {
  return member.slice(member.lastIndexOf('\0') + 1);
}

class RecordError extends Error {}

function parseRecord(json: string, id?: string): JobRecord {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new RecordError(`The stored record of job ${id ?? '(unknown)'} is not JSON`, { cause: error });
  }
  if (typeof value !== 'object' || value === null || typeof (value as JobRecord).id !== 'string') {
    throw new RecordError(`The stored record of job ${id ?? '(unknown)'} is not a job record`);
  }
  return value as JobRecord;
}
