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
export {
  computeDownloadSignature,
  createDownloadSigner,
  type DownloadSignatureCheck,
  type DownloadSignatureInput,
  type DownloadSigner,
  type DownloadSignerOptions,
  signDownloadPath,
  verifyDownloadSignature,
} from './signing.js';
export type { ExportHttpHandler, ExportHttpRequest, ExportHttpResponse } from './types.js';
