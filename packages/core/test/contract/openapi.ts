import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';

/** The OpenAPI document of the HTTP API, docs/openapi.yaml at the repository root. */
export const OPENAPI_PATH = fileURLToPath(new URL('../../../../docs/openapi.yaml', import.meta.url));

// ajv-formats is CommonJS with a `default` property; under NodeNext its default import is the module object.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv2020) => Ajv2020;

export function loadOpenApiDocument(): Record<string, unknown> {
  return parse(readFileSync(OPENAPI_PATH, 'utf8')) as Record<string, unknown>;
}

const SCHEMA_ID = 'https://spark-export.dev/openapi/schemas';

let validators: Map<string, ValidateFunction> | undefined;

function compile(): Map<string, ValidateFunction> {
  const document = loadOpenApiDocument() as { components?: { schemas?: Record<string, unknown> } };
  const schemas = document.components?.schemas ?? {};
  // Component refs (#/components/schemas/X) become $defs refs of one schema resource.
  const defs = JSON.parse(
    JSON.stringify(schemas).replaceAll('"#/components/schemas/', '"#/$defs/'),
  ) as Record<string, unknown>;
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  addFormats(ajv);
  ajv.addSchema({ $id: SCHEMA_ID, $defs: defs });
  const compiled = new Map<string, ValidateFunction>();
  for (const name of Object.keys(defs)) {
    const validate = ajv.getSchema(`${SCHEMA_ID}#/$defs/${name}`);
    if (!validate) throw new Error(`Could not compile the OpenAPI schema ${name}`);
    compiled.set(name, validate);
  }
  return compiled;
}

/** The names of docs/openapi.yaml's component schemas. */
export function schemaNames(): string[] {
  validators ??= compile();
  return [...validators.keys()];
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
  validators ??= compile();
  const validate = validators.get(schemaName);
  if (!validate) throw new Error(`docs/openapi.yaml has no component schema "${schemaName}"`);
  if (!validate(body)) {
    const errors = (validate.errors ?? [])
      .map(
        (error) => `${error.instancePath || '(root)'} ${error.message ?? ''} ${JSON.stringify(error.params)}`,
      )
      .join('\n  ');
    throw new Error(
      `Expected a ${schemaName} per docs/openapi.yaml:\n  ${errors}\nbody: ${JSON.stringify(body)}`,
    );
  }
}
