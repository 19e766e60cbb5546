// @spark-export/core/http: the framework-neutral HTTP API and the plumbing adapter authors need
// to put it behind a framework (a request in, a response out), plus the pieces they reuse.
export { attachmentDisposition, sanitizeFilename } from './download.js';
export {
  createExportHandler,
  type ExportRoutesHandler,
  type ExportRoutesOptions,
  type JobResource,
} from './handler.js';
export {
  type FromNodeRequestOptions,
  fromNodeRequest,
  sendNodeResponse,
  splitUrl,
  type ToNodeHandlerOptions,
  toNodeHandler,
} from './node.js';
export {
  errorToProblem,
  PROBLEM_CONTENT_TYPE,
  type Problem,
  problemResponse,
  problemType,
} from './problem.js';
export { EXPORT_ROUTES, type RouteName } from './routes.js';
export type { ExportService } from './service.js';
// Signed download links: one API, the signer (the handler's `signDownloadUrl` uses it too).
export {
  createDownloadSigner,
  type DownloadSignatureCheck,
  type DownloadSigner,
  type DownloadSignerOptions,
} from './signing.js';
export type { ExportHttpHandler, ExportHttpRequest, ExportHttpResponse } from './types.js';
