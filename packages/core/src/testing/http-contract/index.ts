export type { OpenApiSource } from './openapi.js';
export type { ContractServer, StartContractServer } from './server.js';
export { listen } from './server.js';
export { describeHttpContract, type HttpContractOptions } from './suite.js';
