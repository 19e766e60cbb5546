// The public surface of @spark-export/core/testing: contract suites for the four seams, so that
// a second implementation (a Redis job store or limiter, an S3 storage) is held to the same
// contract as the built-in ones; the HTTP API's contract for adapters of a framework; and the
// small helpers the suites and adapter tests share. Requires vitest in the project that imports
// it; the HTTP contract also prom-client, and ajv, ajv-formats (and yaml) only with `openapi`.

// Helpers for deterministic tests.
export { type Deferred, deferred } from './deferred.js';
// Contract suites: call one at the top level of a test file with a factory for the implementation.
export {
  describeExportStorageContract,
  type ExportStorageContractOptions,
  type MakeExportStorage,
} from './export-storage-contract.js';
export {
  type ContractServer,
  describeHttpContract,
  type HttpContractOptions,
  listen,
  type OpenApiSource,
  type StartContractServer,
} from './http-contract/index.js';
export {
  describeJobQueueContract,
  type JobQueueContractOptions,
  type MakeJobQueue,
  type RecordedRun,
  RecordingRuntime,
} from './job-queue-contract.js';
export {
  describeJobStoreContract,
  type JobStoreContractOptions,
  type MakeJobStore,
} from './job-store-contract.js';
export {
  describeLimiterContract,
  type LimiterContractOptions,
  type MakeLimiter,
} from './limiter-contract.js';
