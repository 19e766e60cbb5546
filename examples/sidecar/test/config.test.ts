import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type SidecarConfig, validateConfig } from '../src/config.js';
import { buildDatasets } from '../src/datasets.js';
import { demoConfig } from '../src/demo.js';
import { parseEnv } from '../src/env.js';
import { removeDir, SIDECAR_DIR, tempDir } from './helpers.js';

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

const SECRET = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
const NEW_SECRET = `whsec_${Buffer.alloc(32, 2).toString('base64')}`;

describe('environment', () => {
  it('has the documented defaults', () => {
    expect(parseEnv({}, '/srv/app')).toEqual({
      port: 4001,
      host: '127.0.0.1',
      configPath: undefined,
      exportDir: '/srv/app/exports',
      maxConcurrent: 5,
      maxQueued: 0,
      queueTimeoutMs: undefined,
      retentionHours: 24,
      maxTotalBytes: undefined,
      drainTimeoutMs: 30_000,
      apiToken: undefined,
      ownerHeader: undefined,
      signingSecret: undefined,
      eventStreamsPerOwner: 10,
      ui: true,
      databaseUrl: undefined,
      logLevel: 'info',
      processMetrics: true,
      accelRedirectPrefix: undefined,
      webhookUrl: undefined,
      webhookSecrets: undefined,
      webhookTimeoutMs: 10_000,
      webhookBackoffMs: 5_000,
      timeZone: 'UTC',
      redisUrl: undefined,
      jobQueue: 'local',
      s3Bucket: undefined,
      s3Endpoint: undefined,
      s3Region: undefined,
      s3ForcePathStyle: undefined,
      s3Prefix: undefined,
    });
  });

  it('reads every variable', () => {
    const settings = parseEnv(
      {
        PORT: '8080',
        HOST: '0.0.0.0',
        EXPORT_CONFIG: './conf.json',
        EXPORT_DIR: '/data/exports',
        EXPORT_MAX_CONCURRENT: '8',
        EXPORT_MAX_QUEUED: '20',
        EXPORT_QUEUE_TIMEOUT_MS: '15000',
        EXPORT_RETENTION_HOURS: '0.5',
        EXPORT_MAX_TOTAL_BYTES: '10000000000',
        EXPORT_DRAIN_TIMEOUT_MS: '0',
        EXPORT_API_TOKEN: 'a-very-long-secret-token',
        EXPORT_OWNER_HEADER: 'X-User-Id',
        EXPORT_SIGNING_SECRET: 'another-long-secret',
        DATABASE_URL: 'postgres://u@db/app',
        LOG_LEVEL: 'DEBUG',
        EXPORT_PROCESS_METRICS: 'false',
        EXPORT_ACCEL_REDIRECT_PREFIX: '/export-files/',
        EXPORT_WEBHOOK_URL: 'https://hooks.example.com/spark',
        EXPORT_WEBHOOK_SECRET: `${SECRET} ${NEW_SECRET}`,
        EXPORT_WEBHOOK_TIMEOUT_MS: '2000',
        EXPORT_WEBHOOK_BACKOFF_MS: '1000',
        EXPORT_TIME_ZONE: 'europe/berlin',
      },
      '/srv',
    );
    expect(settings).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      configPath: './conf.json',
      exportDir: '/data/exports',
      maxConcurrent: 8,
      maxQueued: 20,
      queueTimeoutMs: 15_000,
      retentionHours: 0.5,
      maxTotalBytes: 10_000_000_000,
      drainTimeoutMs: 0,
      ownerHeader: 'x-user-id',
      databaseUrl: 'postgres://u@db/app',
      logLevel: 'debug',
      processMetrics: false,
      accelRedirectPrefix: '/export-files/',
      webhookUrl: 'https://hooks.example.com/spark',
      webhookSecrets: [SECRET, NEW_SECRET],
      webhookTimeoutMs: 2_000,
      webhookBackoffMs: 1_000,
      timeZone: 'Europe/Berlin',
    });
  });

  it('takes a webhook URL only with its whsec_ secret, and never shows the secret', () => {
    expect(problemsOf(() => parseEnv({ EXPORT_WEBHOOK_URL: 'https://hooks.example.com/' }))).toEqual([
      'Expected EXPORT_WEBHOOK_URL and EXPORT_WEBHOOK_SECRET together, got only one of them',
    ]);
    expect(
      problemsOf(() =>
        parseEnv({ EXPORT_WEBHOOK_URL: 'file:///etc/passwd', EXPORT_WEBHOOK_SECRET: 'hunter2-hunter2' }),
      ),
    ).toEqual([
      'Expected EXPORT_WEBHOOK_URL to be an http:// or https:// URL, got "file:///etc/passwd" (string)',
      'Expected EXPORT_WEBHOOK_SECRET to be whsec_ secrets (base64 of at least 24 bytes) separated by spaces (the value is not shown)',
    ]);
  });

  it('takes an X-Accel-Redirect prefix only as a path that starts and ends with a slash', () => {
    for (const bad of ['export-files/', '/export-files', '/a/../b/', '/a b/', 'http://x/']) {
      expect(problemsOf(() => parseEnv({ EXPORT_ACCEL_REDIRECT_PREFIX: bad }))).toEqual([
        `Expected EXPORT_ACCEL_REDIRECT_PREFIX to be a URL path that starts and ends with "/", such as /export-files/, got ${JSON.stringify(bad)} (string)`,
      ]);
    }
    expect(parseEnv({ EXPORT_ACCEL_REDIRECT_PREFIX: '/internal/exports/' }).accelRedirectPrefix).toBe(
      '/internal/exports/',
    );
  });

  it('takes an IANA time zone for EXPORT_TIME_ZONE and names a bad one', () => {
    expect(problemsOf(() => parseEnv({ EXPORT_TIME_ZONE: 'CEST' }))).toEqual([
      'Expected EXPORT_TIME_ZONE to be an IANA time zone name such as Europe/Berlin, got "CEST" (string)',
    ]);
  });

  it('reports every bad value at once, naming the variable, the expectation and the value', () => {
    const problems = problemsOf(() =>
      parseEnv({
        PORT: 'http',
        EXPORT_MAX_CONCURRENT: '-5',
        EXPORT_MAX_QUEUED: '2.5',
        EXPORT_QUEUE_TIMEOUT_MS: '0',
        EXPORT_RETENTION_HOURS: '-1',
        EXPORT_MAX_TOTAL_BYTES: '10GB',
        EXPORT_DRAIN_TIMEOUT_MS: 'soon',
        LOG_LEVEL: 'verbose',
      }),
    );
    expect(problems).toEqual([
      'Expected LOG_LEVEL to be one of fatal, error, warn, info, debug, trace, silent, got "verbose" (string)',
      'Expected PORT to be an integer from 0 to 65535, got "http" (string)',
      'Expected EXPORT_MAX_CONCURRENT to be an integer >= 1, got "-5" (string)',
      'Expected EXPORT_MAX_QUEUED to be an integer >= 0, got "2.5" (string)',
      'Expected EXPORT_QUEUE_TIMEOUT_MS to be an integer >= 1, got "0" (string)',
      'Expected EXPORT_RETENTION_HOURS to be a number >= 0, got "-1" (string)',
      'Expected EXPORT_MAX_TOTAL_BYTES to be an integer >= 0, got "10GB" (string)',
      'Expected EXPORT_DRAIN_TIMEOUT_MS to be an integer >= 0, got "soon" (string)',
    ]);
  });

  it('checks secrets without echoing them', () => {
    const problems = problemsOf(() =>
      parseEnv({
        EXPORT_API_TOKEN: 'short',
        EXPORT_SIGNING_SECRET: 'tiny',
        DATABASE_URL: 'mysql://root:pw@db/x',
        EXPORT_OWNER_HEADER: 'X User',
      }),
    );
    expect(problems).toEqual([
      'Expected EXPORT_API_TOKEN to be at least 16 characters without spaces (the value is not shown)',
      'Expected EXPORT_OWNER_HEADER to be an HTTP header name such as X-User-Id, got "x user" (string)',
      'Expected EXPORT_SIGNING_SECRET to be at least 16 bytes (the value is not shown)',
      'Expected DATABASE_URL to be a postgres:// or postgresql:// connection string (the value is not shown)',
    ]);
    expect(problems.join('\n')).not.toContain('root:pw');
  });
});

describe('config file', () => {
  const valid: SidecarConfig = {
    datasets: {
      orders: {
        params: { from: { type: 'date', required: true }, status: { type: 'enum', values: ['paid'] } },
        source: {
          type: 'sqlite',
          database: './shop.sqlite',
          query: 'SELECT * FROM orders WHERE day >= :from',
        },
      },
    },
  };
  const invalid = (config: unknown) => problemsOf(() => validateConfig(config, 'test.json'));

  it('accepts a valid config', () => {
    expect(validateConfig(valid, 'test.json')).toBe(valid);
  });

  it.each<[string, unknown, string]>([
    [
      'no datasets',
      {},
      'Missing datasets; expected an object of dataset names to datasets, with at least one dataset',
    ],
    [
      'empty datasets',
      { datasets: {} },
      'Expected datasets to be an object of dataset names to datasets, with at least one dataset, got none',
    ],
    [
      'an unknown source type',
      { datasets: { a: { source: { type: 'mysql', query: 'x' } } } },
      'Expected datasets.a.source.type to be one of "sqlite", "postgres", "http-json", "file", got "mysql" (string)',
    ],
    [
      'a query that is not a string',
      { datasets: { a: { source: { type: 'sqlite', database: 'x.db', query: 42 } } } },
      'Expected datasets.a.source.query to be a non-empty SQL query, got 42 (number)',
    ],
    [
      'a missing query',
      { datasets: { a: { source: { type: 'postgres' } } } },
      'Missing datasets.a.source.query; expected a non-empty SQL query',
    ],
    [
      'a typo in a field name',
      { datasets: { a: { sourc: {}, source: { type: 'file', path: 'a.ndjson' } } } },
      'Unknown field datasets.a.sourc; expected only description, columns, params, formats, source',
    ],
    [
      'a bad param type',
      {
        datasets: {
          a: { params: { from: { type: 'datetime' } }, source: { type: 'file', path: 'a.ndjson' } },
        },
      },
      'Expected datasets.a.params.from.type to be one of "string", "integer", "number", "boolean", "date", "enum", got "datetime" (string)',
    ],
    [
      'an enum param without values',
      { datasets: { a: { params: { s: { type: 'enum' } }, source: { type: 'file', path: 'a.ndjson' } } } },
      'Missing datasets.a.params.s.values; expected a non-empty array of strings (the allowed values of an enum param)',
    ],
    [
      'a bad dataset name',
      { datasets: { 'my orders': { source: { type: 'file', path: 'a.ndjson' } } } },
      'Expected a dataset name: 1-64 letters, digits, "_", "-" or "." in datasets, got "my orders"',
    ],
    [
      'a bad url',
      { datasets: { a: { source: { type: 'http-json', url: 'ftp://host/x' } } } },
      'Expected datasets.a.source.url to be an http:// or https:// URL, got "ftp://host/x" (string)',
    ],
    [
      'a bad format list',
      { datasets: { a: { formats: ['csv', 'xml'], source: { type: 'file', path: 'a.ndjson' } } } },
      'Expected datasets.a.formats[1] to be one of "csv", "json", "ndjson", "xlsx", "parquet", got "xml" (string)',
    ],
    [
      'a negative timeout',
      { datasets: { a: { source: { type: 'http-json', url: 'http://x/', timeoutMs: -1 } } } },
      'Expected datasets.a.source.timeoutMs to be an integer >= 1 (milliseconds), got -1 (number)',
    ],
  ])('rejects %s with a message naming the field', (_, config, message) => {
    expect(invalid(config)).toContain(message);
  });

  describe('files', () => {
    let dir: string;
    beforeAll(() => {
      dir = tempDir();
    });
    afterAll(() => removeDir(dir));

    it('explains a missing EXPORT_CONFIG file and bad JSON', async () => {
      await expect(loadConfig({ path: 'nope.json', cwd: dir })).rejects.toThrow(
        `EXPORT_CONFIG names ${join(dir, 'nope.json')}, which does not exist`,
      );
      writeFileSync(join(dir, 'bad.json'), '{ "datasets": { ');
      await expect(loadConfig({ path: 'bad.json', cwd: dir })).rejects.toThrow(
        /Invalid configuration in .*bad\.json: Expected valid JSON/,
      );
    });

    it('falls back to the built-in demo without a config file', async () => {
      const loaded = await loadConfig({ cwd: dir });
      expect(loaded.file).toBeUndefined();
      expect(Object.keys(loaded.config.datasets)).toEqual(['orders', 'customers']);
      // Its database resolves against the sidecar's directory, not the working directory.
      expect(loaded.baseDir).toBe(SIDECAR_DIR);
    });

    it('builds the demo datasets without creating the database when asked not to seed', async () => {
      const home = join(dir, 'unseeded');
      mkdirSync(home);
      const built = buildDatasets(
        { config: demoConfig(), file: undefined, baseDir: home },
        { env: {}, poolSize: 1, seedDemo: false },
      );
      expect(Object.keys(built.datasets)).toEqual(['orders', 'customers']);
      expect(readdirSync(home)).toEqual([]);
      await built.close();
    });

    it('checks queries, params, roots and variables before starting', () => {
      const db = new Database(join(dir, 'shop.sqlite'));
      db.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, day TEXT)');
      db.close();
      const config: SidecarConfig = {
        datasets: {
          undeclared: {
            source: {
              type: 'sqlite',
              database: './shop.sqlite',
              query: 'SELECT * FROM orders WHERE day >= :from',
            },
          },
          writes: {
            source: { type: 'sqlite', database: './shop.sqlite', query: 'DELETE FROM orders RETURNING id' },
          },
          typo: { source: { type: 'sqlite', database: './shop.sqlite', query: 'SELECT * FROM order' } },
          missing: { source: { type: 'sqlite', database: './nowhere.sqlite', query: 'SELECT 1' } },
          pg: { source: { type: 'postgres', query: 'SELECT * FROM t WHERE a = :a' } },
          outside: { source: { type: 'file', path: '/etc/passwd', format: 'ndjson' } },
          upstream: {
            source: {
              type: 'http-json',
              url: 'http://127.0.0.1/x',
              // biome-ignore lint/suspicious/noTemplateCurlyInString: ${NAME} is the config's own placeholder syntax
              headers: { Authorization: 'Bearer ${NOT_SET}' },
            },
          },
        },
      };
      const problems = problemsOf(() =>
        buildDatasets({ config, file: join(dir, 'c.json'), baseDir: dir }, { env: {}, poolSize: 1 }),
      );
      expect(problems).toEqual([
        "datasets.undeclared.source.query uses the parameter :from, which the dataset's params do not declare",
        'datasets.writes.source.query must be read-only',
        'datasets.typo.source.query is not valid SQL for this database: near "order": syntax error',
        expect.stringMatching(
          /^datasets\.missing\.source\.database cannot be opened as a SQLite database \(.*nowhere\.sqlite\)/,
        ),
        'Missing datasets.pg.source.connectionString; expected a postgres:// connection string, or DATABASE_URL to be set',
        "datasets.pg.source.query uses the parameter :a, which the dataset's params do not declare",
        `Expected datasets.outside.source.path to lie inside fileRoots (${dir}), got "/etc/passwd" (string)`,
        // biome-ignore lint/suspicious/noTemplateCurlyInString: ${NAME} is the config's own placeholder syntax
        'datasets.upstream.source.headers.Authorization uses ${NOT_SET}, which is not set in the environment',
      ]);
    });
  });
});

describe('the shipped example config', () => {
  it('passes the schema', () => {
    const file = fileURLToPath(new URL('../spark-export.config.example.json', import.meta.url));
    expect(() => validateConfig(JSON.parse(readFileSync(file, 'utf8')), file)).not.toThrow();
  });
});
