/**
 * The JSON Schema of `spark-export.config.json`. Each `description` doubles as the "expected"
 * half of a validation message (`Expected datasets.orders.source.query to be a non-empty SQL
 * query, got 42 (number)`), so write them as noun phrases.
 */

const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
const PARAM_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,63}$';

const nonEmptyString = (description = 'a non-empty string') => ({
  type: 'string',
  minLength: 1,
  description,
});

const batchSize = {
  type: 'integer',
  minimum: 1,
  maximum: 100_000,
  description: 'an integer from 1 to 100000 (rows per batch)',
};

const sqliteSource = {
  type: 'object',
  required: ['type', 'database', 'query'],
  additionalProperties: false,
  properties: {
    type: { const: 'sqlite' },
    database: nonEmptyString('the path of a SQLite database file'),
    query: nonEmptyString('a non-empty SQL query'),
    countQuery: nonEmptyString('a non-empty SQL query returning one number'),
    batchSize,
  },
};

const postgresSource = {
  type: 'object',
  required: ['type', 'query'],
  additionalProperties: false,
  properties: {
    type: { const: 'postgres' },
    connectionString: {
      type: 'string',
      pattern: '^postgres(ql)?://',
      description: 'a postgres:// or postgresql:// connection string',
    },
    query: nonEmptyString('a non-empty SQL query'),
    countQuery: nonEmptyString('a non-empty SQL query returning one number'),
    batchSize,
  },
};

const httpJsonSource = {
  type: 'object',
  required: ['type', 'url'],
  additionalProperties: false,
  properties: {
    type: { const: 'http-json' },
    url: { type: 'string', pattern: '^https?://[^\\s]+$', description: 'an http:// or https:// URL' },
    method: { enum: ['GET', 'POST'] },
    headers: {
      type: 'object',
      additionalProperties: {
        type: 'string',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: ${NAME} is the config's own placeholder syntax
        description: 'a string (${ENV_NAME} is replaced from the environment)',
      },
      description: 'an object of header names to string values',
    },
    timeoutMs: { type: 'integer', minimum: 1, description: 'an integer >= 1 (milliseconds)' },
    format: { enum: ['json', 'ndjson'] },
    path: {
      type: 'string',
      pattern: '^[^.]+(\\.[^.]+)*$',
      description: 'a dot-separated path such as "data.items"',
    },
    paramsIn: { enum: ['query', 'body', 'none'] },
    batchSize,
  },
};

const fileSource = {
  type: 'object',
  required: ['type', 'path'],
  additionalProperties: false,
  properties: {
    type: { const: 'file' },
    path: nonEmptyString('a file path (may contain {param} placeholders)'),
    format: { enum: ['json', 'ndjson'] },
    jsonPath: {
      type: 'string',
      pattern: '^[^.]+(\\.[^.]+)*$',
      description: 'a dot-separated path such as "data.items"',
    },
    batchSize,
  },
};

const paramValues = {
  type: 'array',
  minItems: 1,
  items: { type: 'string', description: 'a string' },
  description: 'a non-empty array of strings (the allowed values of an enum param)',
};

const paramSpec = {
  type: 'object',
  required: ['type'],
  additionalProperties: false,
  properties: {
    type: { enum: ['string', 'integer', 'number', 'boolean', 'date', 'enum'] },
    required: { type: 'boolean', description: 'true or false' },
    default: { type: ['string', 'number', 'boolean'], description: 'a string, number or boolean' },
    values: paramValues,
    min: { type: 'number', description: 'a number' },
    max: { type: 'number', description: 'a number' },
    maxLength: { type: 'integer', minimum: 1, description: 'an integer >= 1' },
    description: { type: 'string', description: 'a string' },
  },
  if: { properties: { type: { const: 'enum' } } },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, never awaited
  then: { required: ['values'], properties: { values: paramValues } },
};

const column = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: nonEmptyString(),
    label: { type: 'string', description: 'a string' },
    type: { enum: ['string', 'number', 'integer', 'boolean', 'date', 'json'] },
    description: { type: 'string', description: 'a string' },
  },
  description: 'a column: an object with a "name"',
};

const dataset = {
  type: 'object',
  required: ['source'],
  additionalProperties: false,
  properties: {
    description: { type: 'string', description: 'a string' },
    columns: { type: 'array', minItems: 1, items: column, description: 'a non-empty array of columns' },
    params: {
      type: 'object',
      propertyNames: {
        pattern: PARAM_PATTERN,
        description: 'a param name: a letter or "_", then letters, digits or "_"',
      },
      additionalProperties: paramSpec,
      description: 'an object of param names to param specs',
    },
    formats: {
      type: 'array',
      minItems: 1,
      uniqueItems: true,
      items: { enum: ['csv', 'json', 'ndjson', 'xlsx', 'parquet'] },
      description:
        'a non-empty array of distinct formats ("csv", "json", "ndjson", "xlsx", "parquet"; parquet needs a type on every column)',
    },
    source: {
      type: 'object',
      discriminator: { propertyName: 'type' },
      required: ['type'],
      properties: { type: { enum: ['sqlite', 'postgres', 'http-json', 'file'] } },
      oneOf: [sqliteSource, postgresSource, httpJsonSource, fileSource],
      description: 'a source object with a "type"',
    },
  },
  description: 'a dataset object with a "source"',
};

const redisSection = {
  type: 'object',
  additionalProperties: false,
  properties: {
    url: {
      type: 'string',
      pattern: '^rediss?://[^\\s]+$',
      description: 'a redis:// or rediss:// URL (EXPORT_REDIS_URL overrides it)',
    },
    prefix: {
      type: 'string',
      pattern: '^[^\\s]{1,64}$',
      description: 'a key prefix of 1-64 characters without spaces, such as "spark-export:"',
    },
  },
  description: 'an object with the "url" of the Redis the replicas share',
};

const s3Section = {
  type: 'object',
  additionalProperties: false,
  properties: {
    bucket: {
      type: 'string',
      pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$',
      description: 'a bucket name (3-63 lowercase letters, digits, "." or "-")',
    },
    endpoint: {
      type: 'string',
      pattern: '^https?://[^\\s]+$',
      description: 'an http:// or https:// URL of an S3-compatible store',
    },
    region: {
      type: 'string',
      pattern: '^[a-z0-9][a-z0-9-]{0,62}$',
      description: 'a region name such as eu-west-1',
    },
    forcePathStyle: { type: 'boolean', description: 'true or false' },
    prefix: {
      type: 'string',
      pattern: "^(?:[A-Za-z0-9!_.*'()-]+/)*$",
      description: 'a key prefix ending in "/", such as "exports/"',
    },
  },
  description: 'an object with the "bucket" of the job files',
};

export const SOURCE_TYPES = ['sqlite', 'postgres', 'http-json', 'file'] as const;

export const configSchema = {
  $id: 'https://spark-export.dev/schemas/sidecar-config.json',
  title: 'spark-export sidecar configuration',
  type: 'object',
  required: ['datasets'],
  additionalProperties: false,
  properties: {
    $schema: { type: 'string', description: 'a string' },
    datasets: {
      type: 'object',
      minProperties: 1,
      propertyNames: {
        pattern: NAME_PATTERN,
        description: 'a dataset name: 1-64 letters, digits, "_", "-" or "."',
      },
      additionalProperties: dataset,
      description: 'an object of dataset names to datasets, with at least one dataset',
    },
    fileRoots: {
      type: 'array',
      items: nonEmptyString('a directory path'),
      description: 'an array of directory paths',
    },
    demo: {
      type: 'object',
      required: ['database'],
      additionalProperties: false,
      properties: {
        database: nonEmptyString('the path of the demo SQLite database file'),
        orders: {
          type: 'integer',
          minimum: 0,
          maximum: 100_000_000,
          description: 'an integer from 0 to 100000000',
        },
        customers: {
          type: 'integer',
          minimum: 1,
          maximum: 10_000_000,
          description: 'an integer from 1 to 10000000',
        },
      },
      description: 'an object with the "database" path to seed',
    },
    redis: redisSection,
    s3: s3Section,
  },
  description: 'a configuration object with "datasets"',
} as const;
