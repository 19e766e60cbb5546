// The public surface of @spark-export/core. Everything exported here is covered by semver;
// anything else is internal.

// Seams: where jobs, files and slots live. The built-in implementations, and the interfaces
// a shared backend (Redis, S3) implements; their contract suites are in `@spark-export/core/testing`.
export type { Limiter, Release } from './admission/limiter.js';
export { RetryAfterEstimator, type RetryAfterEstimatorOptions } from './admission/retry-after.js';
export { type AcquireOptions, Semaphore, type SemaphoreOptions } from './admission/semaphore.js';
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
  validateParams,
} from './dataset.js';
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
export { ExportManager, type ExportManagerOptions } from './export-manager.js';
export { csvFormat, getFormat, jsonFormat, ndjsonFormat } from './formats/index.js';
export type {
  ColumnSpec,
  ColumnType,
  CsvOptions,
  EncoderOptions,
  Format,
  FormatName,
  RowEncoder,
} from './formats/types.js';
export {
  createDownloadSigner,
  createExportHandler,
  type DownloadSigner,
  type DownloadSignerOptions,
  EXPORT_ROUTES,
  type ExportHttpHandler,
  type ExportHttpRequest,
  type ExportHttpResponse,
  type ExportRoutesHandler,
  type ExportRoutesOptions,
  errorToProblem,
  type FromNodeRequestOptions,
  fromNodeRequest,
  type JobResource,
  PROBLEM_CONTENT_TYPE,
  type Problem,
  sendNodeResponse,
  signDownloadPath,
  type ToNodeHandlerOptions,
  toNodeHandler,
  verifyDownloadSignature,
} from './http/index.js';
export type { ExportStorage, StorageWrite } from './jobs/export-storage.js';
export { FileJobStore, type FileJobStoreOptions } from './jobs/file-job-store.js';
export {
  type Compression,
  isJobId,
  type Job,
  type JobErrorInfo,
  type JobFile,
  type JobStatus,
} from './jobs/job.js';
export type { JobQuery, JobStore } from './jobs/job-store.js';
export { LocalExportStorage } from './jobs/local-storage.js';
export type { RetentionOptions } from './jobs/retention.js';
export {
  DURATION_BUCKETS,
  type ExportMetrics,
  type ExportMetricsOptions,
  type ExportOutcome,
  registerExportMetrics,
} from './metrics.js';
export type { ExportTimeLimits } from './pipeline/time-limits.js';
export type { ExportRequest } from './request.js';
export { fromJsonArray, fromNdjson, type JsonArrayOptions } from './sources.js';
export type {
  CallerOptions,
  ExportManagerEvents,
  ExportResult,
  ExportSummary,
  JobEventContext,
  JobFileInfo,
  ListOptions,
  OpenedExport,
  RejectionEvent,
  StreamOptions,
} from './types.js';
