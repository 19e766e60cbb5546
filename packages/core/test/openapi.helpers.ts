// The repository's OpenAPI document, compiled once, for tests outside the contract suite (which
// loads it itself from its `openapi` option).
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';
import { type AjvModules, createSchemaCheck } from '../src/testing/http-contract/openapi.js';

/** docs/openapi.yaml at the repository root: what the contract tests pass as `openapi`. */
export const OPENAPI_URL = new URL('../../../docs/openapi.yaml', import.meta.url);

// ajv-formats is CommonJS with a `default` property; under NodeNext its default import is the module object.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as AjvModules['addFormats'];

export function loadOpenApiDocument(): Record<string, unknown> {
  return parse(readFileSync(OPENAPI_URL, 'utf8')) as Record<string, unknown>;
}

let compiled: ReturnType<typeof createSchemaCheck> | undefined;
const schemas = () => {
  compiled ??= createSchemaCheck(loadOpenApiDocument(), { Ajv2020, addFormats });
  return compiled;
};

/** The names of docs/openapi.yaml's component schemas. */
export function schemaNames(): string[] {
  return schemas().names;
}

/**
 * Throws (with Ajv's errors) unless `body` matches the component schema `schemaName` of
 * docs/openapi.yaml.
 *
 * @example
 * ```ts
 * assertMatchesSchema('Job', await response.json());
 * ```
 */
export function assertMatchesSchema(schemaName: string, body: unknown): void {
  schemas().check(schemaName, body);
}
