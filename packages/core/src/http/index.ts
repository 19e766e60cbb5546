export { attachmentDisposition, sanitizeFilename } from './download.js';
export {
  createExportHandler,
  EXPORT_ROUTES,
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
export type { ExportService } from './service.js';
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
