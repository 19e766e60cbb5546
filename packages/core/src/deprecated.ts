// Root exports kept for compatibility. Each moved to the subpath named in its TSDoc, or became
// internal; they go in the next major version.
import { RetryAfterEstimator as RetryAfterEstimatorClass } from './admission/retry-after.js';
import { validateParams as validateParamsFunction } from './dataset.js';
import * as http from './http/index.js';
import * as signing from './http/signing.js';
import { DURATION_BUCKETS as durationBuckets } from './metrics.js';

/** @deprecated Import it from `@spark-export/core/http`. */
export const createExportHandler = http.createExportHandler;
/** @deprecated Import it from `@spark-export/core/http`. */
export const toNodeHandler = http.toNodeHandler;
/** @deprecated Import it from `@spark-export/core/http`. */
export const fromNodeRequest = http.fromNodeRequest;
/** @deprecated Import it from `@spark-export/core/http`. */
export const sendNodeResponse = http.sendNodeResponse;
/** @deprecated Import it from `@spark-export/core/http`. */
export const EXPORT_ROUTES = http.EXPORT_ROUTES;
/** @deprecated Import it from `@spark-export/core/http`. */
export const errorToProblem = http.errorToProblem;
/** @deprecated Import it from `@spark-export/core/http`. */
export const PROBLEM_CONTENT_TYPE = http.PROBLEM_CONTENT_TYPE;
/** @deprecated Use `createDownloadSigner(options).sign()` (or the handler's `signDownloadUrl`). */
export const signDownloadPath = signing.signDownloadPath;
/** @deprecated Use `createDownloadSigner(options).verify()`. */
export const verifyDownloadSignature = signing.verifyDownloadSignature;
/** @deprecated Internal: the manager estimates Retry-After itself. */
export const RetryAfterEstimator = RetryAfterEstimatorClass;
/** @deprecated Internal: the manager validates params; `defineDataset` checks their specs. */
export const validateParams = validateParamsFunction;
/** @deprecated Internal: the buckets of `export_job_duration_seconds`. */
export const DURATION_BUCKETS = durationBuckets;
