// The public surface of @spark-export/core. Everything exported here is covered by semver;
// anything else is internal.

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
export {
  type CallerOptions,
  ExportManager,
  type ExportManagerEvents,
  type ExportManagerOptions,
  type ExportRequest,
  type ExportResult,
  type ExportSummary,
  type JobEventContext,
  type JobFileInfo,
  type ListOptions,
  type OpenedExport,
  type RejectionEvent,
  type RetentionOptions,
  type StreamOptions,
} from './export-manager.js';
export type { ExportTimeLimits } from './export-stream.js';
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
export {
  type Compression,
  isJobId,
  type Job,
  type JobErrorInfo,
  type JobFile,
  type JobStatus,
} from './jobs/job.js';
export {
  DURATION_BUCKETS,
  type ExportMetrics,
  type ExportMetricsOptions,
  type ExportOutcome,
  registerExportMetrics,
} from './metrics.js';
export { RetryAfterEstimator, type RetryAfterEstimatorOptions } from './retry-after.js';
export { type AcquireOptions, type Release, Semaphore, type SemaphoreOptions } from './semaphore.js';
export { fromJsonArray, fromNdjson, type JsonArrayOptions } from './sources.js';
