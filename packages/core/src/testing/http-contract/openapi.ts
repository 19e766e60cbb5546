import { readFile } from 'node:fs/promises';
import type { Ajv2020 as Ajv2020Class } from 'ajv/dist/2020.js';

/** Throws (with the schema's errors) unless `body` matches the component schema `schemaName`. */
export type SchemaCheck = (schemaName: string, body: unknown) => void;

/** An OpenAPI document: parsed, or the path of a YAML or JSON file. */
export type OpenApiSource = string | URL | Readonly<Record<string, unknown>>;

/** What {@link createSchemaCheck} needs of Ajv: its draft 2020-12 class and ajv-formats. */
export interface AjvModules {
  Ajv2020: typeof Ajv2020Class;
  addFormats: (ajv: Ajv2020Class) => unknown;
}

const SCHEMA_ID = 'https://spark-export.dev/openapi/schemas';

/**
 * Compiles the component schemas of an OpenAPI 3.1 document (draft 2020-12) into one check.
 * Takes Ajv as an argument: the published suite loads it only when asked to check bodies.
 */
export function createSchemaCheck(
  document: Readonly<Record<string, unknown>>,
  { Ajv2020, addFormats }: AjvModules,
): { check: SchemaCheck; names: string[] } {
  const schemas = (document as { components?: { schemas?: Record<string, unknown> } }).components?.schemas;
  // Component refs (#/components/schemas/X) become $defs refs of one schema resource.
  const defs = JSON.parse(
    JSON.stringify(schemas ?? {}).replaceAll('"#/components/schemas/', '"#/$defs/'),
  ) as Record<string, unknown>;
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  addFormats(ajv);
  ajv.addSchema({ $id: SCHEMA_ID, $defs: defs });
  const names = Object.keys(defs);
  const validators = new Map(
    names.map((name) => {
      const validate = ajv.getSchema(`${SCHEMA_ID}#/$defs/${name}`);
      if (!validate) throw new Error(`Could not compile the OpenAPI schema ${name}`);
      return [name, validate] as const;
    }),
  );
  const check: SchemaCheck = (schemaName, body) => {
    const validate = validators.get(schemaName);
    if (!validate) throw new Error(`The OpenAPI document has no component schema "${schemaName}"`);
    if (validate(body)) return;
    const errors = (validate.errors ?? [])
      .map(
        (error) => `${error.instancePath || '(root)'} ${error.message ?? ''} ${JSON.stringify(error.params)}`,
      )
      .join('\n  ');
    throw new Error(
      `Expected a ${schemaName} per the OpenAPI document:\n  ${errors}\nbody: ${JSON.stringify(body)}`,
    );
  };
  return { check, names };
}

/**
 * The check of {@link createSchemaCheck} for a document or a file, loading `ajv`, `ajv-formats`
 * (and `yaml` for a YAML file) on demand: they are needed only by suites that check bodies.
 */
export async function loadSchemaCheck(source: OpenApiSource): Promise<SchemaCheck> {
  const document =
    typeof source === 'string' || source instanceof URL ? await readOpenApiFile(source) : source;
  const { Ajv2020 } = await importOptional<{ Ajv2020: typeof Ajv2020Class }>('ajv/dist/2020.js', 'ajv');
  const formats = await importOptional<{ default: unknown }>('ajv-formats', 'ajv-formats');
  // ajv-formats is CommonJS with a `default` property: imported, its plugin may sit one level deeper.
  const plugin = formats.default as { default?: unknown };
  const addFormats = (plugin.default ?? plugin) as AjvModules['addFormats'];
  return createSchemaCheck(document, { Ajv2020, addFormats }).check;
}

async function readOpenApiFile(path: string | URL): Promise<Record<string, unknown>> {
  const text = await readFile(path, 'utf8');
  if (String(path).toLowerCase().endsWith('.json')) return JSON.parse(text) as Record<string, unknown>;
  const { parse } = await importOptional<{ parse(text: string): unknown }>('yaml', 'yaml');
  return parse(text) as Record<string, unknown>;
}

/** Imports a package the published testing bundle must neither bundle nor require up front. */
async function importOptional<T>(specifier: string, name: string): Promise<T> {
  try {
    // A specifier in a variable: the bundler leaves the import alone, so the package stays optional.
    return (await import(specifier)) as T;
  } catch (error) {
    throw new Error(
      `The openapi option of describeHttpContract needs the ${name} package: install it as a dev dependency`,
      { cause: error },
    );
  }
}
