import type { Compression } from '../compression.js';
import type { Dataset } from '../dataset.js';
import type { BackpressureError } from '../errors.js';
import type { Job } from '../jobs/job.js';
import type { JobEventFeed } from '../jobs/job-events.js';
import type { ExportMetrics } from '../metrics.js';
import type { ExportRequest } from '../request.js';
import type { CallerOptions, JobFileInfo, ListOptions, OpenedExport, OpenOptions } from '../types.js';

/**
 * What the HTTP handler needs of the export engine. `ExportManager` implements it; anything
 * else that does (a facade over a remote engine, a test double) can stand behind the routes.
 */
export interface ExportService {
  readonly closing: boolean;
  readonly inFlight: number;
  readonly queued: number;
  readonly limit: number;
  readonly jobsEnabled: boolean;
  readonly metrics?: Pick<ExportMetrics, 'registry'> | undefined;
  readonly datasets: readonly Dataset[];
  /** Job changes, for `GET /jobs/:id/events`; without it that route answers 501. */
  readonly events?: JobEventFeed | undefined;
  open(request: ExportRequest, options?: OpenOptions): Promise<OpenedExport>;
  /** The refusal (429/503) a stream of this request gets at once, checked before anything else, or `undefined`. */
  refusal(request: ExportRequest): BackpressureError | undefined;
  /** `compression`: the request's, checked; the handler only offers wire coding when it is `'none'`. */
  describe(request: ExportRequest): { contentType: string; filename: string; compression?: Compression };
  start(request: ExportRequest): Promise<Job>;
  findByIdempotencyKey(key: string, options?: CallerOptions): Promise<Job | undefined>;
  get(id: string, options?: CallerOptions): Promise<Job>;
  list(options?: ListOptions): Promise<{ jobs: Job[]; nextCursor: string | null }>;
  cancel(id: string, options?: CallerOptions): Promise<Job>;
  delete(id: string, options?: CallerOptions): Promise<void>;
  file(id: string, options?: CallerOptions): Promise<JobFileInfo>;
  /** Without an `onError`, the handler reports unexpected 5xx as an `http:error` event, when anyone listens. */
  listenerCount(event: 'http:error'): number;
  emit(event: 'http:error', error: unknown, request: { method: string; path: string }): boolean;
}
