import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A Lua script, run by its SHA1 (EVALSHA) and sent whole only when Redis does not know it yet. */
export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

export async function runScript(
  redis: Redis,
  { source, sha }: Script,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  try {
    return await redis.evalsha(sha, keys.length, ...keys, ...args);
  } catch (error) {
    // After a restart or SCRIPT FLUSH the cache is empty; EVAL loads it again.
    if (!String(error).includes('NOSCRIPT')) throw error;
    return redis.eval(source, keys.length, ...keys, ...args);
  }
}

/*
 * A job is a hash: `record` (its JSON), and what removing it must undo, written once at create:
 * `index` (the owner's sorted set), `member` (its entry there) and `idempotency` (its key's
 * name, or ''). So no script has to parse JSON or build key names but for the one below.
 */

/**
 * KEYS: job hash, owner's sorted set, [idempotency key]. ARGV: record JSON, sorted-set member,
 * job id, `<prefix>job:` (for the job an idempotency key already names).
 * Returns {1} when created, {0, existing record JSON} when the key was taken.
 */
export const CREATE = script(`
if #KEYS == 3 then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    local record = redis.call('HGET', ARGV[4] .. existing, 'record')
    if record then return {0, record} end
  end
  redis.call('SET', KEYS[3], ARGV[3])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR a job with this id already exists')
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'index', KEYS[2], 'member', ARGV[2], 'idempotency', KEYS[3] or '')
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return {1}
`);

/** KEYS: job hash. ARGV: record JSON. Writes only over a job that still exists; returns 1 if written. */
export const SAVE = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[1])
return 1
`);

/** KEYS: job hash. ARGV: job id. Removes the job, its listing entry and its idempotency key. */
export const REMOVE = script(`
local fields = redis.call('HMGET', KEYS[1], 'index', 'member', 'idempotency')
if not fields[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', fields[1], fields[2])
if fields[3] and fields[3] ~= '' and redis.call('GET', fields[3]) == ARGV[1] then
  redis.call('DEL', fields[3])
end
return 1
`);

/** KEYS: idempotency key. ARGV: `<prefix>job:`. The record JSON of the job the key names, or nil. */
export const FIND_BY_KEY = script(`
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGET', ARGV[1] .. id, 'record')
`);
