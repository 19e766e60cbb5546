// The public surface of @spark-export/core: what users of the library need. Everything exported
// here is covered by semver; anything else is internal. Plumbing for adapter authors is on
// `@spark-export/core/http`, the contract suites on `@spark-export/core/testing`.
// (Groups are in the order Biome keeps exports: by module path.)

// Admission: the local limiter, and the seam a shared one implements.
export type { Limiter, Release } from './admission/limiter.js';
export type { RetryAfterEstimatorOptions } from './admission/retry-after.js';
export { type AcquireOptions, Semaphore, type SemaphoreOptions } from './admission/semaphore.js';
// Helpers for integrations (a sidecar, a store): one wording for option and input checks.
export { checkInteger, describeValue } from './checks.js';
// Compression of files and of streamed responses.
export type { CompressionType } from './compression.js';
// Datasets and their params.
export {
  type Dataset,
  type DatasetDefinition,
  defineDataset,
  type InferParams,
  type NoParams,
  type ParamSpec,
  type ParamSpecs,
  type Params,
  type ParamType,
  type ParamValue,
  type Row,
  type RowSource,
  type SourceContext,
} from './dataset.js';
// Deprecated root exports, kept for compatibility (see each one's TSDoc).
export {
  createExportHandler,
  DURATION_BUCKETS,
  EXPORT_ROUTES,
  errorToProblem,
  fromNodeRequest,
  PROBLEM_CONTENT_TYPE,
  RetryAfterEstimator,
  sendNodeResponse,
  signDownloadPath,
  toNodeHandler,
  validateParams,
  verifyDownloadSignature,
} from './deprecated.js';
// Errors: one base class with stable codes and HTTP statuses.
export {
  BackpressureError,
  type BackpressureErrorOptions,
  type BackpressureReason,
  CancelledError,
  ExportError,
  type ExportErrorCode,
  type ExportErrorOptions,
  isBackpressureError,
  isExportError,
  JobStateError,
  NotFoundError,
  SourceError,
  type TimeLimitCode,
  TimeLimitError,
  ValidationError,
  WriteError,
} from './errors.js';
// The manager.
export { ExportManager, type ExportManagerOptions } from './export-manager.js';
// Formats, and how they write dates.
export {
  createDateRenderer,
  type DateFormat,
  type DateRenderer,
  type DateRendererOptions,
  type DateValue,
  timeZoneOffsetMinutes,
} from './formats/dates.js';
export {
  csvFormat,
  getFormat,
  jsonFormat,
  ndjsonFormat,
  parquetFormat,
  xlsxFormat,
} from './formats/index.js';
export type {
  AnyRowEncoder,
  ByteRowEncoder,
  ColumnSpec,
  ColumnType,
  CsvOptions,
  EncoderOptions,
  Format,
  FormatName,
  ParquetOptions,
  RowEncoder,
  XlsxOptions,
} from './formats/types.js';
// Types of the HTTP API (the handler itself is on `@spark-export/core/http`).
export {
  createDownloadSigner,
  type DownloadSigner,
  type DownloadSignerOptions,
  type ExportHttpHandler,
  type ExportHttpRequest,
  type ExportHttpResponse,
  type ExportRoutesHandler,
  type ExportRoutesOptions,
  type FromNodeRequestOptions,
  type JobResource,
  type Problem,
  type ToNodeHandlerOptions,
} from './http/index.js';
// Jobs, and the seams where their records and files live.
export type { ExportStorage, StorageWrite } from './jobs/export-storage.js';
export { FileJobStore, type FileJobStoreOptions } from './jobs/file-job-store.js';
export {
  type Compression,
  isJobId,
  type Job,
  type JobErrorInfo,
  type JobFile,
  type JobRecord,
  type JobStatus,
} from './jobs/job.js';
export type { JobChange, JobChangeType, JobEventFeed } from './jobs/job-events.js';
export type { JobQueue, JobQueueRuntime, JobRunOutcome } from './jobs/job-queue.js';
export { type JobQuery, type JobStore, matchesQuery, newestFirst } from './jobs/job-store.js';
export { LocalExportStorage } from './jobs/local-storage.js';
export type { RetentionOptions } from './jobs/retention.js';
// Metrics.
export {
  type ExportMetrics,
  type ExportMetricsOptions,
  type ExportOutcome,
  registerExportMetrics,
} from './metrics.js';
// Webhooks: the notifier's options, and the seams where delivery state and scheduling live.
export {
  LocalWebhookDeliveryQueue,
  type LocalWebhookDeliveryQueueOptions,
  type RunAttempt,
  type Timers,
  type WebhookDeliveryQueue,
} from './notifications/delivery-queue.js';
export {
  FileWebhookDeliveryStore,
  type WebhookDelivery,
  type WebhookDeliveryStatus,
  type WebhookDeliveryStore,
} from './notifications/delivery-store.js';
export type { WebhookDeliveryView, WebhookPayload } from './notifications/webhook-notifier.js';
export {
  DEFAULT_WEBHOOK_EVENTS,
  WEBHOOK_EVENT_TYPES,
  type WebhookEndpoint,
  type WebhookEventType,
  type WebhookJobContext,
  type WebhookLinkOptions,
  type WebhookOptions,
} from './notifications/webhook-options.js';
export type { ExportTimeLimits } from './pipeline/time-limits.js';
export type { ExportRequest } from './request.js';
// Sources: incremental parsers and cursors as row sources.
export {
  type BatchSourceOptions,
  fromBatches,
  fromJsonArray,
  fromNdjson,
  type JsonArrayOptions,
} from './sources.js';
export type {
  CallerOptions,
  ExportManagerEvents,
  ExportResult,
  ExportSummary,
  JobEventContext,
  JobFileInfo,
  ListOptions,
  OpenedExport,
  OpenOptions,
  RejectionEvent,
  StreamOptions,
} from './types.js';
