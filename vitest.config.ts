import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import corePackage from './packages/core/package.json' with { type: 'json' };

const src = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// Tests run against the TypeScript sources; `npm test` separately builds, lints the package
// exports (publint, attw) and type-checks, so dist/ is checked without slowing every test run.
export default defineConfig({
  define: { __SPARK_EXPORT_VERSION__: JSON.stringify(corePackage.version) },
  resolve: {
    alias: [
      { find: /^@spark-export\/core\/testing$/, replacement: src('./packages/core/src/testing/index.ts') },
      { find: /^@spark-export\/core\/http$/, replacement: src('./packages/core/src/http/index.ts') },
      { find: /^@spark-export\/core\/http$/, replacement: src('./packages/core/src/http/index.ts') },
      { find: /^@spark-export\/core$/, replacement: src('./packages/core/src/index.ts') },
      { find: /^@spark-export\/express$/, replacement: src('./packages/express-adapter/src/index.ts') },
      { find: /^@spark-export\/koa$/, replacement: src('./packages/koa-adapter/src/index.ts') },
      { find: /^@spark-export\/fastify$/, replacement: src('./packages/fastify-plugin/src/index.ts') },
      { find: /^@spark-export\/bullmq$/, replacement: src('./packages/bullmq/src/index.ts') },
      { find: /^@spark-export\/s3$/, replacement: src('./packages/s3/src/index.ts') },
    ],
  },
  test: {
    include: [
      'test/**/*.test.ts',
      'packages/*/test/**/*.test.ts',
      'examples/*/test/**/*.test.ts',
      'bench/**/*.test.ts',
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
