// The public surface of @spark-export/bullmq: the Redis implementations of core's seams.
// Everything exported here is covered by semver; anything else is internal.

// Jobs as BullMQ jobs: any replica runs any job, recovery of dead workers, cross-process cancel.
export { BullJobEventFeed, type BullJobEventFeedOptions } from './bull-job-event-feed.js';
export { BullJobQueue, type BullJobQueueOptions } from './bull-job-queue.js';
// A cluster-wide export limit with leases that expire when a replica dies.
export { LeaseLostError } from './errors.js';
export { DEFAULT_PREFIX } from './keys.js';
// Job records that any replica can answer for.
export { type JobRecord, RedisJobStore, type RedisJobStoreOptions } from './redis-job-store.js';
export { RedisLimiter, type RedisLimiterOptions, type RedisRelease } from './redis-limiter.js';
