import { defineConfig } from 'tsup';
import { libraryBuild } from '../../tsup.library.js';
import pkg from './package.json' with { type: 'json' };

export default defineConfig({
  ...libraryBuild,
  // The root for users; `/http` for adapter authors; `/testing` for authors of adapters, stores,
  // storages and limiters (the contract suites).
  entry: { index: 'src/index.ts', http: 'src/http/index.ts', testing: 'src/testing/index.ts' },
  // The suites register with the user's own vitest: a bundled copy would register nowhere.
  external: ['vitest'],
  // prom-client is loaded through createRequire(import.meta.url ?? __filename): the CJS build
  // takes the __filename branch, so its empty import.meta is expected.
  esbuildOptions(options) {
    options.logOverride = { 'empty-import-meta': 'silent' };
  },
  define: { __SPARK_EXPORT_VERSION__: JSON.stringify(pkg.version) },
});
